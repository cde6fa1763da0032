"""Keeping each image's CaR result as it was before a person edited it, so its quality can be measured.

What the project kept before this module: an auto-label's row holds the mask, score and provenance
(concept, status, thresholds), but a person's edit overwrites the mask (``Project.update_mask``), deleting
a mask deletes the row, relabelling changes its category, and the undo history lives in memory only. So
the pre-edit auto-label was lost, and with it any way to say how good CaR was on the reviewed images.

Now, wherever CaR results are saved for an image (a batch or folder run, a run in the window), a compact
copy goes into the project's settings under ``quality.auto_labels.<image id>``, in the same transaction
when the caller has one open: the concepts asked (removed ones included, for presence), each one's
status and score, its mask as compressed COCO RLE (the same codec as the annotations), and the thresholds
used. A re-run replaces it; edits never touch it. ``keep_auto_labels`` writes it and
``pre_edit_auto_labels`` is the only reader, so when the provenance record moves these two functions are
all that change. Qt-free and torch-free.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..annotations import mask_codec
from ..imagefiles import max_pixels

log = logging.getLogger(__name__)

#: Settings key prefix: ``quality.auto_labels.<image id>`` -> the snapshot (a JSON object).
AUTO_LABELS_SETTING = "quality.auto_labels."
FORMAT = 1


@dataclass(frozen=True)
class AutoConcept:
    """One asked concept of a CaR run: its names, status ('kept', 'removed', ...), score and mask."""

    name: str
    synonyms: tuple[str, ...]
    status: str
    score: float | None
    counts: str | None          # compressed COCO RLE counts of the full-image mask; None when empty

    def mask(self, height: int, width: int) -> np.ndarray:
        if self.counts is None:
            return np.zeros((height, width), bool)
        return mask_codec.decode_full_rle(height, width, self.counts)

    @property
    def label(self) -> str:
        return " | ".join((self.name, *self.synonyms))


@dataclass(frozen=True)
class AutoLabelSnapshot:
    height: int
    width: int
    concepts: tuple[AutoConcept, ...]
    settings: dict[str, Any]


def keep_auto_labels(project, image_id: int, result) -> bool:
    """Store ``result`` (a CaRResult, or anything with ``concepts`` of name / query_text / mask / score /
    status and a ``config`` dict) as the image's auto-labels before edits. Returns False (and stores
    nothing) when the masks do not have the image's size."""
    record = project.get_image(image_id)
    concepts = []
    for c in result.concepts:
        mask = np.asarray(c.mask)
        if mask.shape != (record.height, record.width):
            log.warning("auto-labels of image %d not kept: mask %s, image %dx%d", image_id, mask.shape,
                        record.width, record.height)
            return False
        counts = mask_codec.encode(mask).rle.decode("ascii") if mask.any() else None
        synonyms = [s.strip() for s in str(c.query_text).split(",") if s.strip()][1:]
        status = getattr(c.status, "value", c.status)
        concepts.append({"name": c.name, "synonyms": synonyms, "status": str(status),
                         "score": None if c.score is None else float(c.score), "rle": counts})
    config = getattr(result, "config", {}) or {}
    settings = {k: config[k] for k in ("preset", "theta", "eta", "lam", "prompts", "sam_mode") if k in config}
    project.set_setting(f"{AUTO_LABELS_SETTING}{image_id}", {
        "format": FORMAT, "size": [record.height, record.width], "concepts": concepts, "settings": settings})
    return True


def pre_edit_auto_labels(project, image_id: int) -> AutoLabelSnapshot | None:
    """The image's CaR result as saved before any edit, or None (never auto-labelled since this was kept,
    or a record this version cannot read). Sizes are checked against the image before anything is decoded."""
    value = project.get_setting(f"{AUTO_LABELS_SETTING}{image_id}")
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        return None
    try:
        record = project.get_image(image_id)
        height, width = (int(v) for v in value["size"])
        if (height, width) != (record.height, record.width) or height * width > max_pixels():
            return None
        concepts = tuple(
            AutoConcept(str(c["name"]), tuple(str(s) for s in c.get("synonyms") or ()), str(c.get("status", "")),
                        None if c.get("score") is None else float(c["score"]),
                        c["rle"] if isinstance(c.get("rle"), str) else None)
            for c in value["concepts"])
    except (KeyError, TypeError, ValueError):
        return None
    settings = value.get("settings")
    return AutoLabelSnapshot(height, width, concepts, settings if isinstance(settings, dict) else {})
