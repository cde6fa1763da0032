"""The annotation controller: the current image's layers, their project rows, edits and undo/redo.

Every change goes through here so it is undoable and saved at once (one project transaction each):
tool strokes, CaR results, SAM masks, deletions, splits and merges. Undo uses the annotation model's
compressed diff ``History``, keyed by *layer* id (stable while the image is open, unlike annotation
ids, which change when a deleted mask comes back). Adding a mask is an edit from empty to the mask,
deleting one is the reverse, so one history covers everything; a layer whose mask becomes empty has
no project row. Several steps that belong together (a CaR result) undo as one group.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal

from ..annotations import mask_ops
from ..annotations.errors import ProjectError
from ..annotations.history import History
from ..annotations.models import Edit
from ..annotations.store import Project
from ..engine.errors import CaRDesktopError
from ..evaluation.auto_labels import keep_auto_labels
from .layers import LayerStack, MaskLayer, Rect, bbox_of

log = logging.getLogger(__name__)

HISTORY_BUDGET = 256 * 1024 * 1024
REMOVED_KEY = "ui.removed_concepts.{image_id}"


def to_edit_rect(rect: Rect) -> tuple[int, int, int, int]:
    y0, y1, x0, x1 = rect
    return y0, x0, y1, x1


def from_edit_rect(rect: tuple[int, int, int, int]) -> Rect:
    y0, x0, y1, x1 = rect
    return y0, y1, x0, x1


@dataclass
class LayerMeta:
    """What a layer needs to become a project row again after an undo brought it back."""

    source: str = "manual"
    provenance: dict | None = None


class Annotator(QObject):
    """Owns the layers of the open image and keeps the project in step with them."""

    info = Signal(str)
    historyChanged = Signal()
    imageStatusChanged = Signal(int, str)
    failed = Signal(str)

    def __init__(self, stack: LayerStack, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.stack = stack
        self.project: Project | None = None
        self.image_id: int | None = None
        self.history = History(HISTORY_BUDGET)
        self._groups_undo: list[int] = []
        self._groups_redo: list[int] = []
        self._registry: dict[int, MaskLayer] = {}   # every layer of this image, live or deleted
        self._ann: dict[int, int] = {}               # layer id -> annotation id
        self._meta: dict[int, LayerMeta] = {}

    # ----- image lifecycle
    def set_project(self, project: Project | None) -> None:
        self.project = project
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
            category = self.project.get_category(ann.category_id)
            prov = ann.provenance or {}
            mask = self.project.get_mask(ann.id)
            if mask.shape != (height, width):
                log.warning("annotation %d is %s, image is %s: skipped", ann.id, mask.shape, (height, width))
                continue
            layer = MaskLayer(self.stack.new_id(), category.name, category.color, mask, score=ann.score,
                              status=prov.get("status", ann.source), status_text=prov.get("status_text", ann.source),
                              category_id=category.id, edited=ann.edited)
            self._track(layer, ann.id, LayerMeta(ann.source, prov))
            layers.append(layer)
        for row in self._removed_rows():
            layers.append(self._ghost(row, height, width))
        self.stack.replace_all(layers)

    def _track(self, layer: MaskLayer, ann_id: int | None, meta: LayerMeta) -> None:
        self._registry[layer.id] = layer
        if ann_id is not None:
            self._ann[layer.id] = ann_id
        self._meta[layer.id] = meta

    def _ghost(self, row: dict, height: int, width: int) -> MaskLayer:
        layer = MaskLayer(self.stack.new_id(), row["name"], tuple(row.get("color", (128, 128, 128))),
                          np.zeros((height, width), bool), visible=True, score=row.get("score"),
                          status="removed", status_text=row.get("status_text", "removed"))
        layer.extra["query_text"] = row.get("query_text", row["name"])
        self._registry[layer.id] = layer
        return layer

    def _removed_rows(self) -> list[dict]:
        if self.project is None or self.image_id is None:
            return []
        value = self.project.get_setting(REMOVED_KEY.format(image_id=self.image_id), [])
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = []
        return list(value or [])

    def _save_removed_rows(self) -> None:
        if self.project is None or self.image_id is None:
            return
        rows = [
            {"name": l.name, "query_text": l.extra.get("query_text", l.name), "status_text": l.status_text,
             "score": l.score, "color": list(l.color)}
            for l in self.stack.layers() if l.removed
        ]
        self._guard(self.project.set_setting, REMOVED_KEY.format(image_id=self.image_id), rows)

    # ----- EditHost (tools)
    def selected_layer(self) -> MaskLayer | None:
        layer = self.stack.selected()
        return None if layer is None or layer.removed else layer

    def layer_touched(self, layer_id: int, rect: Rect) -> None:
        self.stack.touched(layer_id, rect)

    def commit_mask_edit(self, layer_id: int, rect: Rect, before: np.ndarray, after: np.ndarray,
                         label: str) -> None:
        """Record an edit already drawn into the layer, and save the layer."""
        layer = self._registry[layer_id]
        layer.edited = True
        self._push([(layer_id, Edit(to_edit_rect(rect), before.astype(bool), after.astype(bool)))])
        self._sync([layer_id])
        self.stack.update(layer_id, edited=True)
        self.info.emit(f"{label} on {layer.name}")

    def message(self, text: str) -> None:
        self.info.emit(text)

    # SAM requests are answered by the engine client; the window sets these handlers.
    sam_predict_handler = None
    sam_accept_handler = None

    def sam_predict(self, points: list[tuple[float, float]], labels: list[int]) -> None:
        if self.sam_predict_handler is not None:
            self.sam_predict_handler(points, labels)

    def sam_accept(self, mask: np.ndarray) -> None:
        if self.sam_accept_handler is not None:
            self.sam_accept_handler(mask)

    # ----- history
    def _push(self, steps: list[tuple[int, Edit]]) -> None:
        pushed = sum(1 for lid, edit in steps if self.history.push(lid, edit))
        if pushed:
            self._groups_undo.append(pushed)
            self._groups_redo.clear()
        self.historyChanged.emit()

    def can_undo(self) -> bool:
        return self.history.can_undo()

    def can_redo(self) -> bool:
        return self.history.can_redo()

    def undo(self) -> bool:
        n = self._groups_undo.pop() if self._groups_undo else 1
        touched = []
        done = 0
        for _ in range(n):
            step = self.history.undo()
            if step is None:
                break
            touched.append(self._apply(*step))
            done += 1
        if done:
            self._groups_redo.append(done)
            self._sync(list(dict.fromkeys(touched)))
            self.info.emit("Undone")
        self.historyChanged.emit()
        return bool(done)

    def redo(self) -> bool:
        n = self._groups_redo.pop() if self._groups_redo else 1
        touched = []
        done = 0
        for _ in range(n):
            step = self.history.redo()
            if step is None:
                break
            touched.append(self._apply(*step))
            done += 1
        if done:
            self._groups_undo.append(done)
            self._sync(list(dict.fromkeys(touched)))
            self.info.emit("Redone")
        self.historyChanged.emit()
        return bool(done)

    def _apply(self, layer_id: int, edit: Edit) -> int:
        layer = self._registry.get(layer_id)
        if layer is None:
            return layer_id
        mask_ops.apply_edit(layer.mask, edit, inplace=True)
        if self.stack.get(layer_id) is None and layer.mask.any():
            self.stack.add(layer)
        elif self.stack.get(layer_id) is not None:
            self.stack.touched(layer_id, from_edit_rect(edit.rect) if not edit.is_empty else None)
        return layer_id

    # ----- saving
    def _guard(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CaRDesktopError as exc:
            log.warning("project write failed: %s", exc)
            self.failed.emit(f"Could not save: {exc}")
            return None

    def _sync(self, layer_ids: list[int]) -> None:
        """Make the project rows match the layers (one transaction for all of them)."""
        if self.project is None or self.image_id is None:
            for lid in layer_ids:
                self._drop_if_empty(lid)
            return
        try:
            with self.project.batch():
                for lid in layer_ids:
                    self._sync_one(lid)
        except CaRDesktopError as exc:
            log.warning("project write failed: %s", exc)
            self.failed.emit(f"Could not save the change: {exc}")

    def _drop_if_empty(self, lid: int) -> None:
        layer = self._registry.get(lid)
        if layer is not None and not layer.removed and not layer.mask.any() and self.stack.get(lid) is not None:
            self.stack.remove(lid)

    def _sync_one(self, lid: int) -> None:
        layer = self._registry.get(lid)
        if layer is None or layer.removed:
            return
        project, ann_id = self.project, self._ann.get(lid)
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
            layer.category_id = project.get_or_create_category(layer.name).id
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

    def reload(self) -> None:
        """Show the project's current state of the open image again (after another writer changed it).
        The undo history starts over: its steps named annotations that may be gone."""
        if self.image_id is not None and self.stack.size != (0, 0):
            self.load_image(self.image_id, *self.stack.size)

    # ----- whole-mask operations
    def _set_mask(self, layer_id: int, new_mask: np.ndarray) -> tuple[int, Edit] | None:
        layer = self._registry[layer_id]
        _new, edit = mask_ops.replace(layer.mask, new_mask)
        if edit.is_empty:
            return None
        mask_ops.apply_edit(layer.mask, edit, inplace=True)
        return layer_id, edit

    def add_layer(self, name: str, mask: np.ndarray, *, source: str = "manual", score: float | None = None,
                  status: str = "manual", status_text: str = "", provenance: dict | None = None,
                  edited: bool = False, record: bool = True, color: tuple[int, int, int] | None = None) -> MaskLayer | None:
        """Add a mask as a new layer (and project row); returns None for an empty mask."""
        if not mask.any():
            self.info.emit(f"The mask for {name} is empty: nothing added.")
            return None
        category_id, cat_color = self._category(name)
        layer = MaskLayer(self.stack.new_id(), self._display_name(name), color or cat_color,
                          np.zeros(self.stack.size, bool), score=score, status=status,
                          status_text=status_text or status, category_id=category_id, edited=edited)
        self._track(layer, None, LayerMeta(source, provenance))
        step = self._set_mask(layer.id, mask.astype(bool))
        self.stack.add(layer)
        if record and step is not None:
            self._push([step])
        self._sync([layer.id])
        return layer

    def _display_name(self, name: str) -> str:
        return name.split("|")[0].strip() or name

    def _category(self, name: str) -> tuple[int | None, tuple[int, int, int]]:
        from .imaging import name_colour

        if self.project is None:
            return None, name_colour(self._display_name(name))
        cat = self._guard(self.project.get_or_create_category, name)
        if cat is None:
            return None, name_colour(self._display_name(name))
        return cat.id, cat.color

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
            self._save_removed_rows()
            return
        step = self._set_mask(layer_id, np.zeros_like(layer.mask))
        if step is not None:
            self._push([step])
        self.stack.remove(layer_id)
        self._sync([layer_id])
        self.info.emit(f"Deleted {layer.name} (Ctrl+Z brings it back)")

    def apply_op(self, op: str, **kwargs) -> None:
        """fill_holes / remove_specks on the selected layer."""
        layer = self.selected_layer()
        if layer is None:
            self.info.emit("Select a mask first.")
            return
        if op == "fill_holes":
            new, edit = mask_ops.fill_holes(layer.mask, kwargs.get("max_hole_pixels"))
        elif op == "remove_specks":
            new, edit = mask_ops.remove_specks(layer.mask, kwargs.get("min_pixels", max(16, layer.area // 200)))
        else:
            raise ValueError(op)
        if edit.is_empty:
            self.info.emit("Nothing to change.")
            return
        self.commit_mask_edit_applied(layer, edit, op.replace("_", " ").capitalize())

    def commit_mask_edit_applied(self, layer: MaskLayer, edit: Edit, label: str) -> None:
        mask_ops.apply_edit(layer.mask, edit, inplace=True)
        self.stack.touched(layer.id, from_edit_rect(edit.rect))
        self.commit_mask_edit(layer.id, from_edit_rect(edit.rect), edit.before, edit.after, label)

    def split_selected(self) -> None:
        layer = self.selected_layer()
        if layer is None:
            self.info.emit("Select a mask first.")
            return
        _new, edit, parts = mask_ops.split_instances(layer.mask)
        if not parts:
            self.info.emit(f"{layer.name} is a single connected piece.")
            return
        steps = []
        mask_ops.apply_edit(layer.mask, edit, inplace=True)
        layer.edited = True
        steps.append((layer.id, edit))
        self.stack.touched(layer.id, None)
        new_ids = [layer.id]
        for part in parts:
            new = self.add_layer(layer.name, part, source=self._meta[layer.id].source, score=layer.score,
                                 status=layer.status, status_text=layer.status_text,
                                 provenance=self._meta[layer.id].provenance, edited=True, record=False)
            if new is not None:
                b = bbox_of(part)
                y0, y1, x0, x1 = b
                steps.append((new.id, Edit((y0, x0, y1, x1), np.zeros((y1 - y0, x1 - x0), bool), part[y0:y1, x0:x1].copy())))
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
        others = [l for l in self.stack.layers()
                  if l.id != layer.id and not l.removed and l.category_id == layer.category_id and l.name == layer.name]
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
            cat = self._guard(self.project.rename_category, layer.category_id, name)
            if cat is None:
                return
            for l in self.stack.layers():
                if l.category_id == cat.id:
                    self.stack.update(l.id, name=cat.name)
        else:
            self.stack.update(layer_id, name=name)

    def relabel(self, layer_id: int, name: str) -> None:
        """Move one mask to another (possibly new) category."""
        layer = self._registry.get(layer_id)
        if layer is None or layer.removed:
            return
        category_id, color = self._category(name)
        layer.category_id = category_id
        if self.project is not None and category_id is not None and layer_id in self._ann:
            self._guard(self.project.set_annotation_category, self._ann[layer_id], category_id)
        self.stack.update(layer_id, name=self._display_name(name), color=color, edited=True)

    def recolour(self, layer_id: int, color: tuple[int, int, int]) -> None:
        layer = self._registry.get(layer_id)
        if layer is None:
            return
        if self.project is not None and layer.category_id is not None:
            if self._guard(self.project.recolor_category, layer.category_id, color) is None:
                return
            for l in self.stack.layers():
                if l.category_id == layer.category_id:
                    self.stack.update(l.id, color=color)
        else:
            self.stack.update(layer_id, color=color)

    # ----- results from the engine
    def apply_car_result(self, result, provenance: dict | None = None) -> list[MaskLayer]:
        """Replace this image's unedited CaR layers with a result: one undoable group, one transaction."""
        steps: list[tuple[int, Edit]] = []
        touched: list[int] = []
        for layer in self.stack.layers():
            if layer.removed:
                self.stack.remove(layer.id)
            elif self._meta.get(layer.id, LayerMeta()).source == "car" and not layer.edited:
                step = self._set_mask(layer.id, np.zeros_like(layer.mask))
                if step:
                    steps.append(step)
                touched.append(layer.id)
                self.stack.remove(layer.id)
        protected = {l.name.casefold() for l in self.stack.layers()
                     if self._meta.get(l.id, LayerMeta()).source == "car" and l.edited}
        added: list[MaskLayer] = []
        base_prov = dict(provenance or {})
        base_prov.setdefault("models", getattr(result, "model_names", {}))
        for c in result.concepts:
            status = c.status.value
            if status == "removed" or not c.mask.any():
                if c.name.casefold() in protected:
                    continue
                _cid, colour = self._category(c.query_text.replace(", ", " | "))
                ghost = self._ghost({"name": c.name, "query_text": c.query_text, "status_text": c.status_text,
                                     "score": c.removed_score, "color": colour}, *self.stack.size)
                if status != "removed":
                    ghost.status_text = f"{c.status_text}, empty mask"
                self.stack.add(ghost)
                continue
            if c.name.casefold() in protected:
                continue
            prov = dict(base_prov, concept=c.query_text, status=status, status_text=c.status_text,
                        removed_at_step=c.removed_at_step, sam_accepted=c.sam_accepted, sam_iou=c.sam_iou)
            layer = self.add_layer(c.query_text.replace(", ", " | "), c.mask, source="car", score=c.score,
                                   status=status, status_text=c.status_text, provenance=prov, record=False)
            if layer is not None:
                y0, y1, x0, x1 = bbox_of(layer.mask)
                steps.append((layer.id, Edit((y0, x0, y1, x1), np.zeros((y1 - y0, x1 - x0), bool),
                                             layer.mask[y0:y1, x0:x1].copy())))
                added.append(layer)
        self._push(steps)
        self._sync(touched)
        self._save_removed_rows()
        if self.project is not None and self.image_id is not None:
            self._guard(keep_auto_labels, self.project, self.image_id, result)  # pre-edit copy (Quality panel)
            rec = self._guard(self.project.get_image, self.image_id)
            if rec is not None and rec.status == "new":
                self._guard(self.project.set_image_status, self.image_id, "auto")
                self.imageStatusChanged.emit(self.image_id, "auto")
        return added

    def force_keep(self, ghost_id: int, mask: np.ndarray, score: float | None, status_text: str) -> MaskLayer | None:
        """Turn a removed concept's row into a kept mask (from a single-concept run)."""
        ghost = self._registry.get(ghost_id)
        if ghost is None:
            return None
        query = ghost.extra.get("query_text", ghost.name)
        layer = self.add_layer(query.replace(", ", " | "), mask, source="car", score=score, status="forced",
                               status_text=f"force-kept ({status_text})",
                               provenance={"concept": query, "forced": True}, edited=True)
        if layer is not None:
            self.stack.remove(ghost_id)
            self._save_removed_rows()
            self.stack.select(layer.id)
        return layer

    def mark_reviewed(self) -> None:
        if self.project is None or self.image_id is None:
            return
        if self._guard(self.project.set_image_status, self.image_id, "reviewed") is not False:
            self.imageStatusChanged.emit(self.image_id, "reviewed")
            self.info.emit("Marked as reviewed")
