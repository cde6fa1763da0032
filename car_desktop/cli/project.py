"""``car-desktop export`` and ``car-desktop import``: COCO (and label PNG) exchange for a project file.

Thin wrappers over car_desktop.annotations: parse options, run, print the report's counts and
notes, return an exit code (0 done, 1 done with per-entry import problems). User errors raise
CaRDesktopError subclasses, which cli.main prints as one line (exit code 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..annotations import Project, export_coco, export_label_pngs, import_coco
from ..annotations.coco_export import FORMATS, MODES

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    exp = subparsers.add_parser("export", help="export a project to COCO JSON and/or semantic label PNGs")
    exp.add_argument("project", type=Path, help="project file (.cardesk)")
    exp.add_argument("--coco", type=Path, metavar="OUT.json", help="write COCO JSON here")
    exp.add_argument("--format", choices=FORMATS, default="auto",
                     help="segmentation encoding: polygons, RLE, or auto (polygon unless holes/many parts)")
    exp.add_argument("--mode", choices=MODES, default="instance",
                     help="instance: one annotation per stored mask; components: one per connected part; "
                          "semantic: one per concept per image")
    exp.add_argument("--no-score", action="store_true", help="leave the score field out")
    exp.add_argument("--refuse-holes", action="store_true",
                     help="with --format polygon, fail instead of filling holes")
    exp.add_argument("--label-pngs", type=Path, metavar="DIR", help="also write palette label PNGs here")
    exp.set_defaults(handler=_export)

    imp = subparsers.add_parser("import", help="import COCO JSON into a project (created if missing)")
    imp.add_argument("project", type=Path, help="project file; created with --images as image folder if new")
    imp.add_argument("coco", type=Path, metavar="COCO.json")
    imp.add_argument("--images", type=Path, required=True, metavar="DIR",
                     help="folder the COCO file_name entries are relative to")
    imp.set_defaults(handler=_import)


def _export(args: argparse.Namespace) -> int:
    if args.coco is None and args.label_pngs is None:
        print("error: nothing to do; give --coco OUT.json and/or --label-pngs DIR", file=sys.stderr)
        return 2
    with Project.open(args.project) as project:
        if args.coco is not None:
            rep = export_coco(project, args.coco, fmt=args.format, mode=args.mode,
                              include_score=not args.no_score,
                              on_holes="refuse" if args.refuse_holes else "report")
            print(f"wrote {rep.path}: {rep.images} images, {rep.annotations} annotations "
                  f"({rep.polygons} polygon, {rep.rles} RLE), {rep.categories} categories")
            for note in rep.notes:
                print(f"note: {note}")
        if args.label_pngs is not None:
            rep = export_label_pngs(project, args.label_pngs)
            print(f"wrote {rep.images} label maps to {rep.path}")
            for note in rep.notes:
                print(f"note: {note}")
    return 0


def _import(args: argparse.Namespace) -> int:
    if args.project.exists():
        project = Project.open(args.project)
    else:
        project = Project.create(args.project, args.images)
    with project:
        rep = import_coco(project, args.coco, args.images)
    print(f"imported {rep.images_added} new images ({rep.images_existing} already known), "
          f"{rep.categories_added} new categories, {rep.annotations_added} annotations")
    for note in rep.notes[:20]:
        print(f"note: {note}")
    for p in rep.problems:
        print(f"problem: {p.kind} {p.entry_id}: {p.message}")
    return 1 if rep.problems else 0
