"""The polygon editor: the selected mask as an editable polygon (Edit > Edit as polygon, Ctrl+J).

The geometry (tracing, hit tests, vertex edits, rasterising) is ``annotations.polygon_shape``; this
tool only turns canvas events into those edits and draws the result. Drag a vertex to move it, drag
inside to move the whole shape, double-click an edge to insert a vertex, right-click a vertex (or
Delete / Backspace on the last one touched) to delete it. Enter writes the polygon back into the mask
as one undoable edit (a polygon has no holes: a changed outline fills the mask's holes, which the
start message says), Esc (or another tool) leaves the mask as it was. Handles keep their size on
screen at any zoom: hit tolerances are converted to image pixels with the canvas's zoom.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QCursor, QPainterPath
from PySide6.QtWidgets import QGraphicsPathItem

from ..annotations import mask_ops
from ..annotations.polygon_shape import MIN_VERTICES, PolygonShape
from .layers import MaskLayer
from .tools import EditHost, Tool, _cosmetic_pen

if TYPE_CHECKING:
    from .canvas import Canvas, CanvasMouse

log = logging.getLogger(__name__)

HANDLE_PX = 7.0          # handle size on screen
#: Keys the editor takes before the window's shortcuts (Delete would otherwise delete the mask).
KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Escape, Qt.Key.Key_Delete, Qt.Key.Key_Backspace)


class PolygonEditTool(Tool):
    """Edits the selected layer's outline; ``finished`` is called after Enter or Esc."""

    name = "polygon_edit"
    label = "Edit polygon"

    def __init__(self, host: EditHost) -> None:
        super().__init__(host)
        self.shape = PolygonShape()
        self.layer: MaskLayer | None = None
        self.active: tuple[int, int] | None = None       # (ring, vertex) last touched
        self._drag: str = ""                              # "vertex" | "shape" | ""
        self._last: tuple[float, float] = (0.0, 0.0)
        self._changed = False
        self._outline: QGraphicsPathItem | None = None
        self._handles: QGraphicsPathItem | None = None
        self._active_item: QGraphicsPathItem | None = None
        self.finished: Callable[[], None] | None = None

    # ----- life cycle
    def activate(self, canvas: Canvas) -> None:
        super().activate(canvas)
        self._outline = QGraphicsPathItem()
        self._outline.setPen(_cosmetic_pen(QColor(255, 220, 40), 2))
        self._outline.setBrush(QBrush(QColor(255, 220, 40, 40)))
        self._handles = QGraphicsPathItem()
        self._handles.setPen(_cosmetic_pen(QColor(20, 20, 20), 1))
        self._handles.setBrush(QBrush(QColor(255, 255, 255)))
        self._active_item = QGraphicsPathItem()
        self._active_item.setPen(_cosmetic_pen(QColor(20, 20, 20), 1))
        self._active_item.setBrush(QBrush(QColor(255, 60, 60)))
        for item, z in ((self._outline, 6), (self._handles, 7), (self._active_item, 8)):
            canvas.scene_item_add(item)
            item.setZValue(z)
        canvas.zoomChanged.connect(self._redraw)
        canvas.stack.reset.connect(self.cancel)
        canvas.stack.layerChanged.connect(self._layer_changed)
        self.begin(self.host.selected_layer())

    def deactivate(self) -> None:
        canvas = self.canvas
        if canvas is not None:
            canvas.zoomChanged.disconnect(self._redraw)
            canvas.stack.reset.disconnect(self.cancel)
            canvas.stack.layerChanged.disconnect(self._layer_changed)
        for item in (self._outline, self._handles, self._active_item):
            if item is not None and item.scene() is not None:
                item.scene().removeItem(item)
        self._outline = self._handles = self._active_item = None
        self._reset()
        super().deactivate()

    def begin(self, layer: MaskLayer | None) -> bool:
        """Start editing ``layer``'s outline; False (with a message) when there is nothing to edit."""
        self._reset()
        if layer is None or layer.removed or not layer.mask.any():
            self.host.message("Select a mask first, then Edit as polygon (Ctrl+J).")
            self._redraw()
            return False
        self.layer = layer
        self.shape = PolygonShape.from_mask(layer.mask)
        self._redraw()
        # A polygon has no holes: say so before the user changes it, since applying a change fills them.
        holes = "" if mask_ops.fill_holes(layer.mask)[1].is_empty else \
            " Its holes are not shown: applying a change fills them (Esc keeps them)."
        self.host.message(f"Editing {layer.name} as a polygon ({self.shape.vertex_count} vertices): drag vertices, "
                          f"double-click an edge to add one, right-click to delete; Enter applies, Esc cancels.{holes}")
        return True

    def _reset(self) -> None:
        self.layer, self.shape, self.active, self._drag, self._changed = None, PolygonShape(), None, "", False

    def editing(self) -> bool:
        return self.layer is not None

    def has_pending_input(self) -> bool:
        return self.editing()

    def claims_key(self, key: int) -> bool:
        return self.editing() and key in KEYS

    def cursor(self) -> QCursor:
        return QCursor(Qt.CursorShape.PointingHandCursor)

    # ----- ending
    def apply(self) -> bool:
        """Write the polygon into the layer's mask as one undoable edit; True when the mask changed."""
        layer = self.layer
        if layer is None:
            return False
        if not self._changed:   # an untouched outline changes nothing (not even the holes it cannot show)
            self._reset()
            self._redraw()
            self._finish()
            return False
        new_mask = self.shape.to_mask(layer.mask.shape)
        self._reset()
        self._redraw()
        changed = False
        if not new_mask.any():
            self.host.message("The polygon covers no pixel: the mask is left as it was.")
        else:
            _new, edit = mask_ops.replace(layer.mask, new_mask)
            if not edit.is_empty:
                self.host.commit_mask_edit(layer.id, edit, "Polygon edit")
                changed = True
        self._finish()
        return changed

    def cancel(self) -> None:
        """Leave the mask as it was."""
        if self.layer is not None:
            self._reset()
            self._redraw()
            self.host.message("Polygon edit cancelled.")
        self._finish()

    def cancel_input(self) -> None:
        self.cancel()

    def _layer_changed(self, layer_id: int, _rect) -> None:
        """The mask being edited left the image (an undo, a CaR result replacing it): end the edit, since
        applying it would write a mask that is no longer shown."""
        layer = self.layer
        if layer is None or layer.id != layer_id or self.canvas is None or self.canvas.stack.get(layer_id) is not None:
            return
        self._reset()
        self._redraw()
        self.host.message(f"Polygon edit ended: {layer.name} was removed meanwhile; nothing was changed.")
        self._finish()

    def _finish(self) -> None:
        if self.finished is not None:
            self.finished()

    # ----- events
    def _tol(self) -> float:
        zoom = self.canvas.zoom() if self.canvas is not None else 1.0
        return HANDLE_PX / max(zoom, 1e-6)

    def press(self, e: CanvasMouse) -> bool:
        if not self.editing():
            return False
        tol = self._tol()
        hit = self.shape.vertex_at(e.x, e.y, tol)
        if e.button == Qt.MouseButton.RightButton:
            if hit is not None:
                self._delete(hit)
            return True
        if e.button != Qt.MouseButton.LeftButton:
            return False
        if hit is not None:
            self.active, self._drag = hit, "vertex"
        elif self.shape.ring_containing(e.x, e.y) is not None:
            self._drag = "shape"
        self._last = (e.x, e.y)
        self._redraw()
        return True

    def move(self, e: CanvasMouse) -> bool:
        if self._drag == "vertex" and self.active is not None:
            self.shape.move_vertex(*self.active, e.x, e.y)
        elif self._drag == "shape":
            self.shape.translate(e.x - self._last[0], e.y - self._last[1])
        else:
            return False
        self._last = (e.x, e.y)
        self._changed = True
        self._redraw()
        return True

    def release(self, e: CanvasMouse) -> bool:
        if not self._drag:
            return self.editing()
        self._drag = ""
        return True

    def double_click(self, e: CanvasMouse) -> bool:
        if not self.editing() or e.button != Qt.MouseButton.LeftButton:
            return False
        self._drag = ""
        tol = self._tol()
        if self.shape.vertex_at(e.x, e.y, tol) is not None:
            return True
        edge = self.shape.edge_at(e.x, e.y, tol)
        if edge is not None:
            ring, after, (x, y) = edge
            self.active = (ring, self.shape.insert_vertex(ring, after, x, y))
            self._changed = True
            self._redraw()
        return True

    def key_press(self, event) -> bool:
        if not self.editing():
            return False
        key = event.key()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.apply()
            return True
        if key == Qt.Key.Key_Escape:
            self.cancel()
            return True
        if key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            if self.active is not None:
                self._delete(self.active)
            return True
        return False

    def _delete(self, where: tuple[int, int]) -> None:
        if self.shape.delete_vertex(*where):
            self.active = None
            self._changed = True
            self._redraw()
        else:
            self.host.message(f"A polygon keeps at least {MIN_VERTICES} vertices.")

    # ----- drawing
    def _redraw(self, *_args) -> None:
        if self._outline is None or self._handles is None or self._active_item is None:
            return
        outline, handles, active = QPainterPath(), QPainterPath(), QPainterPath()
        handles.setFillRule(Qt.FillRule.WindingFill)   # overlapping handles stay filled
        half = self._tol() / 2
        for ring in self.shape.rings:
            if len(ring) == 0:
                continue
            outline.moveTo(float(ring[0, 0]), float(ring[0, 1]))
            for x, y in ring[1:]:
                outline.lineTo(float(x), float(y))
            outline.closeSubpath()
            for x, y in ring:
                handles.addRect(QRectF(float(x) - half, float(y) - half, 2 * half, 2 * half))
        if self.active is not None:
            ri, vi = self.active
            if ri < len(self.shape.rings) and vi < len(self.shape.rings[ri]):
                x, y = (float(v) for v in self.shape.rings[ri][vi])
                active.addRect(QRectF(x - half * 1.4, y - half * 1.4, 2.8 * half, 2.8 * half))
        self._outline.setPath(outline)
        self._handles.setPath(handles)
        self._active_item.setPath(active)

    def vertices(self) -> list[np.ndarray]:
        """The rings being edited (for tests and the window)."""
        return self.shape.rings
