"""``car-desktop export``, ``import``, ``failures`` and ``relink``: COCO (and label PNG) exchange for a
project file, the list of files a project could not read or label, and pointing a project at its
images' new place.

Thin wrappers over car_desktop.annotations: parse options, run with the shared progress bar on
stderr, print the report's counts and notes, return an exit code (0 done, 1 done with per-entry
import problems). User errors raise CaRDesktopError subclasses, which cli.main prints as one line
(exit code 2). Export opens the project read-only when it cannot be written (an immutable file).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..annotations import Project, export_coco, export_label_pngs, import_coco
from ..annotations.coco_export import FORMATS, MODES
from ..annotations.polygons import CONVENTIONS, PIXEL_EDGES
from .progress import ProgressBar

log = logging.getLogger(__name__)

#: Problems listed after an import; the count of the rest is printed.
SHOWN_PROBLEMS = 50


def register(subparsers: argparse._SubParsersAction) -> None:
    exp = subparsers.add_parser(
        "export", help="export a project to COCO JSON and/or semantic label PNGs",
        epilog="Outputs never replace the project, its -wal/-shm files or an input image, and are refused inside "
               "the image folder unless --force is given. Images whose auto-labelling failed are left out "
               "(--include-failed keeps them), and so are categories with no annotation "
               "(--keep-empty-categories keeps them; ids never change).")
    exp.add_argument("project", type=Path, help="project file (.cardb)")
    exp.add_argument("--coco", type=Path, metavar="OUT.json", help="write COCO JSON here")
    exp.add_argument("--format", choices=FORMATS, default="auto",
                     help="segmentation encoding: polygons, RLE, or auto (polygon unless holes/many parts)")
    exp.add_argument("--mode", choices=MODES, default="instance",
                     help="instance: one annotation per stored mask; components: one per connected part; "
                          "semantic: one per concept per image")
    exp.add_argument("--polygon-convention", choices=CONVENTIONS, default=PIXEL_EDGES,
                     help="pixel-edges (default): exact for pycocotools and COCO evaluation; pixel-centres: "
                          "exact for OpenCV-based readers such as supervision")
    exp.add_argument("--no-score", action="store_true", help="leave the score field out")
    exp.add_argument("--refuse-holes", action="store_true",
                     help="with --format polygon, fail instead of filling holes")
    exp.add_argument("--keep-empty-categories", action="store_true",
                     help="also list categories that have no annotation in this export")
    exp.add_argument("--include-failed", action="store_true",
                     help="also export images whose auto-labelling failed (as images with no annotation)")
    exp.add_argument("--label-pngs", type=Path, metavar="DIR", help="also write palette label PNGs here")
    exp.add_argument("--force", action="store_true", help="allow outputs inside the image folder")
    exp.set_defaults(handler=_export)

    imp = subparsers.add_parser(
        "import", help="import COCO JSON into a project (created if missing)",
        epilog="Every file_name must stay inside --images; entries that cannot be imported are listed with the "
               "reason and the rest is imported. Annotations already in the project are skipped, so importing "
               "the same file again adds nothing.")
    imp.add_argument("project", type=Path, help="project file; created with --images as image folder if new")
    imp.add_argument("coco", type=Path, metavar="COCO.json")
    imp.add_argument("--images", type=Path, required=True, metavar="DIR",
                     help="folder the COCO file_name entries are relative to")
    imp.set_defaults(handler=_import)

    fail = subparsers.add_parser("failures", help="list the files a project could not read or auto-label")
    fail.add_argument("project", type=Path)
    fail.add_argument("--stage", choices=("add", "label"), help="only files that failed at this stage")
    fail.set_defaults(handler=_failures)

    rel = subparsers.add_parser(
        "relink", help="point a project at its images' new place (a folder, s3://... or gs://...)",
        description="After the images moved: check that the project's images are under NEW_ROOT (by relative "
                    "path; in a local folder also by content, so renamed files are found) and make it the "
                    "project's image folder. Exit codes: 0 every image found; 1 relinked, some images missing "
                    "(listed); 2 nothing changed (none found, or a bad path).")
    rel.add_argument("project", type=Path)
    rel.add_argument("root", metavar="NEW_ROOT", help="the new image folder, or s3://BUCKET/PREFIX, gs://BUCKET/PREFIX")
    rel.set_defaults(handler=_relink)


def _open_for_reading(path: Path) -> Project:
    """Read-write when the file can be written (upgrades an old format), else read-only."""
    writable = os.access(path, os.W_OK) and os.access(path.parent if str(path.parent) else ".", os.W_OK)
    return Project.open(path, readonly=path.is_file() and not writable)


def _export(args: argparse.Namespace) -> int:
    if args.coco is None and args.label_pngs is None:
        print("error: nothing to do; give --coco OUT.json and/or --label-pngs DIR", file=sys.stderr)
        return 2
    with _open_for_reading(args.project) as project, ProgressBar(unit="annotations") as bar:
        if args.coco is not None:
            bar.stage("exporting COCO")
            rep = export_coco(project, args.coco, fmt=args.format, mode=args.mode,
                              include_score=not args.no_score,
                              on_holes="refuse" if args.refuse_holes else "report", progress=bar,
                              polygon_convention=args.polygon_convention,
                              keep_empty_categories=args.keep_empty_categories,
                              include_failed=args.include_failed, force=args.force)
            bar.close()
            print(f"wrote {rep.path}: {rep.images} images, {rep.annotations} annotations "
                  f"({rep.polygons} polygon, {rep.rles} RLE), {rep.categories} categories")
            for note in rep.notes:
                print(f"note: {note}")
        if args.label_pngs is not None:
            bar.stage("writing label PNGs")
            rep = export_label_pngs(project, args.label_pngs, progress=bar, include_failed=args.include_failed,
                                    force=args.force)
            bar.close()
            print(f"wrote {rep.images} label maps to {rep.path}")
            for note in rep.notes:
                print(f"note: {note}")
    return 0


def _import(args: argparse.Namespace) -> int:
    project, _created = Project.open_or_create(args.project, args.images)
    with project, ProgressBar() as bar:
        def stage(name: str, total: int) -> None:
            if name == "parsing":  # one call, no steps to show
                bar.stage("")
                bar.message(f"parsing {args.coco.name}...")
                return
            bar.unit = "bytes" if name == "reading" else name
            bar.stage(name, total or None)

        rep = import_coco(project, args.coco, args.images, progress=bar, stage=stage)
    print(f"imported {rep.images_added} new images ({rep.images_existing} already known), "
          f"{rep.categories_added} new categories, {rep.annotations_added} annotations "
          f"({rep.annotations_skipped} already in the project, skipped); {len(rep.problems)} entries not imported")
    for note in rep.notes[:20]:
        print(f"note: {note}")
    if len(rep.notes) > 20:
        print(f"note: ... and {len(rep.notes) - 20} more notes")
    for p in rep.problems[:SHOWN_PROBLEMS]:
        print(f"problem: {p.kind} {p.entry_id}: {p.message}")
    if len(rep.problems) > SHOWN_PROBLEMS:
        print(f"problem: ... and {len(rep.problems) - SHOWN_PROBLEMS} more entries not imported")
    return 1 if rep.problems else 0


def _relink(args: argparse.Namespace) -> int:
    with Project.open(args.project) as project:
        rep = project.relink(args.root, require_found=True)
        root = project.image_root_uri or project.image_root
    print(f"{args.project} now reads its images from {root}: {rep.found_by_path} found by path, "
          f"{rep.found_by_hash} by content, {len(rep.missing)} missing")
    for rel in rep.missing[:SHOWN_PROBLEMS]:
        print(f"missing: {rel}")
    if len(rep.missing) > SHOWN_PROBLEMS:
        print(f"missing: ... and {len(rep.missing) - SHOWN_PROBLEMS} more")
    return 1 if rep.missing else 0


def _failures(args: argparse.Namespace) -> int:
    with _open_for_reading(args.project) as project:
        failures = project.list_failures(args.stage)
    for f in failures:
        print(f"{f.rel_path}\t{f.stage}\t{f.reason}")
    if not failures:
        print("no failures recorded")
    return 0
