"""``car-desktop batch`` (auto-label a folder into a project) and ``car-desktop merge`` (combine projects).

Thin terminal front end over car_desktop.autolabel: options, a progress bar on stderr, Ctrl+C handling
(the first stops after the current image with everything saved, the second stops at once) and the
summary: counts, the first few failures and where the full list is (the project keeps it:
``car-desktop failures PROJECT``). The ``--export`` path is checked before any image is labelled.
The exit codes are listed in the commands' help (EXIT_CODES).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ..annotations import Project, export_coco
from ..autolabel import (
    SKIP_FAILED,
    AutoLabelJob,
    AutoLabelProgress,
    AutoLabelReport,
    merge_projects,
    parse_shard,
    run_autolabel,
    scan_folder,
)
from ..cancel import CancelToken
from ..engine.concepts import ConceptList
from ..engine.errors import CaRDesktopError, ConceptError
from ..evaluation.tuning import with_tuned_defaults
from ..fileio import regular_file
from ..imagesource import RemoteImages, SourceError, canonical_root, is_uri, under_root
from .engine_options import add_engine_options, config_from_args, wants_test_models
from .interrupt import InterruptHandler
from .progress import ProgressBar, format_duration
from .ray_options import add_ray_options, ray_options_from_args

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_STOPPED = 0, 1, 2, 130
EXIT_CODES = ("exit codes: 0 every image labelled or skipped; 1 some images failed (the first are listed; "
              "'car-desktop failures PROJECT' lists all); 2 nothing done (bad option, concepts, project, output "
              "path or missing weights); 3 internal error (a bug: please report it); 130 stopped by Ctrl+C "
              "(everything finished is saved: run the same command again to resume)")
#: Failures listed in the summary; the project keeps them all.
SUMMARY_FAILURES = 10
MERGE_EXIT_CODES = "exit codes: 0 merged; 1 merged, but some images conflicted (listed); 2 nothing done"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch", help="auto-label every image of a folder into a project (resumable)",
        description="Auto-label every image under IMAGES_DIR with one concept list and save the masks in a "
                    "project. A second run with the same concepts and settings skips the images already "
                    "done; images a person reviewed or edited are never changed. Ctrl+C stops after the "
                    "current image with everything saved.",
        epilog=EXIT_CODES)
    p.add_argument("images", type=_images_arg, metavar="IMAGES_DIR",
                   help="folder of images (searched recursively), or s3://BUCKET/PREFIX or gs://BUCKET/PREFIX "
                        "(credentials from the environment: AWS_* variables or ~/.aws, GOOGLE_APPLICATION_CREDENTIALS)")
    add_concept_options(p, "cat, dog | puppy, sky")
    p.add_argument("--project", type=Path, required=True, metavar="P",
                   help="project file; created with IMAGES_DIR as its image folder if it does not exist")
    add_engine_options(p)
    p.add_argument("--export", type=Path, metavar="OUT.json",
                   help="export the project as COCO JSON at the end (never onto the project or an image; "
                        "inside the image folder only with --force)")
    p.add_argument("--force", action="store_true", help="allow --export to write inside the image folder")
    p.add_argument("--skip-failed", action="store_true",
                   help="do not try again the images that failed before and have not changed since (same "
                        "size and SHA-256); they count as skipped")
    p.add_argument("--shard", metavar="i/n",
                   help="process only shard i of n (1-based: 1/3, 2/3, 3/3), chosen by a stable hash of each "
                        "image's relative path; give each shard its own --project and combine them with "
                        "'car-desktop merge'")
    p.add_argument("--overwrite", action="store_true",
                   help="redo images already labelled with these concepts and settings (reviewed or edited "
                        "images are still left alone)")
    add_ray_options(p)
    p.set_defaults(handler=run_batch)

    m = sub.add_parser(
        "merge", help="combine projects (e.g. the shards of a batch run) into one",
        description="Copy the images, categories and annotations of IN projects into OUT_PROJECT (created "
                    "if missing, with the first input's image folder). Categories are matched by name, "
                    "images by relative path; an image labelled in two inputs keeps the higher status "
                    "(reviewed > auto > new), else the first, and is reported as a conflict.",
        epilog=MERGE_EXIT_CODES)
    m.add_argument("out", type=Path, metavar="OUT_PROJECT")
    m.add_argument("inputs", type=Path, nargs="+", metavar="IN")
    m.set_defaults(handler=run_merge)


# ------------------------------------------------------------------------------------------ batch
def _images_arg(text: str) -> Path | str:
    """A local folder as a Path; an object-store folder as its canonical URI (no credentials in it)."""
    if not is_uri(text):
        return Path(text)
    try:
        return canonical_root(text)
    except SourceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_concept_options(p: argparse.ArgumentParser, example: str) -> None:
    """--concepts TEXT or --concepts-file FILE (one of them is required); ``read_concepts`` reads them."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--concepts", help=f'comma-separated; "|" joins synonyms: "{example}"')
    src.add_argument("--concepts-file", type=Path, metavar="FILE",
                     help="concepts one per line (or comma-separated); lines starting with # are ignored")


def read_concepts(args: argparse.Namespace) -> str:
    if args.concepts is not None:
        return args.concepts
    path = args.concepts_file
    _, problem = regular_file(path)
    if problem:  # a pipe would block, a folder cannot be read
        raise ConceptError(f"The concepts file {path} {problem}.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConceptError(f"Cannot read the concepts file {path}: {exc}") from None
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def open_or_create(project_path: Path, images: Path | str) -> Project:
    project, created = Project.open_or_create(project_path, images)
    if not created:
        uri = project.image_root_uri
        if uri is not None or isinstance(images, str):
            if uri is None or not isinstance(images, str) or under_root(images, uri) is None:
                project.close()
                raise CaRDesktopError(f"{images} is not inside the image folder of {project_path} "
                                      f"({uri or project.image_root}); use another --project for this folder")
            return project
        root = project.image_root.resolve()
        if not images.resolve().is_relative_to(root):
            project.close()
            raise CaRDesktopError(f"{images} is not inside the image folder of {project_path} ({root}); "
                                  "use another --project for this folder")
    return project


class BatchProgress:
    """AutoLabelProgress events drawn with the shared ProgressBar: in place on a terminal, one line
    per finished image otherwise (logs)."""

    def __init__(self, bar: ProgressBar | None = None) -> None:
        self.bar = bar or ProgressBar(unit="img")

    def __call__(self, p: AutoLabelProgress) -> None:
        if p.event == "planned":
            self.bar.message(f"{p.total} images: {p.todo} to label, {p.skipped} skipped")
            self.bar.stage("", p.todo)
            return
        if p.event == "finished":
            self.bar.close()
            return
        failed = f"failed {p.failed}  " if p.failed else ""
        self.bar.update(p.processed, max(p.todo, p.processed), tail=f"{failed}{p.current or ''}",
                        log=p.event in ("image done", "image failed"))

    def message(self, text: str) -> None:
        self.bar.message(text)


def print_summary(report: AutoLabelReport, project_path: Path | None = None, out=None) -> None:
    out = out or sys.stdout
    reasons = ", ".join(f"{n} {why}" for why, n in report.skipped_by_reason.items())
    print(f"labelled {report.done}, skipped {report.skipped}{f' ({reasons})' if reasons else ''}, "
          f"failed {len(report.failed)} in {format_duration(report.elapsed)}", file=out)
    if report.failed:
        where = f"car-desktop failures {project_path}" if project_path else "car-desktop failures PROJECT"
        print(f"the project keeps the list of failed files ('{where}' prints it); --skip-failed stops "
              "retrying those that have not changed", file=out)
        print("failures:", file=out)
        for f in report.failed[:SUMMARY_FAILURES]:
            print(f"  {f.path}: {f.reason}", file=out)
        more = len(report.failed) - SUMMARY_FAILURES
        if more > 0:
            print(f"  ... and {more} more (the full list is in the project, see above)", file=out)
    if report.stopped:
        print("stopped before the end; everything finished is saved. Run the same command again to resume.",
              file=out)


def run_batch(args: argparse.Namespace) -> int:
    if isinstance(args.images, str):
        RemoteImages(args.images).check()  # a wrong bucket or missing credentials: before the project is made
    elif not args.images.is_dir():
        raise CaRDesktopError(f"{args.images} is not a folder of images")
    try:
        shard = parse_shard(args.shard) if args.shard else None
    except ValueError as exc:
        raise CaRDesktopError(str(exc)) from None
    text = read_concepts(args)
    # The CRF runs in this process: no GUI thread to keep responsive, and a terminal Ctrl+C would
    # otherwise also hit the helper process.
    config = config_from_args(args, crf_in_subprocess=False)
    test_models = wants_test_models(args)
    concepts = ConceptList.parse(text)  # bad concepts fail here, before the project is created or changed
    ray_options = ray_options_from_args(args)  # likewise a missing Ray or a bad --workers
    if test_models:
        print("WARNING: test models (tiny, random weights): the masks mean nothing.", file=sys.stderr)

    return _batch(args, concepts, config, shard, test_models, ray_options)


def _batch(args: argparse.Namespace, concepts: ConceptList, config, shard: tuple[int, int] | None,
           test_models: bool, ray_options=None) -> int:
    from ..engine.pipeline import CaRPipeline

    bar = BatchProgress()
    stop, cancel = CancelToken(), CancelToken()
    with open_or_create(args.project, args.images) as project:
        if args.export is not None:  # refused now, before hours of labelling, not at the end
            project.output_guard(args.force).check_file(args.export, "COCO file")
        scan = scan_folder(project, args.images, shard, skip_failed=args.skip_failed)
        given = {k for k in ("theta", "eta") if getattr(args, k) is not None}
        config, tuned = with_tuned_defaults(config, project, given)
        if tuned is not None:
            print(f"using the project's tuned thresholds (car-desktop tune): "
                  f"theta {config.theta:.2f}, eta {config.eta:.2f}")
        job = AutoLabelJob(concepts, config, image_ids=scan.ids, overwrite=args.overwrite, test_models=test_models,
                           skip_failed=args.skip_failed)
        start = time.monotonic()
        with InterruptHandler(stop, cancel, bar):
            if ray_options is not None:  # --ray: the same job on a Ray cluster (car_desktop.autolabel_ray)
                from ..autolabel_ray import run_autolabel_ray

                report = run_autolabel_ray(project, job, ray_options, progress=bar, cancel=cancel, stop=stop)
            else:
                pipeline = CaRPipeline(config, test_models=test_models)
                report = run_autolabel(pipeline, project, job, progress=bar, cancel=cancel, stop=stop)
        add_failures = scan.failures
        report.failed[:0] = add_failures
        report.total += len(add_failures) + scan.skipped_unchanged
        if scan.skipped_unchanged:
            report.skipped += scan.skipped_unchanged
            by_reason = report.skipped_by_reason
            by_reason[SKIP_FAILED] = by_reason.get(SKIP_FAILED, 0) + scan.skipped_unchanged
        report.elapsed = time.monotonic() - start
        print_summary(report, args.project)
        if args.export is not None:
            if report.stopped:
                print(f"not exported to {args.export}: the run was stopped", file=sys.stderr)
            else:
                rep = export_coco(project, args.export, force=args.force)
                print(f"exported {rep.images} images, {rep.annotations} annotations to {rep.path}")
                for note in rep.notes:
                    print(f"note: {note}")
    if report.stopped:
        return EXIT_STOPPED
    return EXIT_FAILED if report.failed else EXIT_OK


# ------------------------------------------------------------------------------------------ merge
def _root_of(project: Project) -> str:
    """The project's image folder: its URI, or its resolved local path."""
    return project.image_root_uri or str(project.image_root.resolve())


def run_merge(args: argparse.Namespace) -> int:
    out_path = args.out.resolve()
    for path in args.inputs:
        if path.resolve() == out_path:
            raise CaRDesktopError(f"{path} is both the output and an input")
        if not path.exists():
            raise CaRDesktopError(f"{path} does not exist")
    sources = [Project.open(p) for p in args.inputs]
    try:
        out = Project.open(args.out) if args.out.exists() else Project.create(args.out, _root_of(sources[0]))
        with out:
            root = _root_of(out)
            for src in sources:
                if _root_of(src) != root:
                    print(f"warning: {src.path} has its images in {_root_of(src)}, {args.out} in {root}; "
                          "images are matched by their path relative to those folders", file=sys.stderr)
            rep = merge_projects(out, sources)
    finally:
        for src in sources:
            src.close()
    print(f"merged {len(sources)} projects into {args.out}: {rep.images_added} images added, "
          f"{rep.images_updated} updated, {rep.annotations_copied} annotations, "
          f"{rep.categories_added} new categories")
    if rep.conflicts:
        print(f"{len(rep.conflicts)} conflicts:")
        for c in rep.conflicts:
            print(f"  {c}")
        return 1
    return 0
