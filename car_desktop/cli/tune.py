"""``car-desktop tune PROJECT_OR_COCO``: calibrate theta and eta (and optionally the visual prompts) on
labelled images, print the best setting with its curve and the work saved, and with ``--save`` make it
the project's default for later runs (batch and the window read it; a value the user sets still wins).

Ground truth is a project's reviewed images (their current masks) or a COCO JSON with ``--images``.
The sweep itself is car_desktop.evaluation.tuning's, the model side car_desktop.engine.tuning's. Ctrl+C
stops after the current image (twice: at once) and prints the result over the images finished.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import CaRDesktopError
from ..evaluation.errors import EvaluationError
from .engine_options import add_engine_options, config_from_args, wants_test_models
from .interrupt import InterruptHandler
from .progress import ProgressBar

EXIT_OK, EXIT_STOPPED = 0, 130


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="find the theta/eta (and prompts) that suit your labelled images; --save makes them the default",
        description="Sweep CaR's thresholds on labelled images: a project's reviewed images (their masks as "
                    "corrected by a person) or a GT COCO JSON with --images. Only what depends on a swept value "
                    "is recomputed: the image pass, proposals and text embeddings are shared by every setting.",
        epilog="exit codes: 0 done; 2 nothing done (no labelled image, bad option); 130 stopped by Ctrl+C")
    p.add_argument("source", type=Path, metavar="PROJECT_OR_COCO",
                   help=".cardb project (its reviewed images) or a COCO JSON of ground truth")
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="folder of the images (needed with a COCO file; default for a project: its image folder)")
    p.add_argument("--concepts", help='concepts to run (default: the project\'s last auto-label concepts, else '
                                      'the GT categories); "|" joins synonyms')
    p.add_argument("--thetas", default="0.1:0.9:0.1", metavar="LIST",
                   help="theta values: 0.2,0.4,0.6 or start:stop:step (default 0.1:0.9:0.1)")
    p.add_argument("--etas", default="0.3:0.7:0.1", metavar="LIST", help="eta values (default 0.3:0.7:0.1)")
    p.add_argument("--prompt-sets", metavar="SETS",
                   help="also sweep visual prompts: comma-separated sets joined by '+', e.g. circle+blur,blur+gray")
    p.add_argument("--objective", choices=("miou", "presence-f1"), default="miou",
                   help="maximise mIoU (masks) or the presence F1 (absent concepts removed, present ones kept)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N labelled images")
    p.add_argument("--save", nargs="?", const=True, default=None, metavar="PROJECT",
                   help="store the best setting as the default of the project (of PROJECT with a COCO source)")
    add_engine_options(p)
    p.set_defaults(handler=run_tune, sam="off")


def _prompt_sets(text: str | None, config) -> list[tuple[str, ...] | None]:
    """None (the config's prompts) or the given sets plus the config's own, in the config's canonical order."""
    if not text:
        return [None]
    sets = [config.prompts]
    for part in text.split(","):
        names = tuple(n.strip() for n in part.split("+") if n.strip())
        if names:
            canonical = config.replace(prompts=names).prompts  # ConfigError names an unknown prompt
            if canonical not in sets:
                sets.append(canonical)
    return sets


def _default_concepts(source_is_project: bool, source: Path, labels) -> str:
    if source_is_project:
        from ..annotations.store import Project
        from ..autolabel import LAST_RUN_SETTING

        with Project.open(source) as project:
            last = project.get_setting(LAST_RUN_SETTING)
        if isinstance(last, dict) and isinstance(last.get("concepts"), list) and last["concepts"]:
            return ", ".join(str(c) for c in last["concepts"])
    return ", ".join(c.label for i, c in enumerate(labels.categories) if i not in labels.ignore)


def run_tune(args: argparse.Namespace) -> int:
    from ..engine.concepts import ConceptList
    from ..evaluation.labels import CategorySpec, classes_for_concepts, load_labels
    from ..evaluation.tuning import grid, parse_values

    if not args.source.is_file():
        raise EvaluationError(f"{args.source} does not exist or is not a file")
    with open(args.source, "rb") as fh:
        is_project = fh.read(16).startswith(b"SQLite format 3")
    if not is_project and args.images is None:
        raise EvaluationError("with a COCO file, --images DIR must say where its images are")
    if args.save is True and not is_project:
        raise EvaluationError("--save needs a project: give it as --save PROJECT.cardb with a COCO source")
    save_to = args.source if args.save is True else (Path(args.save) if args.save else None)
    if save_to is not None and not save_to.is_file():
        raise EvaluationError(f"--save: the project {save_to} does not exist")
    labels = load_labels(args.source, images_dir=args.images, reviewed_only=True)
    if args.images is not None:
        for entry in labels.images.values():
            entry.path = args.images / entry.name
    if not labels.images:
        raise EvaluationError(f"{args.source} has no reviewed image: review some images first "
                              "(Edit > Mark image reviewed) or give a GT COCO file" if is_project
                              else f"{args.source} lists no image")
    concepts = ConceptList.parse(args.concepts or _default_concepts(is_project, args.source, labels))
    specs = [CategorySpec(c.name, c.synonyms[1:]) for c in concepts]
    class_of, notes = classes_for_concepts(labels, specs)
    if not class_of:
        raise EvaluationError("none of the concepts matches a category of the ground truth: "
                              + ", ".join(c.label for c in labels.categories))
    config = config_from_args(args, crf_in_subprocess=False)
    thetas = sorted(set(parse_values(args.thetas, "thetas")) | {config.theta})
    etas = sorted(set(parse_values(args.etas, "etas")) | {config.eta})
    settings = grid(thetas, etas, _prompt_sets(args.prompt_sets, config))
    entries = list(labels.images.values())
    if args.limit is not None:
        entries = entries[:max(0, args.limit)]
    return _tune(args, labels, entries, concepts, class_of, notes, config, settings, save_to)


def _tune(args, labels, entries, concepts, class_of, notes, config, settings, save_to) -> int:
    from ..annotations.store import Project
    from ..cancel import CancelToken
    from ..engine.image_io import load_image
    from ..engine.pipeline import CaRPipeline
    from ..engine.tuning import PipelineStages
    from ..evaluation.labels import paint
    from ..evaluation.tuning import (
        TUNED_SETTING,
        Setting,
        SkipImage,
        TuneImage,
        format_curve,
        format_passes,
        sweep,
        tuned_record,
    )

    test_models = wants_test_models(args)
    if test_models:
        print("WARNING: test models (tiny, random weights): the numbers mean nothing.", file=sys.stderr)
    pipeline = CaRPipeline(config, test_models=test_models)
    stop, cancel = CancelToken(), CancelToken()

    def tune_image(entry) -> TuneImage:
        def prepare():
            if entry.path is None:
                raise SkipImage("no image file known")
            try:
                image = load_image(entry.path)
            except CaRDesktopError as exc:
                raise SkipImage(str(exc)) from None
            if image.shape[:2] != (entry.height, entry.width):
                raise SkipImage(f"the file is {image.shape[1]}x{image.shape[0]}, "
                                f"the labels {entry.width}x{entry.height}")
            gt, _ = paint(entry, class_of, by_score=False, ignore=labels.ignore)
            return gt, PipelineStages(pipeline, config, image, concepts, cancel)
        return TuneImage(entry.name, prepare)

    reference = Setting(config.theta, config.eta, config.prompts if settings[0].prompts is not None else None)
    print(f"tuning {len(settings)} settings on {len(entries)} labelled image(s) of {args.source}; "
          f"concepts: {', '.join(c.name for c in concepts)}; objective {args.objective}; preset {config.preset}")
    for note in notes:
        print(f"note: {note}")
    bar = ProgressBar("tune", unit="runs")
    before = pipeline.counter.snapshot()
    with InterruptHandler(stop, cancel, bar):
        result = sweep([tune_image(e) for e in entries], len(concepts), settings, objective=args.objective,
                       max_steps=config.max_steps, progress=bar, cancel=cancel, stop=stop)
    bar.close()
    passes = pipeline.counter.since(before)
    for skipped in result.skipped:
        print(f"skipped {skipped}")
    if not result.images_done:
        if result.cancelled:
            print("stopped before the first image finished", file=sys.stderr)
            return EXIT_STOPPED
        raise EvaluationError("no image could be used for tuning")
    best = result.best(reference)
    ref = next((s for s in result.scores if s.setting == reference), None)
    print(format_curve(result, reference))
    print()
    ref_text = (f" (preset {config.preset} as given: {reference.label} -> {ref.value(args.objective):.3f})"
                if ref else "")
    print(f"best: {best.setting.label} -> {args.objective} {best.value(args.objective):.3f} "
          f"(mIoU {best.miou:.3f}, presence F1 {best.presence_f1:.3f}){ref_text}")
    print(f"over {result.images_done} image(s)" + (" (stopped early)" if result.cancelled else ""))
    print(format_passes(result))
    print("engine passes measured: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in passes.items() if v)
          + " (text embeddings are encoded once and cached for every setting)")
    if result.cancelled:
        if save_to is not None:
            print("not saved: the sweep was stopped before the end", file=sys.stderr)
        return EXIT_STOPPED
    if save_to is not None:
        record = tuned_record(best, config, args.objective, result.images_done, concepts.labels)
        with Project.open(save_to) as project:
            project.set_setting(TUNED_SETTING, record)
        print(f"saved to {save_to}: runs with preset {config.preset} now use {best.setting.label} unless "
              "you set theta/eta yourself")
    return EXIT_OK
