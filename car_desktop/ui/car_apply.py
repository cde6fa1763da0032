"""Putting a CaR result on the open image: the project rows are written by
``annotations.car_results`` (the same rule the folder loop uses), then the ``Annotator`` mirrors them
as layers, in one undo group, and shows the concepts CaR removed. A run whose image is no longer shown is
stored on that image all the same (``land_car_result``) and handed to the ``Annotator`` for that image's
undo history."""

from __future__ import annotations

import logging

from ..annotations.car_results import CarApplied, apply_car_result, force_keep, replaceable
from ..annotations.provenance import ORIGIN_WINDOW
from ..annotations.store import Project
from .annotator import Annotator, Landed
from .engine_client import CaRResult
from .layers import MaskLayer

log = logging.getLogger(__name__)


def created_categories(project: Project, known: set[int]) -> tuple[int, ...]:
    """The categories made since ``known`` was read (a run's undo removes them again when unused)."""
    return tuple(c.id for c in project.list_categories() if c.id not in known)


def show_car_result(annotator: Annotator, result: CaRResult) -> list[MaskLayer]:
    """Replace the open image's unedited CaR masks with ``result``; returns the layers added."""
    project, image_id = annotator.project, annotator.image_id
    if project is None or image_id is None:
        annotator.message("Open a folder or project first: CaR results are saved into it.")
        return []
    known = {c.id for c in project.list_categories()}
    ok, applied = annotator.guard(apply_car_result, project, image_id, result, origin=ORIGIN_WINDOW)
    if not ok or applied is None:
        return []
    layers = annotator.adopt(applied.added, applied.deleted, created_categories(project, known))
    annotator.show_removed(applied.removed)
    if applied.status_changed:
        annotator.imageStatusChanged.emit(image_id, "auto")
    if applied.protected:
        annotator.message(f"Kept your edited masks of {', '.join(applied.protected)}")
    return layers


def show_forced(annotator: Annotator, ghost_id: int, result: CaRResult) -> MaskLayer | None:
    """Turn a removed concept's row into a kept mask, from a run on that concept alone."""
    ghost = annotator.stack.get(ghost_id)
    project, image_id = annotator.project, annotator.image_id
    if ghost is None or project is None or image_id is None:
        return None
    ok, added = annotator.guard(force_keep, project, image_id, result, ghost.concept or ghost.name,
                                origin=ORIGIN_WINDOW)
    if not ok or added is None:
        annotator.message(f"CaR found nothing for {ghost.name} even on its own.")
        return None
    layer = annotator.adopt([added], [])[0]
    annotator.replace_ghost(ghost_id, layer)
    return layer


def land_car_result(annotator: Annotator, image_id: int, result: CaRResult,
                    force_concept: str | None = None) -> CarApplied | None:
    """Store a run on ``image_id``, which is not the open image (the user moved on while it ran), with
    the same rule as ``show_car_result`` (or ``force_keep`` for a force-keep run of ``force_concept``).
    The masks it replaces are read first so that undoing it there brings them back. None when the
    project refused the write (``annotator.failed`` said why)."""
    project = annotator.project
    if project is None:
        return None
    if force_concept is not None:
        ok, added = annotator.guard(force_keep, project, image_id, result, force_concept, origin=ORIGIN_WINDOW)
        if not ok:
            return None
        forced = CarApplied(added=[added] if added is not None else [])
        annotator.land(image_id, Landed(forced.added))
        return forced
    # Only the masks the run may replace are read (and kept for undo): not every mask of the image.
    ok, before = annotator.guard(lambda: [(a, project.get_category(a.category_id), project.get_mask(a.id))
                                          for a in project.list_annotations(image_id) if replaceable(a)])
    if not ok or before is None:
        return None
    known = {c.id for c in project.list_categories()}
    ok, applied = annotator.guard(apply_car_result, project, image_id, result, origin=ORIGIN_WINDOW)
    if not ok or applied is None:
        return None
    gone = set(applied.deleted)
    annotator.land(image_id, Landed(applied.added, [row for row in before if row[0].id in gone],
                                    created_categories(project, known)))
    return applied
