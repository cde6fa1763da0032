"""``car-desktop eval PRED GT``: how good are predictions (auto-labels) against ground truth.

Both sides may be a COCO JSON or a ``.cardb`` project. Prints a table (IoU per class, mIoU, presence
precision / recall / F1, mask AP when the predictions have scores, the worst images); ``--json`` writes
every number, ``--report`` an HTML page with pictures. The work is car_desktop.evaluation's; this module
parses options and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..evaluation.errors import EvaluationError
from .progress import ProgressBar

MAX_WORST = 200

DESCRIPTION = (
    "Score predictions against ground truth. PRED and GT are each a COCO JSON or a .cardb project; images "
    "are paired by file name, categories by name (\"car | automobile\" or a COCO 'synonyms' list matches "
    "either). Semantic metrics as the papers report them (IoU per class and mIoU from one confusion matrix "
    "over label maps, background included), CaR's presence metrics (per image, were absent concepts "
    "removed and present ones kept), COCOeval mask AP when every prediction has a score, and the worst "
    "images by mean IoU.")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score predictions against ground truth (mIoU, presence P/R, mask AP)",
                       description=DESCRIPTION,
                       epilog="exit codes: 0 scored; 2 nothing scored (bad file, no common image, unwritable output)")
    p.add_argument("pred", type=Path, metavar="PRED", help="predictions: COCO JSON or .cardb project")
    p.add_argument("gt", type=Path, metavar="GT", help="ground truth: COCO JSON or .cardb project")
    add_output_options(p)
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="folder the COCO file names are relative to (only for the report's pictures)")
    p.add_argument("--ignore-index", type=int, default=255, metavar="N",
                   help="a GT COCO category with this id marks pixels that are not scored (VOC's 255 border; "
                        "GT categories named void/ignore/border/unlabeled always are); -1: none")
    p.add_argument("--reviewed-only", action="store_true",
                   help="with a .cardb GT: only its images marked reviewed")
    p.add_argument("--no-background", action="store_true",
                   help="leave background out of the matrix (the papers' VOC-20 / Context-59 convention)")
    p.set_defaults(handler=run_eval)


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, metavar="FILE", help="write every number as JSON")
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="write an HTML report with pictures into DIR (needs matplotlib: the 'report' extra)")
    p.add_argument("--worst", type=int, default=8, metavar="N",
                   help=f"worst images to list and show (default 8, at most {MAX_WORST})")


def check_worst(args: argparse.Namespace) -> None:
    """The gallery keeps the worst images' label maps in memory: their number is bounded."""
    if not 0 <= args.worst <= MAX_WORST:
        raise EvaluationError(f"--worst must lie between 0 and {MAX_WORST}")


def write_outputs(result, args: argparse.Namespace, protected: list[Path], title: str,
                  extra: dict[str, str] | None = None) -> None:
    """Print the table; write --json and --report."""
    from ..evaluation.evaluate import format_table
    from ..evaluation.report import write_json, write_report

    print(format_table(result))
    if args.json is not None:
        write_json(result.to_dict(), args.json, protected)
        print(f"wrote {args.json}")
    if args.report is not None:
        page = write_report(result, args.report, title=title, protected=protected, extra=extra)
        print(f"wrote {page}")


def run_eval(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate_label_sets
    from ..evaluation.labels import load_labels
    from ..evaluation.report import check_outputs, require_matplotlib

    if args.report is not None:
        require_matplotlib()  # before any work
    check_worst(args)
    check_outputs(args.json, args.report, [args.pred, args.gt])
    ignore = None if args.ignore_index < 0 else args.ignore_index
    pred = load_labels(args.pred, images_dir=args.images, ignore_index=ignore)
    gt = load_labels(args.gt, images_dir=args.images, reviewed_only=args.reviewed_only, ignore_index=ignore)
    bar = ProgressBar("eval", unit="img")
    try:
        result = evaluate_label_sets(pred, gt, drop_background=args.no_background, worst=args.worst,
                                     progress=bar if len(gt.images) > 50 else None)
    finally:
        bar.close()
    protected = [args.pred, args.gt]
    write_outputs(result, args, protected, f"{Path(args.pred).name} against {Path(args.gt).name}")
    if not result.n_images:
        print("nothing was scored", file=sys.stderr)
        return 2
    return 0
