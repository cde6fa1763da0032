"""Scoring predictions against ground truth: the semantic metrics, CaR's presence metrics, per-image IoU
and the worst images, accumulated image by image so a dataset of any length runs in bounded memory.

``SegmentationEvaluator`` takes one image at a time as two label maps (0 background, 1..n classes, -1
ignored in GT) plus the classes each side says are present; ``result()`` gives an ``EvalResult``.
``evaluate_label_sets`` pairs a predicted and a GT ``LabelSet`` (labels.py) and feeds the evaluator, and
adds COCOeval's mask AP when every prediction has a score.

Class list of a file evaluation: background, then the GT categories in GT order, then the predicted
categories that match none of them ("not in GT": their pixels are errors of whatever GT class they
cover, but they get no IoU of their own in the mean). Presence is scored for the concepts both sides
know: for each image and concept, kept (a non-empty mask) against present in GT.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from .coco_ap import ApResult, mask_ap
from .errors import EvaluationError
from .labels import IGNORE, LabelSet, match_categories, match_images, paint
from .metrics import PresenceCounts, fmt, nan_to_none

ProgressFn = Callable[[int, int], Any]


@dataclass
class ImageScore:
    """One image's IoU per foreground class present in its GT or prediction, and their mean."""

    name: str
    miou: float | None
    ious: dict[str, float]


@dataclass
class WorstImage:
    name: str
    miou: float
    gt: np.ndarray          # label maps as scored (IGNORE = -1 in GT)
    pred: np.ndarray
    path: Path | None
    ious: dict[str, float]


@dataclass
class EvalResult:
    """Everything an evaluation measured; ``to_dict()`` is the ``--json`` content."""

    class_names: list[str]               # index 0 is background
    confusion: np.ndarray                # (n, n) pixel counts, row = GT, column = prediction
    iou: np.ndarray                      # (n,), NaN where undefined or not scored
    scored: list[bool]                   # classes that count in the mean (not the "not in GT" ones)
    miou: float
    pixel_accuracy: float
    presence: dict[str, PresenceCounts]  # per concept
    presence_total: PresenceCounts
    images: list[ImageScore]
    worst: list[WorstImage]
    background_dropped: bool = False
    ap: ApResult | None = None
    notes: list[str] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)
    pixels_gt: np.ndarray | None = None  # (n,) GT pixels per class
    pixels_pred: np.ndarray | None = None

    @property
    def n_images(self) -> int:
        return len(self.images)

    def to_dict(self) -> dict:
        per_class = []
        for i, name in enumerate(self.class_names):
            row: dict[str, Any] = {"class": name, "iou": nan_to_none(float(self.iou[i])), "scored": self.scored[i]}
            if self.pixels_gt is not None and self.pixels_pred is not None:
                row.update(gt_pixels=int(self.pixels_gt[i]), pred_pixels=int(self.pixels_pred[i]))
            if name in self.presence:
                row["presence"] = self.presence[name].to_dict()
            per_class.append(row)
        return {
            "inputs": self.inputs,
            "images": self.n_images,
            "miou": nan_to_none(self.miou),
            "pixel_accuracy": nan_to_none(self.pixel_accuracy),
            "background_included": not self.background_dropped,
            "classes": per_class,
            "confusion": {"classes": self.class_names, "matrix": self.confusion.tolist()},
            "presence": self.presence_total.to_dict(),
            "mask_ap": self.ap.to_dict() if self.ap is not None else None,
            "per_image": [{"image": s.name, "miou": nan_to_none(s.miou),
                           "iou": {k: nan_to_none(v) for k, v in s.ious.items()}} for s in self.images],
            "worst": [{"image": w.name, "miou": w.miou} for w in self.worst],
            "notes": self.notes,
        }


class SegmentationEvaluator:
    """Accumulates confusion, presence and per-image IoU; keeps the ``worst`` lowest-scoring images' maps."""

    def __init__(self, class_names: Sequence[str], *, scored: Sequence[bool] | None = None,
                 presence_classes: Sequence[int] | None = None, drop_background: bool = False,
                 worst: int = 8) -> None:
        self.class_names = list(class_names)
        n = len(self.class_names)
        self.scored = list(scored) if scored is not None else [True] * n
        self.presence_classes = list(range(1, n)) if presence_classes is None else list(presence_classes)
        self.drop_background = drop_background
        self.confusion = np.zeros((n, n), np.int64)
        self.presence = {c: PresenceCounts() for c in self.presence_classes}
        self.images: list[ImageScore] = []
        self._worst_n = max(0, int(worst))
        self._worst: list[tuple[float, int, WorstImage]] = []   # max-heap by score (negated)

    def add(self, name: str, gt: np.ndarray, pred: np.ndarray, gt_present: set[int] | None = None,
            pred_present: set[int] | None = None, path: Path | None = None) -> ImageScore:
        n = len(self.class_names)
        conf = metrics.confusion_matrix(gt, pred, n, ignore_index=IGNORE)
        self.confusion += conf
        if gt_present is None:
            gt_present = {int(v) for v in np.unique(gt) if 0 < v < n}
        if pred_present is None:
            pred_present = {int(v) for v in np.unique(pred) if 0 < v < n}
        for c in self.presence_classes:
            self.presence[c].add(c in pred_present, c in gt_present)
        iou = metrics.iou_per_class(conf)
        ious = {self.class_names[c]: float(iou[c]) for c in range(1, n)
                if self.scored[c] and not math.isnan(iou[c])}
        score = float(np.mean(list(ious.values()))) if ious else None
        entry = ImageScore(name, score, ious)
        self.images.append(entry)
        if score is not None and self._worst_n:
            item = (-score, -len(self.images), WorstImage(name, score, gt.copy(), pred.copy(), path, ious))
            if len(self._worst) < self._worst_n:
                heapq.heappush(self._worst, item)
            elif item[0] > self._worst[0][0]:
                heapq.heapreplace(self._worst, item)
        return entry

    def result(self) -> EvalResult:
        conf = self.confusion
        names = list(self.class_names)
        scored = list(self.scored)
        if self.drop_background:
            conf, names, scored = metrics.drop_background(conf), names[1:], scored[1:]
        iou = metrics.iou_per_class(conf)
        iou = np.where(np.asarray(scored, bool), iou, np.nan)
        total = PresenceCounts()
        for counts in self.presence.values():
            total += counts
        worst = [w for _, _, w in sorted(self._worst, key=lambda t: (-t[0], -t[1]))]
        return EvalResult(
            class_names=names, confusion=conf, iou=iou, scored=scored, miou=metrics.mean_iou(iou),
            pixel_accuracy=metrics.pixel_accuracy(conf),
            presence={self.class_names[c]: p for c, p in self.presence.items()}, presence_total=total,
            images=self.images, worst=worst, background_dropped=self.drop_background,
            pixels_gt=conf.sum(axis=1), pixels_pred=conf.sum(axis=0))


def evaluate_label_sets(pred: LabelSet, gt: LabelSet, *, drop_background: bool = False, worst: int = 8,
                        with_ap: bool = True, progress: ProgressFn | None = None) -> EvalResult:
    """Pair ``pred`` with ``gt`` (labels.py) and score every paired image; see the module docstring."""
    pairs, notes = match_images(pred, gt)
    if not pairs:
        raise EvaluationError(f"no image of {pred.source} matches an image of {gt.source} by file name; "
                              "nothing to compare")
    cat_map, cat_notes = match_categories(pred.categories, gt.categories)
    notes = list(pred.notes) + list(gt.notes) + notes + cat_notes
    gt_classes = [i for i in range(len(gt.categories)) if i not in gt.ignore]
    class_of_gt = {gi: k + 1 for k, gi in enumerate(gt_classes)}
    names = ["background"] + [gt.categories[i].name for i in gt_classes]
    extra = [pi for pi in range(len(pred.categories)) if pi not in cat_map]
    class_of_pred = {pi: class_of_gt[gi] for pi, gi in cat_map.items() if gi in class_of_gt}
    for pi in extra:
        class_of_pred[pi] = len(names)
        names.append(pred.categories[pi].name)
    if extra:
        notes.append("predicted categories not in GT (their pixels count as errors, no IoU of their own): "
                     + ", ".join(pred.categories[pi].name for pi in extra))
    known = {class_of_pred[pi] for pi in cat_map if pi in class_of_pred}
    unasked = [names[class_of_gt[gi]] for gi in gt_classes if class_of_gt[gi] not in known]
    if unasked:
        notes.append("GT categories the prediction has no category for (scored in mIoU, not in presence): "
                     + ", ".join(unasked))
    n_gt = len(gt_classes) + 1
    evaluator = SegmentationEvaluator(names, scored=[i < n_gt for i in range(len(names))],
                                      presence_classes=sorted(known), drop_background=drop_background,
                                      worst=worst)
    by_score = pred.has_scores
    scored_pairs = []
    skipped = 0
    for k, (gname, pname) in enumerate(pairs, 1):
        g, p = gt.images[gname], pred.images[pname]
        if (g.height, g.width) != (p.height, p.width):
            skipped += 1
            continue
        gt_map, gt_present = paint(g, class_of_gt, by_score=False, ignore=gt.ignore)
        pred_map, pred_present = paint(p, class_of_pred, by_score=by_score)
        evaluator.add(gname, gt_map, pred_map, gt_present, pred_present, g.path or p.path)
        scored_pairs.append((g, p))
        if progress is not None:
            progress(k, len(pairs))
    if skipped:
        notes.append(f"{skipped} image(s) differ in size between prediction and GT: not scored")
    result = evaluator.result()
    if with_ap and by_score:
        result.ap = mask_ap(scored_pairs, gt.categories, cat_map, gt.ignore)
    elif with_ap:
        notes.append("mask AP not computed: the predictions have no scores")
    result.notes = notes
    result.inputs = {"prediction": pred.source, "ground_truth": gt.source}
    return result


# ------------------------------------------------------------------------------------------ terminal
def format_table(result: EvalResult, max_worst: int = 5) -> str:
    """The readable summary printed by ``car-desktop eval``."""
    lines: list[str] = []
    rows = [("class", "IoU", "GT px", "pred px", "P", "R", "F1")]
    for i, name in enumerate(result.class_names):
        pres = result.presence.get(name)
        gt_px = int(result.pixels_gt[i]) if result.pixels_gt is not None else 0
        pred_px = int(result.pixels_pred[i]) if result.pixels_pred is not None else 0
        label = name if result.scored[i] else f"{name} (not in GT)"
        rows.append((label, fmt(float(result.iou[i])), str(gt_px), str(pred_px),
                     fmt(pres.precision if pres else None, 2), fmt(pres.recall if pres else None, 2),
                     fmt(pres.f1 if pres else None, 2)))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for j, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    n_scored = int(np.count_nonzero(~np.isnan(result.iou)))
    bg = "background excluded" if result.background_dropped else "background included"
    lines.append("")
    lines.append(f"mIoU {fmt(result.miou)} over {n_scored} classes ({bg}), pixel accuracy "
                 f"{fmt(result.pixel_accuracy)}, {result.n_images} images")
    t = result.presence_total
    lines.append(f"presence (concept kept where present, removed where absent): precision {fmt(t.precision)} "
                 f"recall {fmt(t.recall)} F1 {fmt(t.f1)}  [{t.tp} kept+present, {t.fp} kept+absent, "
                 f"{t.fn} removed+present, {t.tn} removed+absent]")
    if result.ap is not None:
        lines.append(f"mask AP {fmt(result.ap.ap)} (AP50 {fmt(result.ap.ap50)}, AP75 {fmt(result.ap.ap75)}; "
                     f"COCOeval segm, {result.ap.predictions} predictions, {result.ap.gt_instances} GT instances)")
    if result.worst:
        lines.append("worst images (mean IoU of their classes):")
        for w in result.worst[:max_worst]:
            low = sorted(w.ious.items(), key=lambda kv: kv[1])[:3]
            lines.append(f"  {fmt(w.miou)}  {w.name}  ({', '.join(f'{k} {fmt(v, 2)}' for k, v in low)})")
    for note in result.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
