"""How good were CaR's auto-labels on the images a person reviewed: each image's auto-label record
(``annotations.auto_labels``: what CaR produced before any edit) against the reviewed masks, per concept
and overall. The window's Quality panel shows it.

For each reviewed image with a complete record, and each concept CaR was asked there: the auto mask
(empty when CaR removed the concept, or when a person had to force-keep it) against the union of the
image's current masks of the matching category (by name or synonym; empty when the person deleted or
never drew one). IoU per concept is accumulated over images (sum of intersections over sum of unions, as
mIoU's classes are); presence counts kept-and-present, kept-but-absent, removed-but-present and
removed-and-absent. A record that lacks some concepts (a project upgraded from before the record
existed, where a person had edited a CaR mask) is left out, as an image without one. Qt-free,
torch-free; reads through the project's public API only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..annotations.auto_labels import concept_key, read_auto_labels
from ..cancel import CancelToken, check
from .labels import CategorySpec, match_categories
from .metrics import PresenceCounts, binary_iou, ratio


@dataclass
class ConceptQuality:
    name: str
    images: int = 0
    intersection: int = 0
    union: int = 0
    presence: PresenceCounts = field(default_factory=PresenceCounts)

    @property
    def iou(self) -> float:
        return ratio(self.intersection, self.union)


@dataclass
class QualityReport:
    reviewed: int = 0              # images marked reviewed
    compared: int = 0              # of those, with a complete auto-label record
    concepts: list[ConceptQuality] = field(default_factory=list)
    presence: PresenceCounts = field(default_factory=PresenceCounts)

    @property
    def without_auto_labels(self) -> int:
        return self.reviewed - self.compared

    @property
    def mean_iou(self) -> float:
        values = [c.iou for c in self.concepts if not math.isnan(c.iou)]
        return float(np.mean(values)) if values else math.nan


def compare_reviewed(project, *, cancel: CancelToken | None = None,
                     progress: Callable[[int, int], object] | None = None) -> QualityReport:
    """The QualityReport of ``project`` (see the module docstring)."""
    report = QualityReport()
    categories = project.list_categories()
    specs = [CategorySpec(c.name, tuple(c.synonyms), c.id) for c in categories]
    by_key: dict[str, ConceptQuality] = {}     # ``concept_key`` -> its figures
    matched: dict[str, int | None] = {}        # ``concept_key`` -> category id
    images = project.list_images("reviewed")
    report.reviewed = len(images)
    for n, record in enumerate(images, 1):
        check(cancel)
        snapshot = read_auto_labels(project, record.id)
        if snapshot is None or snapshot.lost:
            continue
        report.compared += 1
        anns = project.list_annotations(record.id)
        for concept in snapshot.concepts:
            key = concept_key(concept.concept)
            if key not in matched:
                mapping, _ = match_categories([CategorySpec.parse(concept.concept)], specs)
                matched[key] = specs[mapping[0]].source_id if mapping else None
            cid = matched[key]
            gt = np.zeros((record.height, record.width), bool)
            for a in anns:
                if a.category_id == cid and a.area:
                    crop, (x, y, w, h) = project.get_mask_crop(a.id)
                    gt[y:y + h, x:x + w] |= crop
            auto = concept.mask(record.height, record.width) if concept.kept else np.zeros_like(gt)
            q = by_key.setdefault(key, ConceptQuality(concept.name))
            inter, union = binary_iou(auto, gt)
            q.images += 1
            q.intersection += inter
            q.union += union
            q.presence.add(bool(auto.any()), bool(gt.any()))
        if progress is not None:
            progress(n, len(images))
    report.concepts = sorted(by_key.values(), key=lambda q: q.name.casefold())
    for q in report.concepts:
        report.presence += q.presence
    return report


def advice(report: QualityReport, *, min_images: int = 3, good_iou: float = 0.7, good_f1: float = 0.9) -> str:
    """One sentence for the annotator: enough evidence yet, and auto-label the rest or tune first."""
    if report.compared == 0:
        if report.reviewed:
            return ("The reviewed images have no stored auto-labels (they were reviewed before this version "
                    "kept them, or labelled by hand): auto-label and review a few more.")
        return "Review a few auto-labelled images (Edit > Mark image reviewed) to see how good the auto-labels are."
    if report.compared < min_images:
        return f"Only {report.compared} reviewed image(s) with auto-labels: review a few more for a reliable figure."
    miou, f1 = report.mean_iou, report.presence.f1
    if not math.isnan(miou) and miou >= good_iou and not math.isnan(f1) and f1 >= good_f1:
        return "The auto-labels agree well with your reviews: auto-labelling the rest should save you time."
    return ("The auto-labels often needed correcting: tune the thresholds on the reviewed images first "
            "(car-desktop tune <project> --save), then auto-label the rest.")
