"""Segmentation metrics on plain numpy arrays: the confusion matrix of two label maps, per-class IoU and
mIoU as the papers report them, pixel accuracy, and presence precision / recall / F1.

Conventions (VOC, and the authors' released evaluation): class 0 is background and is a class like any
other; GT pixels equal to ``ignore_index`` (VOC's 255 border) or outside ``0..n-1`` are not counted.
IoU of class c = TP / (TP + FP + FN) from the confusion matrix accumulated over *all* images (not the
mean of per-image IoUs); a class that is neither in GT nor predicted has no IoU (NaN) and is left out of
the mean. ``drop_background`` reproduces the released code's "-20"/"-59" variants, which remove the
background row and column from the matrix (pixels predicted as background are then not misses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Self

import numpy as np


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, n_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """(n, n) int64 counts: row = GT class, column = predicted class.

    GT pixels equal to ``ignore_index`` or outside 0..n-1 are skipped. A predicted value outside 0..n-1
    is a caller bug (predictions are built from known classes) and raises ValueError.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"label maps differ in shape: GT {gt.shape}, prediction {pred.shape}")
    g = gt.reshape(-1).astype(np.int64, copy=False)
    p = pred.reshape(-1).astype(np.int64, copy=False)
    keep = (g >= 0) & (g < n_classes)
    if ignore_index is not None:
        keep &= g != ignore_index
    g, p = g[keep], p[keep]
    if p.size and (p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"predicted label {int(p.max())} outside 0..{n_classes - 1}")
    return np.bincount(g * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU of each class (float64); NaN where the class is neither in GT nor predicted."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(iou: np.ndarray) -> float:
    """Mean of the defined IoUs (NaN when none is defined)."""
    iou = np.asarray(iou, dtype=np.float64)
    defined = iou[~np.isnan(iou)]
    return float(defined.mean()) if defined.size else math.nan


def pixel_accuracy(conf: np.ndarray) -> float:
    total = float(np.asarray(conf).sum())
    return float(np.trace(conf)) / total if total else math.nan


def drop_background(conf: np.ndarray) -> np.ndarray:
    """The matrix without class 0's row and column (the released code's ignore_background)."""
    return np.asarray(conf)[1:, 1:]


def ratio(num: float, den: float) -> float:
    """num / den, NaN when den is 0 (an undefined precision or recall is not 0)."""
    return num / den if den else math.nan


@dataclass
class PresenceCounts:
    """Image-level presence of one concept (or all together): was it kept where GT has it, removed where not.

    tp: kept and present; fp: kept but absent from GT; fn: removed (or empty) but present; tn: removed
    and absent.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, predicted: bool, present: bool) -> None:
        if predicted and present:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif present:
            self.fn += 1
        else:
            self.tn += 1

    def __iadd__(self, other: PresenceCounts) -> Self:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn
        return self

    @property
    def precision(self) -> float:
        return ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def to_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn, "precision": nan_to_none(self.precision),
                "recall": nan_to_none(self.recall), "f1": nan_to_none(self.f1)}


def binary_iou(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(intersection, union) pixel counts of two bool masks."""
    return int(np.count_nonzero(a & b)), int(np.count_nonzero(a | b))


def nan_to_none(value: float | None) -> float | None:
    """JSON has no NaN: an undefined number is written as null."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table; '-' when undefined."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
