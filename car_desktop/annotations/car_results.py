"""Applying a CaR result to a project: the one rule that the window and the folder loop share.

``apply_car_result(project, image_id, result, origin=...)`` turns an engine result into stored rows in
one transaction:

* the image's CaR masks that no person edited are replaced by the new ones;
* a person's work is protected by one key, the *category*: a concept whose category already has a
  person-edited CaR mask on this image gets no new mask (a re-run never duplicates a corrected mask);
  manual, SAM and imported masks are never touched;
* each new mask carries its ``Provenance`` (built here, from the result, and nowhere else);
* what CaR said about every concept asked (masks, removed ones, scores, settings) becomes the image's
  auto-label record (``auto_labels``), the one copy of the result that a person's edits never touch;
* the concepts CaR removed (or that came back empty) are stored as the image's removed-concept list,
  the window's rows of removed concepts (UI state, not history), from which a person can force one
  back (``force_keep``) or dismiss it;
* an image still 'new' becomes 'auto'.

Concepts are stored in the user's form, "car | automobile" (``Concept.label``); the store turns that
into a category (name plus synonyms). The engine's ``CaRResult`` is plain data; it is named here for
the type checker only, so this module imports neither the engine nor torch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .auto_labels import AutoConcept, AutoLabels, concept_key, read_auto_labels, write_auto_labels
from .models import Annotation, Category
from .provenance import FORCED, KEPT, REMOVED, Provenance
from .schema import REMOVED_SETTING
from .store import Project

if TYPE_CHECKING:
    from ..engine.results import CaRResult

log = logging.getLogger(__name__)



# ------------------------------------------------------------------ what is stored
@dataclass(frozen=True)
class CarMask:
    """One kept concept, ready to store: its mask, score and provenance (``provenance.concept`` names it)."""

    mask: np.ndarray
    score: float
    provenance: Provenance


@dataclass(frozen=True)
class RemovedConcept:
    """A concept CaR found absent (or whose mask came back empty), as the image's list keeps it."""

    concept: str                 # "car | automobile"
    status_text: str
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"concept": self.concept, "status_text": self.status_text, "score": self.score}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> RemovedConcept | None:
        concept = row.get("concept")
        if not isinstance(concept, str) or not concept.strip():
            return None
        score = row.get("score")
        return cls(concept, str(row.get("status_text") or "removed"),
                   float(score) if isinstance(score, (int, float)) else None)


@dataclass(frozen=True)
class AddedMask:
    """A mask ``apply_car_result`` or ``force_keep`` stored."""

    annotation: Annotation
    category: Category
    mask: np.ndarray


@dataclass
class CarApplied:
    """What applying a result changed, for the window to mirror in its layers and undo history."""

    added: list[AddedMask] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)        # annotation ids replaced
    protected: list[str] = field(default_factory=list)      # concepts left alone: a person edited them
    removed: list[RemovedConcept] = field(default_factory=list)
    status_changed: bool = False                            # the image went from 'new' to 'auto'
    skipped: str | None = None                              # why nothing was written (``skip_if``)


# ------------------------------------------------------------------ reading a result
def replaceable(annotation: Annotation) -> bool:
    """A mask a new CaR run on its image replaces: CaR's own, not edited by a person."""
    return annotation.source == "car" and not annotation.edited


def car_masks(result: CaRResult, *, origin: str,
              run_key: str | None = None) -> tuple[list[CarMask], list[RemovedConcept]]:
    """Split a result into the masks to store (with their provenance) and the removed concepts."""
    common = Provenance(models=dict(result.model_names), config=Provenance.pick_config(result.config),
                        steps=len(result.steps), test_models=bool(result.test_models), run_key=run_key,
                        origin=origin)
    kept: list[CarMask] = []
    removed: list[RemovedConcept] = []
    for c in result.concepts:
        if c.status == REMOVED:
            removed.append(RemovedConcept(c.concept.label, c.status_text, c.removed_score))
        elif not c.mask.any():
            removed.append(RemovedConcept(c.concept.label, f"{c.status_text}, empty mask", float(c.score)))
        else:
            kept.append(CarMask(c.mask, float(c.score), dataclasses.replace(
                common, concept=c.concept.label, status=str(c.status), status_text=c.status_text,
                sam_accepted=c.sam_accepted, sam_iou=c.sam_iou)))
    return kept, removed


# ------------------------------------------------------------------ writing
def apply_car_result(project: Project, image_id: int, result: CaRResult, *, origin: str,
                     run_key: str | None = None, set_status: bool = True,
                     skip_if: Callable[[], str | None] | None = None) -> CarApplied:
    """Store a CaR result for an image (see the module docstring); one transaction.

    ``skip_if`` is asked inside the transaction (after the masks are encoded); when it gives a reason,
    nothing is written and the reason comes back as ``skipped`` (the folder loop re-checks there that
    no person took the image over while the engine ran)."""
    kept, removed = car_masks(result, origin=origin, run_key=run_key)
    return replace_car_masks(project, image_id, kept, removed, set_status=set_status,
                             order=[c.concept.label for c in result.concepts], skip_if=skip_if,
                             settings=Provenance.pick_config(result.config))


def replace_car_masks(project: Project, image_id: int, masks: Sequence[CarMask],
                      removed: Sequence[RemovedConcept] = (), *, set_status: bool = True,
                      order: Sequence[str] = (), skip_if: Callable[[], str | None] | None = None,
                      settings: Mapping[str, Any] | None = None) -> CarApplied:
    """The storing half of ``apply_car_result``, for masks already paired with their provenance.
    Categories are created in ``order`` (the concepts as typed) first, so their ids are stable;
    ``settings`` are the engine settings the auto-label record keeps."""
    encoded = [(m, project.encode_mask(image_id, m.mask)) for m in masks]  # the slow part, outside the lock
    image = project.get_image(image_id)
    entries = [AutoConcept(m.provenance.concept, m.provenance.status or KEPT, m.score,
                           enc.rle.decode("ascii") if enc.area else None) for m, enc in encoded]
    entries += [AutoConcept(r.concept, REMOVED, r.score) for r in removed]
    rank = {concept_key(label): i for i, label in enumerate(order)}
    entries.sort(key=lambda e: rank.get(concept_key(e.concept), len(rank)))
    run = AutoLabels(image.height, image.width, tuple(entries), dict(settings or {}))
    out = CarApplied()
    with project.batch():
        out.skipped = skip_if() if skip_if is not None else None
        if out.skipped is not None:
            return out
        for label in order:
            project.get_or_create_category(label)
        existing = project.list_annotations(image_id)
        protected = {a.category_id for a in existing if a.source == "car" and a.edited}
        for a in existing:
            if replaceable(a):
                project.delete_annotation(a.id)
                out.deleted.append(a.id)
        for m, enc in encoded:
            category = project.get_or_create_category(m.provenance.concept)
            if category.id in protected:
                out.protected.append(m.provenance.concept)
            elif enc.area:
                ann_id = project.add_encoded_annotation(image_id, category.id, enc, m.score, "car", m.provenance,
                                                        edited=False)
                out.added.append(AddedMask(project.get_annotation(ann_id), category, m.mask))
        for r in removed:
            if project.get_or_create_category(r.concept).id in protected:
                out.protected.append(r.concept)
            else:
                out.removed.append(r)
        set_removed_concepts(project, image_id, out.removed)
        previous = read_auto_labels(project, image_id)
        keys = {concept_key(project.get_category(cid).name) for cid in protected}
        write_auto_labels(project, image_id, run if previous is None else previous.after_run(run, keys))
        if set_status and project.get_image(image_id).status == "new":
            project.set_image_status(image_id, "auto")
            out.status_changed = True
    if out.protected:
        log.info("image %d: kept the person's masks of %s", image_id, ", ".join(out.protected))
    return out


def force_keep(project: Project, image_id: int, result: CaRResult, concept: str, *, origin: str) -> AddedMask | None:
    """Keep a removed ``concept`` after all, with the mask of a run on that concept alone (``result``).

    The mask counts as a person's decision (edited, status 'forced'), so later runs leave it alone;
    the concept leaves the image's removed list, and the auto-label record keeps the mask with the
    status 'forced' (CaR itself removed the concept). Returns None when the run found nothing.
    """
    kept, _ = car_masks(result, origin=origin)
    if not kept:
        return None
    first = kept[0]
    prov = dataclasses.replace(first.provenance, concept=concept, status=FORCED,
                               status_text=f"force-kept ({first.provenance.status_text})")
    enc = project.encode_mask(image_id, first.mask)
    image = project.get_image(image_id)
    with project.batch():
        category = project.get_or_create_category(concept)
        ann_id = project.add_encoded_annotation(image_id, category.id, enc, first.score, "car", prov, edited=True)
        set_removed_concepts(project, image_id, [r for r in removed_concepts(project, image_id)
                                                 if concept_key(r.concept) != concept_key(concept)])
        record = read_auto_labels(project, image_id) or AutoLabels(image.height, image.width)
        write_auto_labels(project, image_id, record.with_concept(
            AutoConcept(concept, FORCED, first.score, enc.rle.decode("ascii"))))
    return AddedMask(project.get_annotation(ann_id), category, first.mask)


# ------------------------------------------------------------------ the removed-concept list
def removed_concepts(project: Project, image_id: int) -> list[RemovedConcept]:
    """The concepts CaR removed on this image at its last run (that a person has not dismissed)."""
    value = project.get_setting(f"{REMOVED_SETTING}{image_id}", [])
    rows = value if isinstance(value, list) else []
    return [r for r in (RemovedConcept.from_dict(v) for v in rows if isinstance(v, dict)) if r is not None]


def set_removed_concepts(project: Project, image_id: int, removed: Sequence[RemovedConcept]) -> None:
    project.set_setting(f"{REMOVED_SETTING}{image_id}", [r.to_dict() for r in removed] or None)
