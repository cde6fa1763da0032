"""The annotation controller: the current image's layers, their project rows, edits and undo/redo.

Every change goes through here so it is undoable and saved at once (one project transaction each):
tool strokes, SAM masks, deletions, splits and merges, and (through ``car_apply``) CaR results. Undo
uses the annotation model's compressed diff ``History``, keyed by *layer* id (stable while the image
is open, unlike annotation ids, which change when a deleted mask comes back). Adding a mask is an edit
from empty to the mask, deleting one is the reverse, so one history covers everything; a layer whose
mask becomes empty has no project row. Several steps that belong together (a CaR result) undo as one
group. The concepts CaR removed are shown as empty "removed" layers, read from and saved to the
project's removed-concept list (``annotations.car_results``).

A CaR run that finishes after the user moved to another image is stored on its own image at once
(``car_apply.land_car_result``) and kept here as a ``Landed`` record; when that image is opened again
the record becomes one undo group there (``_adopt_landed``), so the run is undoable where it landed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from PySide6.QtCore import QObject, Signal

from ..annotations import mask_ops, mask_status
from ..annotations.auto_labels import auto_mask
from ..annotations.car_results import AddedMask, RemovedConcept, removed_concepts, set_removed_concepts
from ..annotations.history import History
from ..annotations.models import Annotation, Category, Edit, Rect
from ..annotations.provenance import FORCED, Provenance
from ..annotations.store import Project
from ..errors import CaRDesktopError
from .imaging import name_colour
from .layers import LayerStack, MaskLayer

log = logging.getLogger(__name__)

HISTORY_BUDGET = 256 * 1024 * 1024
T = TypeVar("T")


@dataclass
class LayerMeta:
    """What a layer needs to become a project row again after an undo brought it back."""

    source: str = "manual"
    provenance: Provenance = field(default_factory=Provenance)


@dataclass
class UndoGroup:
    """Steps that undo together; ``categories``: those a CaR run created, removed again by its undo
    when nothing else uses them (``rows``: what was removed, for redo to restore with the same ids)."""

    size: int
    categories: tuple[int, ...] = ()
    rows: list[tuple] = field(default_factory=list)


@dataclass
class Landed:
    """A CaR result stored on an image that was not shown: the rows it added and the rows (with their
    masks, to bring back on undo) it replaced."""

    added: list[AddedMask]
    deleted: list[tuple[Annotation, Category, np.ndarray]] = field(default_factory=list)
    categories: tuple[int, ...] = ()       # the categories the run created


class Annotator(QObject):
    """Owns the layers of the open image and keeps the project in step with them."""

    info = Signal(str)
    historyChanged = Signal()
    imageStatusChanged = Signal(int, str)
    failed = Signal(str)
    rowsChanged = Signal()                      # project rows of the open image changed (review queue)
    samPredictRequested = Signal(list, list)    # points, labels (the SAM tool's clicks)
    samAccepted = Signal(object)                # the mask the SAM tool accepted

    def __init__(self, stack: LayerStack, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.stack = stack
        self.project: Project | None = None
        self.image_id: int | None = None
        self.history = History(HISTORY_BUDGET)
        self._groups_undo: list[UndoGroup] = []
        self._groups_redo: list[UndoGroup] = []
        self._registry: dict[int, MaskLayer] = {}   # every layer of this image, live or deleted
        self._ann: dict[int, int] = {}               # layer id -> annotation id
        self._meta: dict[int, LayerMeta] = {}
        self._landed: dict[int, list[Landed]] = {}   # image id -> runs stored there while it was not shown

    # ----- image lifecycle
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self._landed = {}
        self.clear()

    def clear(self) -> None:
        self.image_id = None
        self._reset_history()
        self._registry, self._ann, self._meta = {}, {}, {}
        self.stack.set_image_size(0, 0)

    def _reset_history(self) -> None:
        self.history.clear()
        self._groups_undo, self._groups_redo = [], []
        self.historyChanged.emit()

    def load_image(self, image_id: int | None, height: int, width: int) -> None:
        """Show the project's annotations of an image (or an empty stack for an image outside it)."""
        self._reset_history()
        self._registry, self._ann, self._meta = {}, {}, {}
        self.image_id = image_id
        self.stack.set_image_size(height, width)
        if self.project is None or image_id is None:
            return
        layers: list[MaskLayer] = []
        for ann in self.project.list_annotations(image_id):
            mask = self.project.get_mask(ann.id)
            if mask.shape != (height, width):
                log.warning("annotation %d is %s, image is %s: skipped", ann.id, mask.shape, (height, width))
                continue
            layers.append(self._row_layer(ann.id, self.project.get_category(ann.category_id), mask, ann.score,
                                          ann.source, ann.provenance, ann.edited))
        layers += [self._ghost(r) for r in removed_concepts(self.project, image_id)]
        self.stack.replace_all(layers)
        self._adopt_landed(image_id)

    # ----- CaR runs stored on an image while it was not shown
    def land(self, image_id: int, landed: Landed) -> None:
        """Remember a run stored on ``image_id`` (not the open image) for its undo history there."""
        self._landed.setdefault(image_id, []).append(landed)

    def landed(self, image_id: int) -> list[Landed]:
        return list(self._landed.get(image_id, []))

    def _adopt_landed(self, image_id: int) -> None:
        """Each run stored here while the image was away becomes one undo group: undo removes its
        masks and brings back the ones it replaced, as if it had landed while the image was shown."""
        for landed in self._landed.pop(image_id, []):
            steps: list[tuple[int, Edit]] = []
            for ann, category, mask in landed.deleted:
                if mask.shape != self.stack.size or self.layer_for_annotation(ann.id) is not None:
                    continue
                layer = self._row_layer(ann.id, category, np.zeros(self.stack.size, bool), ann.score, ann.source,
                                        ann.provenance, ann.edited)
                del self._ann[layer.id]   # the row is gone: undo makes a new one from the layer
                steps.append((layer.id, mask_ops.added_edit(mask).inverse()))
            for added in landed.added:
                lid = self.layer_for_annotation(added.annotation.id)
                if lid is not None:
                    steps.append((lid, mask_ops.added_edit(self._registry[lid].mask)))
            self._push(steps, landed.categories)

    def _row_layer(self, ann_id: int, category: Category, mask: np.ndarray, score: float | None, source: str,
                   provenance: Provenance, edited: bool) -> MaskLayer:
        layer = MaskLayer(self.stack.new_id(), category.name, category.color, mask, score=score,
                          status=provenance.status or source, status_text=mask_status.status_text(source, provenance),
                          category_id=category.id, edited=edited, concept=provenance.concept)
        self._track(layer, ann_id, LayerMeta(source, provenance))
        return layer

    def _track(self, layer: MaskLayer, ann_id: int | None, meta: LayerMeta) -> None:
        self._registry[layer.id] = layer
        if ann_id is not None:
            self._ann[layer.id] = ann_id
        self._meta[layer.id] = meta

    # ----- removed concepts ("ghost" layers: no mask, a row in the concept panel)
    def _ghost(self, removed: RemovedConcept) -> MaskLayer:
        category_id, name, colour = self._category(removed.concept)
        layer = MaskLayer(self.stack.new_id(), name, colour, np.zeros(self.stack.size, bool), score=removed.score,
                          status="removed", status_text=removed.status_text, category_id=category_id,
                          concept=removed.concept)
        self._registry[layer.id] = layer
        return layer

    def show_removed(self, removed: list[RemovedConcept]) -> None:
        """Replace the removed-concept rows with ``removed`` (already saved by whoever wrote them)."""
        for layer in self.stack.layers():
            if layer.removed:
                self.stack.remove(layer.id)
        for r in removed:
            self.stack.add(self._ghost(r))

    def _save_removed(self) -> None:
        if self.project is not None and self.image_id is not None:
            rows = [RemovedConcept(ly.concept or ly.name, ly.status_text, ly.score)
                    for ly in self.stack.layers() if ly.removed]
            self.guard(set_removed_concepts, self.project, self.image_id, rows)

    # ----- EditHost (tools)
    def selected_layer(self) -> MaskLayer | None:
        layer = self.stack.selected()
        return None if layer is None or layer.removed else layer

    def layer_touched(self, layer_id: int, rect: Rect) -> None:
        self.stack.touched(layer_id, rect)

    def commit_mask_edit(self, layer_id: int, edit: Edit, label: str) -> None:
        """Apply an edit to the layer (a brush has drawn it already: writing it again is harmless),
        record it for undo and save the layer."""
        if edit.is_empty:
            return
        layer = self._registry[layer_id]
        mask_ops.apply_edit(layer.mask, edit, inplace=True)
        self.stack.touched(layer_id, edit.rect)
        layer.edited = True
        self._push([(layer_id, edit)])
        self._sync([layer_id])
        self.stack.update(layer_id, edited=True)
        self.info.emit(f"{label} on {layer.name}")

    def message(self, text: str) -> None:
        self.info.emit(text)

    def sam_predict(self, points: list[tuple[float, float]], labels: list[int]) -> None:
        self.samPredictRequested.emit(points, labels)

    def sam_accept(self, mask: np.ndarray) -> None:
        self.samAccepted.emit(mask)

    # ----- history
    def _push(self, steps: list[tuple[int, Edit]], categories: tuple[int, ...] = ()) -> None:
        pushed = sum(1 for lid, edit in steps if self.history.push(lid, edit))
        if pushed:
            self._groups_undo.append(UndoGroup(pushed, tuple(categories)))
            self._groups_redo.clear()
        self.historyChanged.emit()

    def can_undo(self) -> bool:
        return self.history.can_undo()

    def can_redo(self) -> bool:
        return self.history.can_redo()

    def undo(self) -> bool:
        return self._replay(self.history.undo, self._groups_undo, self._groups_redo, "Undone")

    def redo(self) -> bool:
        return self._replay(self.history.redo, self._groups_redo, self._groups_undo, "Redone")

    def _replay(self, step_fn: Callable[[], tuple[int, Edit] | None], groups: list[UndoGroup],
                other: list[UndoGroup], text: str) -> bool:
        """Undo or redo one group of steps (``step_fn`` is ``history.undo`` or ``history.redo``)."""
        group = groups.pop() if groups else UndoGroup(1)
        undoing = step_fn == self.history.undo
        if not undoing and group.rows and self.project is not None:
            self.guard(self.project.restore_categories, group.rows)   # before the rows that name them
            group.rows = []
        touched: list[int] = []
        for _ in range(group.size):
            step = step_fn()
            if step is None:
                break
            touched.append(self._apply(*step))
        if touched:
            group.size = len(touched)
            other.append(group)
            ids = list(dict.fromkeys(touched))
            self._update_edited(ids)
            self._sync(ids)
            if undoing and group.categories:
                self._drop_unused_categories(group)
            self.info.emit(text)
        self.historyChanged.emit()
        return bool(touched)

    def _drop_unused_categories(self, group: UndoGroup) -> None:
        """Undoing a CaR run: the categories it created go when no mask, clip or removed-concept row
        of the open image uses them."""
        if self.project is None:
            return
        shown = {ly.category_id for ly in self.stack.layers() if ly.removed}
        ok, rows = self.guard(self.project.delete_unused_categories,
                              [c for c in group.categories if c not in shown])
        if ok and rows:
            group.rows = rows

    def _update_edited(self, layer_ids: list[int]) -> None:
        """A CaR mask is 'edited' while it differs from what CaR made: undoing every edit clears the mark
        (and the project's flag), redoing one sets it again. Force-kept masks stay a person's decision."""
        if self.project is None:
            return
        for lid in layer_ids:
            layer, meta, ann_id = self._registry.get(lid), self._meta.get(lid), self._ann.get(lid)
            if layer is None or meta is None or ann_id is None or meta.source != "car" or layer.removed:
                continue
            if meta.provenance.status == FORCED or not layer.mask.any():
                continue
            ok, made = self.guard(auto_mask, self.project, ann_id)
            if not ok or made is None or made.shape != layer.mask.shape:
                continue
            edited = not np.array_equal(made, layer.mask)
            if edited != layer.edited:
                layer.edited = edited
                if not edited:
                    self.guard(self.project.set_annotation_edited, ann_id, False)
                if self.stack.get(lid) is not None:
                    self.stack.update(lid, edited=edited)

    def _apply(self, layer_id: int, edit: Edit) -> int:
        layer = self._registry.get(layer_id)
        if layer is None:
            return layer_id
        mask_ops.apply_edit(layer.mask, edit, inplace=True)
        if self.stack.get(layer_id) is None and layer.mask.any():
            self.stack.add(layer)
        elif self.stack.get(layer_id) is not None:
            self.stack.touched(layer_id, None if edit.is_empty else edit.rect)
        return layer_id

    # ----- saving
    def guard(self, fn: Callable[..., T], *args, **kwargs) -> tuple[bool, T | None]:
        """Run a project write; a user error is reported (``failed``) and gives (False, None)."""
        try:
            return True, fn(*args, **kwargs)
        except CaRDesktopError as exc:
            log.warning("project write failed: %s", exc)
            self.failed.emit(f"Could not save: {exc}")
            return False, None

    def _sync(self, layer_ids: list[int]) -> None:
        """Make the project rows match the layers (one transaction for all of them)."""
        project = self.project
        if project is None or self.image_id is None:
            for lid in layer_ids:
                self._drop_if_empty(lid)
            return

        def write() -> None:
            with project.batch():
                for lid in layer_ids:
                    self._sync_one(project, lid)

        self.guard(write)
        self.rowsChanged.emit()

    def _drop_if_empty(self, lid: int) -> None:
        layer = self._registry.get(lid)
        if layer is not None and not layer.removed and not layer.mask.any() and self.stack.get(lid) is not None:
            self.stack.remove(lid)

    def _sync_one(self, project: Project, lid: int) -> None:
        layer = self._registry.get(lid)
        if layer is None or layer.removed or self.image_id is None:
            return
        ann_id = self._ann.get(lid)
        meta = self._meta.setdefault(lid, LayerMeta())
        if not layer.mask.any():
            if ann_id is not None:
                project.delete_annotation(ann_id)
                del self._ann[lid]
            self._drop_if_empty(lid)
            return
        if ann_id is not None:
            project.update_mask(ann_id, layer.mask, edited=layer.edited)
            return
        if layer.category_id is None:
            layer.category_id = project.get_or_create_category(layer.concept or layer.name).id
        ann = project.add_annotation(self.image_id, layer.category_id, layer.mask, score=layer.score,
                                     source=meta.source, provenance=meta.provenance, edited=layer.edited)
        self._ann[lid] = ann.id

    def annotation_id(self, layer_id: int) -> int | None:
        return self._ann.get(layer_id)

    def layer_for_annotation(self, annotation_id: int) -> int | None:
        """The layer showing a project annotation of the open image (the review queue jumps to it)."""
        for lid, ann in self._ann.items():
            if ann == annotation_id and self.stack.get(lid) is not None:
                return lid
        return None

    def set_provenance(self, annotation_id: int, provenance: Provenance) -> None:
        """Keep a provenance written beside the layers (a review verdict) for the row of the open image
        that has ``annotation_id``: an undo that makes the row again writes it with it."""
        lid = self.layer_for_annotation(annotation_id)
        if lid is not None and lid in self._meta:
            self._meta[lid].provenance = provenance

    def reload(self) -> None:
        """Show the project's current state of the open image again (after another writer changed it).
        The undo history starts over: its steps named annotations that may be gone."""
        if self.image_id is not None and self.stack.size != (0, 0):
            self.load_image(self.image_id, *self.stack.size)

    # ----- rows written elsewhere (a CaR result): mirrored as layers, one undo group
    def adopt(self, added: list[AddedMask], deleted: list[int], categories: tuple[int, ...] = ()) -> list[MaskLayer]:
        """Show rows another writer has just changed for this image: ``added`` become layers,
        the layers of ``deleted`` annotation ids go; undoing the group restores the rows."""
        gone = set(deleted)
        steps: list[tuple[int, Edit]] = []
        for lid, ann_id in list(self._ann.items()):
            if ann_id in gone:
                layer = self._registry[lid]
                steps.append((lid, mask_ops.added_edit(layer.mask).inverse()))
                layer.mask[:] = False
                del self._ann[lid]
                self.stack.remove(lid)
        layers = []
        for a in added:
            ann = a.annotation
            layer = self._row_layer(ann.id, a.category, a.mask.astype(bool, copy=True), ann.score, ann.source,
                                    ann.provenance, ann.edited)
            self.stack.add(layer)
            steps.append((layer.id, mask_ops.added_edit(layer.mask)))
            layers.append(layer)
        self._push(steps, categories)
        self.rowsChanged.emit()
        return layers

    # ----- whole-mask operations
    def _set_mask(self, layer_id: int, new_mask: np.ndarray) -> tuple[int, Edit] | None:
        layer = self._registry[layer_id]
        _new, edit = mask_ops.replace(layer.mask, new_mask)
        if edit.is_empty:
            return None
        mask_ops.apply_edit(layer.mask, edit, inplace=True)
        return layer_id, edit

    def add_layer(self, name: str, mask: np.ndarray, *, source: str = "manual", score: float | None = None,
                  status: str = "manual", status_text: str = "", provenance: Provenance | None = None,
                  edited: bool = False, record: bool = True) -> MaskLayer | None:
        """Add a mask as a new layer (and project row) of the concept ``name``; None for an empty mask."""
        if not mask.any():
            self.info.emit(f"The mask for {name} is empty: nothing added.")
            return None
        category_id, display, colour = self._category(name)
        layer = MaskLayer(self.stack.new_id(), display, colour, np.zeros(self.stack.size, bool), score=score,
                          status=status, status_text=status_text or status, category_id=category_id, edited=edited,
                          concept=name)
        self._track(layer, None, LayerMeta(source, provenance or Provenance()))
        step = self._set_mask(layer.id, mask.astype(bool))
        self.stack.add(layer)
        if record and step is not None:
            self._push([step])
        self._sync([layer.id])
        return layer

    def _category(self, name: str) -> tuple[int | None, str, tuple[int, int, int]]:
        """(category id, display name, colour) of a concept, creating the category if needed."""
        if self.project is not None:
            ok, cat = self.guard(self.project.get_or_create_category, name)
            if ok and cat is not None:
                return cat.id, cat.name, cat.color
        return None, name, name_colour(name)

    def replace_mask(self, layer_id: int, mask: np.ndarray, label: str = "SAM refine") -> None:
        step = self._set_mask(layer_id, mask.astype(bool))
        if step is None:
            return
        self._registry[layer_id].edited = True
        self._push([step])
        self.stack.touched(layer_id, None)
        self._sync([layer_id])
        self.stack.update(layer_id, edited=True)
        self.info.emit(f"{label} on {self._registry[layer_id].name}")

    def delete_layer(self, layer_id: int) -> None:
        layer = self._registry.get(layer_id)
        if layer is None:
            return
        if layer.removed:
            self.stack.remove(layer_id)
            self._save_removed()
            return
        step = self._set_mask(layer_id, np.zeros_like(layer.mask))
        if step is not None:
            self._push([step])
        self.stack.remove(layer_id)
        self._sync([layer_id])
        self.info.emit(f"Deleted {layer.name} (Ctrl+Z brings it back)")

    def replace_ghost(self, ghost_id: int, layer: MaskLayer) -> None:
        """A removed concept came back as ``layer`` (force-kept): drop its row and select the layer."""
        self.stack.remove(ghost_id)
        self.stack.select(layer.id)

    def apply_op(self, op: str, **kwargs) -> None:
        """fill_holes / remove_specks on the selected layer."""
        layer = self.selected_layer()
        if layer is None:
            self.info.emit("Select a mask first.")
            return
        if op == "fill_holes":
            _new, edit = mask_ops.fill_holes(layer.mask, kwargs.get("max_hole_pixels"))
        elif op == "remove_specks":
            _new, edit = mask_ops.remove_specks(layer.mask, kwargs.get("min_pixels", max(16, layer.area // 200)))
        else:
            raise ValueError(op)
        if edit.is_empty:
            self.info.emit("Nothing to change.")
            return
        self.commit_mask_edit(layer.id, edit, op.replace("_", " ").capitalize())

    def split_selected(self) -> None:
        layer = self.selected_layer()
        if layer is None:
            self.info.emit("Select a mask first.")
            return
        _new, edit, parts = mask_ops.split_instances(layer.mask)
        if not parts:
            self.info.emit(f"{layer.name} is a single connected piece.")
            return
        mask_ops.apply_edit(layer.mask, edit, inplace=True)
        layer.edited = True
        steps = [(layer.id, edit)]
        self.stack.touched(layer.id, None)
        new_ids = [layer.id]
        meta = self._meta[layer.id]
        for part in parts:
            new = self.add_layer(layer.concept or layer.name, part, source=meta.source, score=layer.score,
                                 status=layer.status, status_text=layer.status_text, provenance=meta.provenance,
                                 edited=True, record=False)
            if new is not None:
                steps.append((new.id, mask_ops.added_edit(part)))
                new_ids.append(new.id)
        self._push(steps)
        self._sync(new_ids)
        self.info.emit(f"Split {layer.name} into {len(new_ids)} instances")

    def merge_into_selected(self) -> None:
        """Merge every other visible layer of the same category into the selected one."""
        layer = self.selected_layer()
        if layer is None:
            self.info.emit("Select a mask first.")
            return
        others = [ly for ly in self.stack.layers() if ly.id != layer.id and not ly.removed
                  and ly.category_id == layer.category_id and ly.name == layer.name]
        if not others:
            self.info.emit(f"No other {layer.name} mask to merge.")
            return
        _new, edit = mask_ops.merge(layer.mask, [o.mask for o in others])
        steps = []
        if not edit.is_empty:
            mask_ops.apply_edit(layer.mask, edit, inplace=True)
            steps.append((layer.id, edit))
        layer.edited = True
        for o in others:
            step = self._set_mask(o.id, np.zeros_like(o.mask))
            if step is not None:
                steps.append(step)
            self.stack.remove(o.id)
        self._push(steps)
        self.stack.touched(layer.id, None)
        self._sync([layer.id] + [o.id for o in others])
        self.info.emit(f"Merged {len(others) + 1} {layer.name} masks")

    # ----- properties
    def set_visible(self, layer_id: int, visible: bool) -> None:
        if self.stack.get(layer_id) is not None:
            self.stack.update(layer_id, visible=visible)

    def rename(self, layer_id: int, name: str) -> None:
        """Rename the layer's category (every mask of that concept in the project follows)."""
        layer = self._registry.get(layer_id)
        if layer is None:
            return
        if self.project is not None and layer.category_id is not None:
            ok, cat = self.guard(self.project.rename_category, layer.category_id, name)
            if not ok or cat is None:
                return
            for ly in self.stack.layers():
                if ly.category_id == cat.id:
                    self.stack.update(ly.id, name=cat.name)
        else:
            self.stack.update(layer_id, name=name)

    def relabel(self, layer_id: int, name: str) -> None:
        """Move one mask to another (possibly new) category."""
        layer = self._registry.get(layer_id)
        if layer is None or layer.removed:
            return
        category_id, display, colour = self._category(name)
        layer.category_id = category_id
        if self.project is not None and category_id is not None and layer_id in self._ann:
            self.guard(self.project.set_annotation_category, self._ann[layer_id], category_id)
        self.stack.update(layer_id, name=display, color=colour, edited=True, concept=name)

    def recolour(self, layer_id: int, color: tuple[int, int, int]) -> None:
        layer = self._registry.get(layer_id)
        if layer is None:
            return
        if self.project is not None and layer.category_id is not None:
            ok, _cat = self.guard(self.project.recolor_category, layer.category_id, color)
            if not ok:
                return
            for ly in self.stack.layers():
                if ly.category_id == layer.category_id:
                    self.stack.update(ly.id, color=color)
        else:
            self.stack.update(layer_id, color=color)

    def mark_reviewed(self) -> bool:
        """Mark the open image reviewed; False (and the image keeps its status) when saving fails."""
        if self.project is None or self.image_id is None:
            return False
        ok, _ = self.guard(self.project.set_image_status, self.image_id, "reviewed")
        if ok:
            self.imageStatusChanged.emit(self.image_id, "reviewed")
            self.info.emit("Marked as reviewed")
        return ok
