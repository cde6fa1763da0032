"""What CaR produced for an image before any person's edit: the one auto-label record of a project.

An annotation row holds the *current* mask: a person's edit overwrites it, deleting a mask deletes
the row, relabelling changes its category. What CaR said is kept apart, once per image, in the
project's settings under ``car.auto_labels.<image id>`` (``AutoLabels``): every concept the run was
asked (the removed ones too), each with CaR's verdict (``status``: kept, kept without competition,
removed, or forced by a person), its score and its mask as compressed COCO RLE, plus the engine
settings of the run. Because it survives a person deleting a wrongly kept mask, it is what the
Quality panel compares the reviewed masks with (presence precision needs exactly that case).

Only ``car_results`` writes it, in the transaction that stores the CaR masks (``apply_car_result``,
``force_keep``); ``merge_projects`` copies it with its image, and the schema upgrade to version 3
rebuilds it for older projects (``from_stored_masks``). A re-run replaces it, except that a concept
whose category keeps a person-edited CaR mask (the masks a re-run leaves alone) keeps its entry, so
the record always describes the masks the image's annotations descend from. Readers:
``read_auto_labels(project, image_id)`` and ``auto_mask(project, annotation_id)``.

Not to be confused with the image's removed-concept list (``car_results.removed_concepts``): that
is the window's state (the removed concepts still shown as rows, which force-keeping or dismissing
one changes), not history.

Every number read back is checked before it sizes memory: the size must be the image's and within
the pixel limit, and each RLE must add up to that size before it is decoded. Qt-free, torch-free.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from ..fileio import finite_or_none
from ..imagefiles import max_pixels
from . import mask_codec
from .provenance import FORCED, KEPT, KEPT_ALONE, REMOVED

if TYPE_CHECKING:
    from .store import Project

log = logging.getLogger(__name__)

#: Settings key prefix: ``car.auto_labels.<image id>`` -> the record (a JSON object).
AUTO_LABELS_SETTING: Final = "car.auto_labels."
#: Version of the record's JSON.
FORMAT: Final = 1


def concept_key(label: str) -> str:
    """How a concept is recognised: its name (the part before the first "|"), case- and space-insensitive,
    as the project names the category made from it ("Car | automobile" and "car" are one concept)."""
    return " ".join(label.split("|")[0].split()).casefold()


@dataclass(frozen=True)
class AutoConcept:
    """One concept of a CaR run: the user's form ("car | automobile"), CaR's verdict, score and mask."""

    concept: str
    status: str
    score: float | None = None
    counts: str | None = None     # compressed COCO RLE counts of the full-image mask; None: no mask

    @property
    def name(self) -> str:
        return self.concept.split("|")[0].strip()

    @property
    def kept(self) -> bool:
        """CaR kept the concept by itself, with a mask (not removed, empty, or forced by a person)."""
        return self.status in (KEPT, KEPT_ALONE) and self.counts is not None

    def mask(self, height: int, width: int) -> np.ndarray:
        """The mask CaR made (all False when it made none)."""
        if self.counts is None:
            return np.zeros((height, width), bool)
        return mask_codec.decode_full_rle(height, width, self.counts)

    def to_dict(self) -> dict[str, Any]:
        return {"concept": self.concept, "status": self.status, "score": self.score, "rle": self.counts}


@dataclass(frozen=True)
class AutoLabels:
    """One image's record. ``lost`` names concepts whose CaR mask a person had edited before the project
    kept this record (projects upgraded from before schema 3): the record is incomplete for them."""

    height: int
    width: int
    concepts: tuple[AutoConcept, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    lost: tuple[str, ...] = ()

    def find(self, concept: str) -> AutoConcept | None:
        """The entry of ``concept`` (any spelling of its name, see ``concept_key``)."""
        key = concept_key(concept)
        return next((c for c in self.concepts if concept_key(c.concept) == key), None)

    def with_concept(self, entry: AutoConcept) -> AutoLabels:
        """This record with ``entry`` in place of the entry of its concept (or added at the end)."""
        key = concept_key(entry.concept)
        rest = [c for c in self.concepts if concept_key(c.concept) != key]
        if len(rest) == len(self.concepts):
            return dataclasses.replace(self, concepts=(*self.concepts, entry))
        return dataclasses.replace(self, concepts=tuple(entry if concept_key(c.concept) == key else c
                                                        for c in self.concepts))

    def after_run(self, run: AutoLabels, protected: Collection[str]) -> AutoLabels:
        """The record once ``run`` is stored over this one: ``run``'s entries, except that a concept in
        ``protected`` (the keys of categories a person-edited CaR mask protects) keeps its entry here,
        also when the run did not ask about it."""
        keep = {concept_key(c.concept): c for c in self.concepts if concept_key(c.concept) in protected}
        entries = [keep.pop(concept_key(c.concept), c) for c in run.concepts]
        lost = tuple(c for c in self.lost if concept_key(c) in protected)
        return dataclasses.replace(run, concepts=(*entries, *keep.values()), lost=lost)

    def to_dict(self) -> dict[str, Any]:
        """The stored form (a JSON object)."""
        return {"format": FORMAT, "size": [self.height, self.width], "concepts": [c.to_dict() for c in self.concepts],
                "settings": self.settings, "lost": list(self.lost)}

    @classmethod
    def from_value(cls, value: Any, height: int, width: int) -> AutoLabels | None:
        """A stored record for an image of ``height`` x ``width``, or None when it is not one this
        version can read, or not for this size (checked before any mask is decoded)."""
        if not isinstance(value, dict) or value.get("format") != FORMAT:
            return None
        try:
            size = [int(v) for v in value["size"]]
            if size != [height, width] or height * width > max_pixels():
                return None
            concepts = tuple(_concept(c, height * width) for c in value["concepts"])
            lost = tuple(str(c) for c in value.get("lost") or ())
        except (KeyError, TypeError, ValueError):
            return None
        settings = value.get("settings")
        return cls(height, width, concepts, settings if isinstance(settings, dict) else {}, lost)


def _concept(row: Any, pixels: int) -> AutoConcept:
    """One stored entry; ValueError (or KeyError, TypeError) when it is not a valid one."""
    concept, status, score, counts = row["concept"], row["status"], row.get("score"), row.get("rle")
    if not isinstance(concept, str) or not concept_key(concept) or not isinstance(status, str):
        raise ValueError("an entry without a concept or a status")
    if score is not None and finite_or_none(score) is None:
        raise ValueError("a score that is not a number")
    # pycocotools decodes without bounds checks: the runs must add up to the image first.
    if counts is not None and (not isinstance(counts, str)
                               or int(mask_codec.rle_counts(counts.encode("ascii")).sum()) != pixels):
        raise ValueError("an RLE that does not fit the image")
    return AutoConcept(concept, status, finite_or_none(score), counts)


# ------------------------------------------------------------------------------------------ reading
def read_auto_labels(project: Project, image_id: int) -> AutoLabels | None:
    """The image's record, or None (never auto-labelled, or a record this version cannot read)."""
    value = project.get_setting(f"{AUTO_LABELS_SETTING}{image_id}")
    if value is None:
        return None
    image = project.get_image(image_id)
    record = AutoLabels.from_value(value, image.height, image.width)
    if record is None:
        log.warning("the auto-label record of image %d cannot be read; it is ignored", image_id)
    return record


def auto_mask(project: Project, annotation_id: int) -> np.ndarray | None:
    """The mask CaR made for this annotation, before any person's edit: its image's record looked up by
    the concept the mask was made for (``provenance.concept``, else its category). None for masks CaR
    did not make (manual, SAM, imported), for a concept CaR removed, and when the record does not have
    it (a CaR mask edited in a project older than schema 3)."""
    ann = project.get_annotation(annotation_id)
    if ann.source != "car":
        return None
    record = read_auto_labels(project, ann.image_id)
    if record is None:
        return None
    entry = record.find(ann.provenance.concept or project.get_category(ann.category_id).label)
    if entry is None or entry.counts is None:
        return None
    return entry.mask(record.height, record.width)


# ------------------------------------------------------------------------------------------ writing
def write_auto_labels(project: Project, image_id: int, record: AutoLabels) -> None:
    """Store ``record`` as the image's (for ``car_results``, inside its transaction: nobody else writes it)."""
    project.set_setting(f"{AUTO_LABELS_SETTING}{image_id}", record.to_dict())


@dataclass(frozen=True)
class StoredMask:
    """A CaR mask as an older project stored it (for ``from_stored_masks``)."""

    concept: str
    status: str | None
    score: float | None
    counts: bytes
    edited: bool


def from_stored_masks(height: int, width: int, masks: Iterable[StoredMask], removed: Iterable[tuple[str, Any]],
                      settings: Mapping[str, Any]) -> AutoLabels:
    """Best effort, for projects from before the record existed (schema upgrade to version 3): an unedited
    CaR mask is still as CaR made it; a force-kept one says CaR removed the concept (its mask may have
    been edited since, so it is not kept); an edited one's first version is gone (listed in ``lost``).
    ``removed`` holds (concept, score) of the image's removed-concept list."""
    entries: list[AutoConcept] = []
    lost: list[str] = []
    masks = list(masks)
    for m in sorted(masks, key=lambda m: m.edited):   # unedited first: they hold what CaR made
        if next((c for c in entries if concept_key(c.concept) == concept_key(m.concept)), None) is not None:
            continue
        if not m.edited:
            entries.append(AutoConcept(m.concept, m.status or KEPT, m.score, m.counts.decode("ascii")))
        elif m.status == FORCED:
            entries.append(AutoConcept(m.concept, FORCED, m.score))
        elif m.concept not in lost:
            lost.append(m.concept)
    record = AutoLabels(height, width, tuple(entries), dict(settings), tuple(lost))
    for concept, score in removed:
        if record.find(concept) is None:
            record = record.with_concept(AutoConcept(concept, REMOVED, finite_or_none(score)))
    return record
