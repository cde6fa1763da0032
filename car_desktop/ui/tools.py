"""Editing tools on the selected mask: brush, eraser, polygon add / subtract and SAM clicks.

A tool receives canvas mouse and key events in image coordinates and talks to an ``EditHost`` (the
annotation controller): brush strokes draw straight into the layer for instant feedback and are
committed as one edit (rectangle, before, after) on release, so undo stores only the changed region.
The pixels of strokes and polygons come from ``annotations.mask_ops``, the one implementation of
mask geometry. SAM clicks are asked of the host, which answers asynchronously from a worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QCursor, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsItem, QGraphicsPathItem

from ..annotations import mask_ops
from ..annotations.models import Edit, Rect
from .imaging import rgba_view_qimage
from .layers import MaskLayer

if TYPE_CHECKING:
    from .canvas import Canvas, CanvasMouse, ImageItem

log = logging.getLogger(__name__)

MIN_BRUSH, MAX_BRUSH = 1, 500


class EditHost(Protocol):
    """What tools need from the controller that owns the layers and the history."""

    def selected_layer(self) -> MaskLayer | None: ...
    def layer_touched(self, layer_id: int, rect: Rect) -> None: ...
    def commit_mask_edit(self, layer_id: int, edit: Edit, label: str) -> None: ...
    def message(self, text: str) -> None: ...
    def sam_predict(self, points: list[tuple[float, float]], labels: list[int]) -> None: ...
    def sam_accept(self, mask: np.ndarray) -> None: ...


def _cosmetic_pen(color: QColor, width: float = 1.5, style=Qt.PenStyle.SolidLine) -> QPen:
    pen = QPen(color, width, style)
    pen.setCosmetic(True)
    return pen


class Tool:
    """Base class: every handler returns True when it consumed the event."""

    name = "tool"
    label = "Tool"

    def __init__(self, host: EditHost) -> None:
        self.host = host
        self.canvas: Canvas | None = None

    def activate(self, canvas: Canvas) -> None:
        self.canvas = canvas

    def deactivate(self) -> None:
        self.canvas = None

    def cursor(self) -> QCursor:
        return QCursor(Qt.CursorShape.CrossCursor)

    def press(self, e: CanvasMouse) -> bool:
        return False

    def move(self, e: CanvasMouse) -> bool:
        return False

    def release(self, e: CanvasMouse) -> bool:
        return False

    def double_click(self, e: CanvasMouse) -> bool:
        return False

    def key_press(self, event) -> bool:
        return False

    def wheel(self, delta: int) -> bool:
        return False

    def leave(self) -> None:
        pass

    def has_pending_input(self) -> bool:
        """True while the tool holds clicks that Esc would discard (Esc then belongs to the tool)."""
        return False

    def cancel_input(self) -> None:
        """Discard what ``has_pending_input`` reports (the window's Esc)."""

    def claims_key(self, key: int) -> bool:
        """True for keys the tool needs before the window's shortcuts see them (e.g. Delete)."""
        return False


@dataclass
class _Stroke:
    layer: MaskLayer
    before: np.ndarray          # the whole mask when the button went down
    last: tuple[float, float]
    rect: Rect | None = None    # everything painted so far


class BrushTool(Tool):
    """Paint (or with ``erase=True`` remove) a round brush into the selected mask."""

    name = "brush"
    label = "Brush"

    def __init__(self, host: EditHost, erase: bool = False, radius: int = 12) -> None:
        super().__init__(host)
        self.erase = erase
        if erase:
            self.name, self.label = "eraser", "Eraser"
        self.radius = radius
        self._ring: QGraphicsEllipseItem | None = None
        self._stroke: _Stroke | None = None
        self._last_pos = QPointF(-1e9, -1e9)

    def activate(self, canvas: Canvas) -> None:
        super().activate(canvas)
        self._ring = QGraphicsEllipseItem()
        self._ring.setPen(_cosmetic_pen(QColor(255, 80, 80) if self.erase else QColor(255, 255, 255), 1.5))
        self._ring.setZValue(10)
        self._ring.setVisible(False)
        canvas.scene_item_add(self._ring)

    def deactivate(self) -> None:
        self._finish_stroke()
        if self._ring is not None and self._ring.scene() is not None:
            self._ring.scene().removeItem(self._ring)
        self._ring = None
        super().deactivate()

    def set_radius(self, radius: float) -> None:
        self.radius = int(max(MIN_BRUSH, min(MAX_BRUSH, radius)))
        self._place_ring(self._last_pos)
        self.host.message(f"{self.label} size {self.radius * 2} px")

    def grow(self) -> None:
        self.set_radius(self.radius * 1.25 + 1)

    def shrink(self) -> None:
        self.set_radius(self.radius / 1.25)

    def _place_ring(self, pos: QPointF) -> None:
        self._last_pos = pos
        if self._ring is not None:
            # mask_ops centres the disc on the pixel under the cursor; its edge lies half a pixel out.
            cx, cy = np.floor(pos.x()) + 0.5, np.floor(pos.y()) + 0.5
            r = round(self.radius) + 0.5
            self._ring.setRect(QRectF(cx - r, cy - r, 2 * r, 2 * r))
            self._ring.setVisible(pos.x() > -1e8)

    def press(self, e: CanvasMouse) -> bool:
        if e.button != Qt.MouseButton.LeftButton:
            return False
        layer = self.host.selected_layer()
        if layer is None:
            self.host.message("Select a mask first (click it, or pick it in the concept panel).")
            return True
        self._stroke = _Stroke(layer, layer.mask.copy(), (e.x, e.y))
        self._paint_segment((e.x, e.y))
        return True

    def move(self, e: CanvasMouse) -> bool:
        self._place_ring(QPointF(e.x, e.y))
        if self._stroke is None:
            return False
        self._paint_segment((e.x, e.y))
        return True

    def release(self, e: CanvasMouse) -> bool:
        if e.button != Qt.MouseButton.LeftButton or self._stroke is None:
            return False
        self._finish_stroke()
        return True

    def leave(self) -> None:
        if self._ring is not None:
            self._ring.setVisible(False)

    def key_press(self, event) -> bool:
        if event.key() == Qt.Key.Key_BracketRight:
            self.grow()
            return True
        if event.key() == Qt.Key.Key_BracketLeft:
            self.shrink()
            return True
        return False

    def wheel(self, delta: int) -> bool:
        self.grow() if delta > 0 else self.shrink()
        return True

    def _paint_segment(self, to: tuple[float, float]) -> None:
        """Paint from the last point to ``to`` straight into the layer (committed on release)."""
        stroke = self._stroke
        assert stroke is not None
        rect = mask_ops.paint_into(stroke.layer.mask, [stroke.last, to], self.radius, value=not self.erase)
        stroke.last = to
        if rect is not None:
            stroke.rect = rect.union(stroke.rect)
            self.host.layer_touched(stroke.layer.id, rect)

    def _finish_stroke(self) -> None:
        stroke, self._stroke = self._stroke, None
        if stroke is None or stroke.rect is None:
            return
        rect = stroke.rect
        edit = mask_ops.region_edit(rect, stroke.before[rect.slices], stroke.layer.mask[rect.slices])
        if not edit.is_empty:
            self.host.commit_mask_edit(stroke.layer.id, edit, self.label)


class PolygonTool(Tool):
    """Click vertices; double-click or Enter closes and adds to (or subtracts from) the selected mask."""

    def __init__(self, host: EditHost, subtract: bool = False) -> None:
        super().__init__(host)
        self.subtract = subtract
        self.name = "polygon_subtract" if subtract else "polygon_add"
        self.label = "Polygon subtract" if subtract else "Polygon add"
        self.points: list[tuple[float, float]] = []
        self._hover: tuple[float, float] | None = None
        self._path: QGraphicsPathItem | None = None

    def activate(self, canvas: Canvas) -> None:
        super().activate(canvas)
        self._path = QGraphicsPathItem()
        colour = QColor(255, 90, 90) if self.subtract else QColor(90, 255, 120)
        self._path.setPen(_cosmetic_pen(colour, 2))
        fill = QColor(colour)
        fill.setAlpha(50)
        self._path.setBrush(QBrush(fill))
        canvas.scene_item_add(self._path)

    def deactivate(self) -> None:
        self.points = []
        if self._path is not None and self._path.scene() is not None:
            self._path.scene().removeItem(self._path)
        self._path = None
        super().deactivate()

    def _redraw(self) -> None:
        if self._path is None:
            return
        path = QPainterPath()
        pts = self.points + ([self._hover] if self._hover and self.points else [])
        if pts:
            path.moveTo(*pts[0])
            for p in pts[1:]:
                path.lineTo(*p)
        self._path.setPath(path)

    def press(self, e: CanvasMouse) -> bool:
        if e.button == Qt.MouseButton.LeftButton:
            self.points.append((e.x, e.y))
            self._redraw()
            return True
        if e.button == Qt.MouseButton.RightButton and self.points:
            self.points.pop()
            self._redraw()
            return True
        return False

    def move(self, e: CanvasMouse) -> bool:
        self._hover = (e.x, e.y)
        if self.points:
            self._redraw()
        return False

    def double_click(self, e: CanvasMouse) -> bool:
        if e.button == Qt.MouseButton.LeftButton:
            self.close_polygon()
            return True
        return False

    def has_pending_input(self) -> bool:
        return bool(self.points)

    def cancel_input(self) -> None:
        self.points = []
        self._redraw()

    def key_press(self, event) -> bool:
        key = event.key()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.points:
            self.close_polygon()
            return True
        if key == Qt.Key.Key_Escape and self.points:
            self.points = []
            self._redraw()
            return True
        if key == Qt.Key.Key_Backspace and self.points:
            self.points.pop()
            self._redraw()
            return True
        return False

    def close_polygon(self) -> None:
        points, self.points = self.points, []
        self._redraw()
        # A double-click also delivered a press: drop a duplicated last vertex.
        while len(points) >= 2 and np.hypot(points[-1][0] - points[-2][0], points[-1][1] - points[-2][1]) < 1e-6:
            points.pop()
        layer = self.host.selected_layer()
        if layer is None:
            self.host.message("Select a mask first (click it, or pick it in the concept panel).")
            return
        if len(points) < 3:
            self.host.message("A polygon needs at least three points.")
            return
        _new, edit = mask_ops.add_polygon(layer.mask, points, value=not self.subtract)
        if not edit.is_empty:
            self.host.commit_mask_edit(layer.id, edit, self.label)


class SamClickTool(Tool):
    """Left click adds a positive point, right click a negative one; Enter accepts, Esc cancels.

    Each click asks the host for a prediction (run in the SAM worker on the cached embedding); the
    host calls ``show_prediction`` with the mask, shown as a cyan preview until accepted.
    """

    name = "sam"
    label = "SAM clicks"

    def __init__(self, host: EditHost) -> None:
        super().__init__(host)
        self.points: list[tuple[float, float]] = []
        self.labels: list[int] = []
        self.preview: np.ndarray | None = None
        self._markers: list[QGraphicsEllipseItem] = []
        self._preview_item: ImageItem | None = None
        self._preview_buf: np.ndarray | None = None

    def activate(self, canvas: Canvas) -> None:
        super().activate(canvas)
        from .canvas import ImageItem

        self._preview_item = ImageItem()
        self._preview_item.setOpacity(0.55)
        canvas.scene_item_add(self._preview_item)

    def deactivate(self) -> None:
        self.clear()
        if self._preview_item is not None and self._preview_item.scene() is not None:
            self._preview_item.scene().removeItem(self._preview_item)
        self._preview_item = None
        super().deactivate()

    def press(self, e: CanvasMouse) -> bool:
        if e.button not in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            return False
        label = 1 if e.button == Qt.MouseButton.LeftButton else 0
        self.points.append((e.x, e.y))
        self.labels.append(label)
        self._add_marker(e.x, e.y, label)
        self.host.sam_predict(list(self.points), list(self.labels))
        return True

    def _add_marker(self, x: float, y: float, label: int) -> None:
        if self.canvas is None:
            return
        item = QGraphicsEllipseItem(-5, -5, 10, 10)
        item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
        item.setPos(x, y)
        item.setBrush(QBrush(QColor(40, 220, 80) if label else QColor(235, 50, 50)))
        item.setPen(_cosmetic_pen(QColor(255, 255, 255), 1.5))
        self.canvas.scene_item_add(item)
        item.setZValue(12)
        self._markers.append(item)

    def show_prediction(self, mask: np.ndarray | None) -> None:
        """Show the latest SAM mask (called by the host when the worker answers)."""
        self.preview = None if mask is None else mask.astype(bool)
        if self._preview_item is None:
            return
        if self.preview is None:
            from PySide6.QtGui import QImage

            self._preview_item.set_image(QImage())
            return
        h, w = self.preview.shape
        buf = np.zeros((h, w, 4), np.uint8)
        buf[self.preview] = (0, 230, 255, 255)
        self._preview_buf = buf
        self._preview_item.set_image(rgba_view_qimage(buf))

    def has_pending_input(self) -> bool:
        return bool(self.points)

    def cancel_input(self) -> None:
        self.clear()

    def key_press(self, event) -> bool:
        key = event.key()
        ctrl = event.modifiers() & Qt.KeyboardModifier.ControlModifier
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not ctrl:
            self.accept()
            return True
        if key == Qt.Key.Key_Escape and self.points:
            self.clear()
            return True
        if key == Qt.Key.Key_Backspace and self.points:
            self.points.pop()
            self.labels.pop()
            marker = self._markers.pop()
            if marker.scene() is not None:
                marker.scene().removeItem(marker)
            if self.points:
                self.host.sam_predict(list(self.points), list(self.labels))
            else:
                self.show_prediction(None)
            return True
        return False

    def accept(self) -> None:
        if self.preview is None or not self.preview.any():
            self.host.message("No SAM mask to accept yet: click on the object first.")
            return
        mask = self.preview
        self.clear()
        self.host.sam_accept(mask)

    def clear(self) -> None:
        self.points, self.labels = [], []
        for marker in self._markers:
            if marker.scene() is not None:
                marker.scene().removeItem(marker)
        self._markers = []
        self.show_prediction(None)
