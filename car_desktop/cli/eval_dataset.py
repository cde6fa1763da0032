"""``car-desktop eval-dataset voc2012 --root VOCdevkit/VOC2012 --split val``: the paper's benchmark numbers.

Runs CaR on every image of a public benchmark with the paper's class names and preset, writes each
prediction as a palette label PNG (value k = the dataset's class k), and scores them like ``eval``: the
terminal table, ``metrics.json`` and the HTML report. With the OpenAI weights this reproduces the paper's
mIoU (the README lists the expected numbers); with ``--test-models`` everything runs and the numbers
mean nothing. Ctrl+C stops and scores the images finished so far.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..evaluation.errors import EvaluationError
from .engine_options import add_engine_options, config_from_args, wants_test_models
from .eval import add_output_options, check_worst, write_outputs
from .progress import ProgressBar


def register(sub: argparse._SubParsersAction) -> None:
    from ..evaluation.datasets import DATASETS

    lines = [f"  {k}: {s.title}, --root {s.layout}; paper mIoU "
             + ", ".join(f"{v} {setting}" for setting, v in s.paper_miou.items()) for k, s in DATASETS.items()]
    p = sub.add_parser(
        "eval-dataset", help="run CaR on a public benchmark (VOC, COCO-Object, Pascal Context) and score it",
        description="Run CaR with the paper's class names and preset on a benchmark split, write the "
                    "predictions as label PNGs and score them (table, metrics.json, HTML report).",
        epilog="datasets:\n" + "\n".join(lines) + "\nexit codes: 0 scored; 2 nothing done; 130 stopped by "
               "Ctrl+C before the first image", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=list(DATASETS))
    p.add_argument("--root", type=Path, required=True, help="the dataset folder (see the list below)")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images of the split")
    p.add_argument("--out", type=Path, default=Path("car_eval_out"),
                   help="folder for predictions/, metrics.json and report/ (default car_eval_out)")
    add_output_options(p)
    add_engine_options(p)
    # The dataset chooses the preset; the paper's headline numbers are without SAM.
    p.set_defaults(handler=run_eval_dataset, preset=None, sam="off")


def _check_out(args: argparse.Namespace, inputs: list[Path]) -> Path:
    """Refuse outputs inside the dataset's folders (or onto its files), before any work; make predictions/."""
    from ..evaluation.report import check_outputs
    from ..safepaths import is_within

    pred_dir = args.out / "predictions"
    for target in (pred_dir, args.json, args.report):
        inside = next((folder for folder in inputs if target is not None and is_within(target, folder)), None)
        if inside is not None:
            raise EvaluationError(f"{target} lies inside the dataset's {inside}; choose a folder outside it")
    check_outputs(args.json, args.report, [args.root])
    try:
        pred_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvaluationError(f"cannot create {pred_dir}: {exc.strerror or exc}") from None
    return pred_dir


def _save_prediction(label: np.ndarray, target: Path, colours: np.ndarray) -> None:
    from PIL import Image

    from ..fileio import atomic_write

    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(colours.ravel().tolist())
    atomic_write(target, lambda fh: img.save(fh, format="PNG"))


def run_eval_dataset(args: argparse.Namespace) -> int:
    from ..engine.concepts import ConceptList
    from ..engine.image_io import load_image
    from ..engine.pipeline import CaRPipeline
    from ..errors import CaRDesktopError
    from ..evaluation.datasets import dataset_images
    from ..evaluation.evaluate import SegmentationEvaluator
    from ..evaluation.report import require_matplotlib
    from .segment import palette

    check_worst(args)
    spec, images, inputs = dataset_images(args.dataset, args.root, args.split, args.limit)
    if not images:
        raise EvaluationError(f"no image to evaluate in {args.dataset} {args.split}")
    if args.report is not None:
        require_matplotlib()
    report_dir = args.report
    if report_dir is None:
        try:
            require_matplotlib()
            report_dir = args.out / "report"
        except EvaluationError as exc:
            print(f"note: no HTML report: {exc}", file=sys.stderr)
    if args.json is None:
        args.json = args.out / "metrics.json"
    args.report = report_dir
    args.preset = args.preset or spec.preset
    config = config_from_args(args, crf_in_subprocess=False)
    pred_dir = _check_out(args, inputs)
    test_models = wants_test_models(args)
    if test_models:
        print("WARNING: test models (tiny, random weights): the masks and the numbers mean nothing.",
              file=sys.stderr)
    if len(spec.class_names) > 256:
        raise EvaluationError("label PNGs hold at most 256 classes")
    colours = np.zeros((256, 3), np.uint8)
    colours[:len(spec.class_names)] = palette(len(spec.classes))

    concepts = ConceptList.parse(spec.concepts)   # parsed once: class k is concept k - 1
    if len(concepts) != len(spec.classes):
        raise EvaluationError(f"{args.dataset}: {len(spec.classes)} classes but {len(concepts)} distinct concepts")
    pipeline = CaRPipeline(config, test_models=test_models)
    evaluator = SegmentationEvaluator(spec.class_names, drop_background=spec.drop_background, worst=args.worst)
    failures: list[str] = []
    bar = ProgressBar(args.dataset, unit="img")
    stopped = False
    try:
        for k, item in enumerate(images, 1):
            try:
                image = load_image(item.image_path)
                gt = item.load_gt()
            except CaRDesktopError as exc:
                failures.append(f"{item.name}: {exc}")
                continue
            if gt.shape != image.shape[:2]:
                failures.append(f"{item.name}: label map {gt.shape[1]}x{gt.shape[0]} but image "
                                f"{image.shape[1]}x{image.shape[0]}")
                continue
            result = pipeline.run(image, concepts, config=config)
            pred = result.label_map
            present = {c.index + 1 for c in result.concepts if c.mask.any()}
            _save_prediction(pred, pred_dir / f"{item.name}.png", colours)
            evaluator.add(item.name, gt, pred, None, present, item.image_path)
            bar(k, len(images), item.name)
    except KeyboardInterrupt:
        stopped = True
    finally:
        bar.close()
    if not evaluator.images:
        if stopped:
            print("stopped before the first image was scored", file=sys.stderr)
            return 130
        raise EvaluationError("no image could be scored:\n  " + "\n  ".join(failures[:20]))
    res = evaluator.result()
    res.inputs = {"dataset": spec.title, "root": str(args.root), "split": args.split,
                  "preset": config.preset, "sam": config.sam_mode,
                  "models": ", ".join(f"{k} {v}" for k, v in pipeline.model_names.items())}
    if stopped:
        res.notes.append(f"stopped by Ctrl+C after {len(evaluator.images)} of {len(images)} images")
    res.notes += failures
    paper = ", ".join(f"{v} {setting}" for setting, v in spec.paper_miou.items())
    res.notes.append(f"the paper reports mIoU {paper} on the full {args.split} split with OpenAI weights"
                     + (" (test models are in use: these numbers mean nothing)" if test_models else ""))
    write_outputs(res, args, [args.root], f"CaR on {spec.title}, {args.split}",
                  extra={"predictions": str(pred_dir)})
    print(f"wrote {len(evaluator.images)} predictions to {pred_dir}/")
    return 0
