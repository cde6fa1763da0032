"""``car-desktop batch`` (auto-label a folder into a project) and ``car-desktop merge`` (combine projects).

Thin terminal front end over car_desktop.autolabel: options, a progress bar on stderr, Ctrl+C handling
(the first stops after the current image with everything saved, the second stops at once) and the
summary with every failure. The exit codes are listed in the commands' help (EXIT_CODES).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from ..annotations import Project, export_coco
from ..autolabel import (AutoLabelJob, AutoLabelProgress, AutoLabelReport, add_folder, concept_entries,
                         merge_projects, parse_shard, run_autolabel)
from ..engine.cancel import CancelToken
from ..engine.errors import CaRDesktopError, ConceptError
from .engine_options import add_engine_options, config_from_args, wants_test_models
from .ray_options import add_ray_options, ray_options_from_args

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_STOPPED = 0, 1, 2, 130
EXIT_CODES = ("exit codes: 0 every image labelled or skipped; 1 some images failed (listed at the end); "
              "2 nothing done (bad option, concepts, project or missing weights); 130 stopped by Ctrl+C "
              "(everything finished is saved: run the same command again to resume)")
MERGE_EXIT_CODES = "exit codes: 0 merged; 1 merged, but some images conflicted (listed); 2 nothing done"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch", help="auto-label every image of a folder into a project (resumable)",
        description="Auto-label every image under IMAGES_DIR with one concept list and save the masks in a "
                    "project. A second run with the same concepts and settings skips the images already "
                    "done; images a person reviewed or edited are never changed. Ctrl+C stops after the "
                    "current image with everything saved.",
        epilog=EXIT_CODES)
    p.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of images (searched recursively)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--concepts", help='comma-separated; "|" joins synonyms: "cat, dog | puppy, sky"')
    src.add_argument("--concepts-file", type=Path, metavar="FILE",
                     help="concepts one per line (or comma-separated); lines starting with # are ignored")
    p.add_argument("--project", type=Path, required=True, metavar="P",
                   help="project file; created with IMAGES_DIR as its image folder if it does not exist")
    add_engine_options(p)
    p.add_argument("--export", type=Path, metavar="OUT.json", help="export the project as COCO JSON at the end")
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
def read_concepts(args: argparse.Namespace) -> str:
    if args.concepts is not None:
        return args.concepts
    try:
        text = args.concepts_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConceptError(f"Cannot read the concepts file {args.concepts_file}: {exc}") from None
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def open_or_create(project_path: Path, images: Path) -> Project:
    if project_path.exists():
        project = Project.open(project_path)
        root = project.image_root.resolve()
        if not images.resolve().is_relative_to(root):
            project.close()
            raise CaRDesktopError(f"{images} is not inside the image folder of {project_path} ({root}); "
                                  "use another --project for this folder")
        return project
    return Project.create(project_path, images)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressBar:
    """One line on stderr, redrawn in place on a terminal; one line per image otherwise (logs)."""

    def __init__(self, stream=None, width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self._drawn = False

    def line(self, p: AutoLabelProgress) -> str:
        filled = int(self.width * p.fraction)
        bar = "#" * filled + "." * (self.width - filled)
        rate = f"{p.rate_per_min:.1f} img/min" if p.rate_per_min is not None else "-- img/min"
        failed = f"  failed {p.failed}" if p.failed else ""
        current = f"  {p.current}" if p.current else ""
        return (f"[{bar}] {p.processed}/{p.todo} {100 * p.fraction:3.0f}%  {rate}  "
                f"{format_duration(p.eta_s)} left{failed}{current}")

    def __call__(self, p: AutoLabelProgress) -> None:
        if p.event == "planned":
            print(f"{p.total} images: {p.todo} to label, {p.skipped} skipped", file=self.stream, flush=True)
            return
        if p.event == "finished":
            if self._drawn and self.tty:
                print(file=self.stream, flush=True)
            return
        if self.tty:
            print("\r" + self.line(p)[:160].ljust(100), end="", file=self.stream, flush=True)
            self._drawn = True
        elif p.event in ("image done", "image failed"):
            print(self.line(p), file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if self._drawn and self.tty:
            print(file=self.stream)
            self._drawn = False
        print(text, file=self.stream, flush=True)


class _InterruptHandler:
    """SIGINT: the first sets ``stop`` (finish the current image), the second ``cancel`` (at once)."""

    def __init__(self, stop: CancelToken, cancel: CancelToken, bar: ProgressBar) -> None:
        self.stop, self.cancel, self.bar = stop, cancel, bar
        self._old = None

    def __enter__(self) -> "_InterruptHandler":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handle(self, signum, frame) -> None:
        if not self.stop.cancelled:
            self.stop.cancel()
            self.bar.message("stopping after the current image (Ctrl+C again to stop at once)...")
        else:
            self.cancel.cancel()
            self.bar.message("stopping now; the current image is dropped")


def print_summary(report: AutoLabelReport, out=None) -> None:
    out = out or sys.stdout
    reasons = ", ".join(f"{n} {why}" for why, n in report.skipped_by_reason.items())
    print(f"labelled {report.done}, skipped {report.skipped}{f' ({reasons})' if reasons else ''}, "
          f"failed {len(report.failed)} in {format_duration(report.elapsed)}", file=out)
    if report.failed:
        print("failures:", file=out)
        for f in report.failed:
            print(f"  {f.path}: {f.reason}", file=out)
    if report.stopped:
        print("stopped before the end; everything finished is saved. Run the same command again to resume.",
              file=out)


def run_batch(args: argparse.Namespace) -> int:
    if not args.images.is_dir():
        raise CaRDesktopError(f"{args.images} is not a folder of images")
    try:
        shard = parse_shard(args.shard) if args.shard else None
    except ValueError as exc:
        raise CaRDesktopError(str(exc)) from None
    concepts = read_concepts(args)
    # The CRF runs in this process: no GUI thread to keep responsive, and a terminal Ctrl+C would
    # otherwise also hit the helper process.
    config = config_from_args(args, crf_in_subprocess=False)
    test_models = wants_test_models(args)
    concept_entries(concepts)  # bad concepts fail here, before the project is created or changed
    ray_options = ray_options_from_args(args)  # likewise a missing Ray or a bad --workers
    if test_models:
        print("WARNING: test models (tiny, random weights): the masks mean nothing.", file=sys.stderr)

    return _batch(args, concepts, config, shard, test_models, ray_options)


def _batch(args: argparse.Namespace, concepts: str, config, shard: tuple[int, int] | None,
           test_models: bool, ray_options=None) -> int:
    from ..engine.pipeline import CaRPipeline

    bar = ProgressBar()
    stop, cancel = CancelToken(), CancelToken()
    with open_or_create(args.project, args.images) as project:
        ids, add_failures = add_folder(project, args.images, shard)
        job = AutoLabelJob(concepts, config, image_ids=ids, overwrite=args.overwrite, test_models=test_models)
        start = time.monotonic()
        with _InterruptHandler(stop, cancel, bar):
            if ray_options is not None:  # --ray: the same job on a Ray cluster (car_desktop.autolabel_ray)
                from ..autolabel_ray import run_autolabel_ray

                report = run_autolabel_ray(project, job, ray_options, progress=bar, cancel=cancel, stop=stop)
            else:
                pipeline = CaRPipeline(config, test_models=test_models)
                report = run_autolabel(pipeline, project, job, progress=bar, cancel=cancel, stop=stop)
        report.failed[:0] = add_failures
        report.total += len(add_failures)
        report.elapsed = time.monotonic() - start
        print_summary(report)
        if args.export is not None:
            if report.stopped:
                print(f"not exported to {args.export}: the run was stopped", file=sys.stderr)
            else:
                rep = export_coco(project, args.export)
                print(f"exported {rep.images} images, {rep.annotations} annotations to {rep.path}")
    if report.stopped:
        return EXIT_STOPPED
    return EXIT_FAILED if report.failed else EXIT_OK


# ------------------------------------------------------------------------------------------ merge
def run_merge(args: argparse.Namespace) -> int:
    out_path = args.out.resolve()
    for path in args.inputs:
        if path.resolve() == out_path:
            raise CaRDesktopError(f"{path} is both the output and an input")
        if not path.exists():
            raise CaRDesktopError(f"{path} does not exist")
    sources = [Project.open(p) for p in args.inputs]
    try:
        out = Project.open(args.out) if args.out.exists() else Project.create(args.out, sources[0].image_root)
        with out:
            root = out.image_root.resolve()
            for src in sources:
                if src.image_root.resolve() != root:
                    print(f"warning: {src.path} has its images in {src.image_root}, {args.out} in {root}; "
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
