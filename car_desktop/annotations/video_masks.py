"""Writing masks on a clip's frames: CaR's result on a key frame, SAM 2's masks between key frames,
and the journal that undoes a propagation run as one step.

``store_key_result`` stores a CaR result on a frame through ``car_results.replace_car_masks`` (the one
rule for CaR results), after the frame's unedited propagated masks give way (the frame becomes a key
frame) and with the concepts a person already corrected on that frame left alone. Each mask's
provenance says ``frame_role="key"``; each kept concept gets its clip track.

``store_propagated`` writes one frame of a run: per object, the unedited propagated mask is replaced
by SAM 2's (``frame_role="propagated"``, ``from_frame`` = the key frame, source ``sam``, the presence
score as score); an empty mask leaves the object without a mask there (lost). A person's mask (edited)
and CaR's own mask on a key frame are never replaced. A frame still 'new' becomes 'auto'.

A ``Journal`` collects what a run changed (the rows it added, copies of the rows it replaced, the
run records before it, the key frames it made as they were); ``undo`` puts it all back in one
transaction and returns the journal that redoes it. A mask a person edited after the run is kept.
Never Qt or torch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import mask_codec, video_store
from .car_results import REMOVED_SETTING, CarApplied, car_masks, replace_car_masks
from .provenance import FRAME_KEY, FRAME_PROPAGATED, ORIGIN_VIDEO, Provenance
from .store import Project

if TYPE_CHECKING:
    from ..engine.results import CaRResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowCopy:
    """An annotation as it was, to put it back (its mask as the stored full-image RLE)."""

    image_id: int
    category_id: int
    rle: dict
    score: float | None
    source: str
    edited: bool
    provenance: Provenance

    @property
    def nbytes(self) -> int:
        return len(self.rle["counts"]) + 200


@dataclass(frozen=True)
class KeyBefore:
    """A frame's key-frame record and removed-concept list before a run made it a key frame."""

    frame: int
    run_key: str | None
    was_key: bool
    removed: Any


@dataclass
class Journal:
    """What one run changed in one clip (see the module docstring)."""

    video_id: int
    label: str
    added: list[int] = field(default_factory=list)
    removed: list[RowCopy] = field(default_factory=list)
    records: list[tuple] | None = None      # the clip's run records before the run
    keys: list[KeyBefore] = field(default_factory=list)   # key frames the run made, as they were

    @property
    def nbytes(self) -> int:
        return 16 * len(self.added) + sum(r.nbytes for r in self.removed)

    @property
    def empty(self) -> bool:
        return not self.added and not self.removed


def copy_rows(project: Project, ann_ids: Sequence[int]) -> list[RowCopy]:
    out = []
    for ann_id in ann_ids:
        ann = project.get_annotation(ann_id)
        out.append(RowCopy(ann.image_id, ann.category_id, project.get_rle(ann_id), ann.score, ann.source, ann.edited,
                           ann.provenance))
    return out


def restore_rows(project: Project, rows: Sequence[RowCopy]) -> list[int]:
    """Insert copies again (one transaction); returns their new ids."""
    encoded = [mask_codec.encode_rle(r.rle) for r in rows]
    with project.batch():
        return [project.add_encoded_annotation(r.image_id, r.category_id, enc, r.score, r.source, r.provenance,
                                               r.edited) for r, enc in zip(rows, encoded)]


def undo(project: Project, journal: Journal) -> Journal:
    """Undo ``journal`` (one transaction); returns the journal that redoes it."""
    redo = Journal(journal.video_id, journal.label)
    with project.batch():
        existing = {a for a in journal.added if _exists(project, a)}
        kept = {a for a in existing if project.get_annotation(a).edited}  # a person's work since the run
        gone = [a for a in journal.added if a in existing and a not in kept]
        redo.removed = copy_rows(project, gone)
        for ann_id in gone:
            project.delete_annotation(ann_id)
        touched = {(project.get_annotation(a).image_id, project.get_annotation(a).category_id) for a in kept}
        back = [r for r in journal.removed if (r.image_id, r.category_id) not in touched]
        redo.added = restore_rows(project, back)
        if journal.records is not None:
            redo.records = video_store.run_records(project, journal.video_id)
            video_store.set_run_records(project, journal.video_id, journal.records)
        for before in reversed(journal.keys):
            redo.keys.append(_key_state(project, journal.video_id, before.frame))
            image_id = video_store.frame_image_id(project, journal.video_id, before.frame)
            project.set_setting(f"{REMOVED_SETTING}{image_id}", before.removed)
            if before.was_key:
                video_store.set_key_frame(project, journal.video_id, before.frame, before.run_key)
            else:
                video_store.remove_key_frame(project, journal.video_id, before.frame)
    if kept:
        log.info("undo %s: kept %d mask(s) a person edited since", journal.label, len(kept))
    return redo


def _key_state(project: Project, video_id: int, frame: int) -> KeyBefore:
    keys = video_store.key_frames(project, video_id)
    image_id = video_store.frame_image_id(project, video_id, frame)
    return KeyBefore(frame, keys.get(frame), frame in keys, project.get_setting(f"{REMOVED_SETTING}{image_id}"))


def _exists(project: Project, ann_id: int) -> bool:
    return bool(project.query("SELECT 1 FROM annotations WHERE id = ?", (ann_id,)))


# ------------------------------------------------------------------------------------ key frames
def store_key_result(project: Project, video_id: int, index: int, result: CaRResult, *, run_key: str | None = None,
                     origin: str = ORIGIN_VIDEO, journal: Journal | None = None) -> CarApplied:
    """Store CaR's result on frame ``index`` of a clip as a key frame (see the module docstring)."""
    image_id = video_store.frame_image_id(project, video_id, index)
    if journal is not None:
        journal.keys.append(_key_state(project, video_id, index))
    kept, removed = car_masks(result, origin=origin, run_key=run_key)
    kept = [dataclasses.replace(m, provenance=dataclasses.replace(m.provenance, frame_role=FRAME_KEY)) for m in kept]
    with project.batch():
        order = [c.concept.label for c in result.concepts]
        for label in order:
            project.get_or_create_category(label)
        existing = project.list_annotations(image_id)
        corrected = {a.category_id for a in existing if a.edited}
        kept = [m for m in kept if project.get_or_create_category(m.provenance.concept).id not in corrected]
        removed = [r for r in removed if project.get_or_create_category(r.concept).id not in corrected]
        stale = [a.id for a in existing if not a.edited and a.provenance.frame_role == FRAME_PROPAGATED]
        if journal is not None:
            journal.removed += copy_rows(project, stale)
        for ann_id in stale:
            project.delete_annotation(ann_id)
        applied = replace_car_masks(project, image_id, kept, removed, order=order)
        applied.deleted[:0] = stale
        for added in applied.added:
            video_store.track_for(project, video_id, added.category.id)
            if journal is not None:
                journal.added.append(added.annotation.id)
        video_store.set_key_frame(project, video_id, index, run_key)
    return applied


# ---------------------------------------------------------------------------------- propagation
def store_propagated(project: Project, video_id: int, index: int, masks: Mapping[int, np.ndarray],
                     scores: Mapping[int, float], provenance: Mapping[int, Provenance],
                     journal: Journal | None = None) -> list[int]:
    """Write SAM 2's masks of frame ``index`` (``masks``/``scores``/``provenance`` by category id); returns
    the ids of the rows added. See the module docstring for what is never replaced."""
    image_id = video_store.frame_image_id(project, video_id, index)
    encoded = {c: mask_codec.encode(m) for c, m in masks.items() if np.any(m)}  # outside the transaction
    added: list[int] = []
    with project.batch():
        anns = project.list_annotations(image_id)
        for category_id in masks:
            mine = [a for a in anns if a.category_id == category_id]
            if any(a.edited or a.provenance.frame_role == FRAME_KEY for a in mine):
                continue
            stale = [a.id for a in mine if a.provenance.frame_role == FRAME_PROPAGATED or a.source == "sam"]
            if journal is not None:
                journal.removed += copy_rows(project, stale)
            for ann_id in stale:
                project.delete_annotation(ann_id)
            enc = encoded.get(category_id)
            if enc is not None:
                prov = dataclasses.replace(provenance[category_id], origin=ORIGIN_VIDEO, frame_role=FRAME_PROPAGATED)
                added.append(project.add_encoded_annotation(image_id, category_id, enc, scores.get(category_id), "sam",
                                                            prov, edited=False))
        if added and project.get_image(image_id).status == "new":
            project.set_image_status(image_id, "auto")
    if journal is not None:
        journal.added += added
    return added
