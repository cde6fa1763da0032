"""Editing tools on the selected mask: brush, eraser, polygon add / subtract and SAM clicks.

A tool receives canvas mouse and key events in image coordinates and talks to an ``EditHost`` (the
annotation controller): brush strokes draw straight into the layer for instant feedback and are
committed as one edit (rectangle, before, after) on release, so undo stores only the changed region.
SAM clicks are asked of the host, which answers asynchronously from a worker thread.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QCursor, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsItem, QGraphicsPathItem

from .imaging import rgba_view_qimage
from .layers import MaskLayer, Rect

if TYPE_CHECKING:
    from .canvas import Canvas, CanvasMouse

log = logging.getLogger(__name__)

MIN_BRUSH, MAX_BRUSH = 1, 500


class EditHost(Protocol):
    """What tools need from the controller that owns the layers and the history."""

    def selected_layer(self) -> MaskLayer | None: ...
    def layer_touched(self, layer_id: int, rect: Rect) -> None: ...
    def commit_mask_edit(self, layer_id: int, rect: Rect, before: np.ndarray, after: np.ndarray,
                         label: str) -> None: ...
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

    def activate(self, canvas: "Canvas") -> None:
        self.canvas = canvas

    def deactivate(self) -> None:
        self.canvas = None

    def cursor(self) -> QCursor:
        return QCursor(Qt.CursorShape.CrossCursor)

    def press(self, e: "CanvasMouse") -> bool:
        return False

    def move(self, e: "CanvasMouse") -> bool:
        return False

    def release(self, e: "CanvasMouse") -> bool:
        return False

    def double_click(self, e: "CanvasMouse") -> bool:
        return False

    def key_press(self, event) -> bool:
        return False

    def wheel(self, delta: int) -> bool:
        return False

    def leave(self) -> None:
        pass


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
        self._stroke: dict | None = None
        self._last_pos = QPointF(-1e9, -1e9)

    def activate(self, canvas: "Canvas") -> None:
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

    def set_radius(self, radius: int) -> None:
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
            r = self.radius
            self._ring.setRect(QRectF(pos.x() - r, pos.y() - r, 2 * r, 2 * r))
            self._ring.setVisible(pos.x() > -1e8)

    def press(self, e: "CanvasMouse") -> bool:
        if e.button != Qt.MouseButton.LeftButton:
            return False
        layer = self.host.selected_layer()
        if layer is None:
            self.host.message("Select a mask first (click it, or pick it in the concept panel).")
            return True
        self._stroke = {"layer": layer, "before": layer.mask.copy(), "rect": None, "last": (e.x, e.y)}
        self._paint_segment(e.x, e.y, e.x, e.y)
        return True

    def move(self, e: "CanvasMouse") -> bool:
        self._place_ring(QPointF(e.x, e.y))
        if self._stroke is None:
            return False
        lx, ly = self._stroke["last"]
        self._paint_segment(lx, ly, e.x, e.y)
        self._stroke["last"] = (e.x, e.y)
        return True

    def release(self, e: "CanvasMouse") -> bool:
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

    def _paint_segment(self, x0: float, y0: float, x1: float, y1: float) -> None:
        stroke = self._stroke
        layer: MaskLayer = stroke["layer"]
        h, w = layer.mask.shape
        r = self.radius
        rect = (
            max(0, int(min(y0, y1) - r - 1)), min(h, int(max(y0, y1) + r + 2)),
            max(0, int(min(x0, x1) - r - 1)), min(w, int(max(x0, x1) + r + 2)),
        )
        if rect[1] <= rect[0] or rect[3] <= rect[2]:
            return
        ry0, ry1, rx0, rx1 = rect
        # Draw in a small scratch patch (pixel centres at +0.5) and merge: OpenCV cannot draw into bool.
        patch = np.zeros((ry1 - ry0, rx1 - rx0), np.uint8)
        s = 4  # sub-pixel bits
        p0 = (int(round((x0 - 0.5 - rx0) * (1 << s))), int(round((y0 - 0.5 - ry0) * (1 << s))))
        p1 = (int(round((x1 - 0.5 - rx0) * (1 << s))), int(round((y1 - 0.5 - ry0) * (1 << s))))
        cv2.circle(patch, p0, int(r * (1 << s)), 1, -1, cv2.LINE_8, s)
        cv2.circle(patch, p1, int(r * (1 << s)), 1, -1, cv2.LINE_8, s)
        if p0 != p1:
            cv2.line(patch, p0, p1, 1, max(1, 2 * r), cv2.LINE_8, s)
        target = layer.mask[ry0:ry1, rx0:rx1]
        if self.erase:
            target &= patch == 0
        else:
            target |= patch.astype(bool)
        from .layers import union_rect

        stroke["rect"] = union_rect(stroke["rect"], rect)
        self.host.layer_touched(layer.id, rect)

    def _finish_stroke(self) -> None:
        stroke, self._stroke = self._stroke, None
        if stroke is None or stroke["rect"] is None:
            return
        y0, y1, x0, x1 = stroke["rect"]
        layer: MaskLayer = stroke["layer"]
        before = stroke["before"][y0:y1, x0:x1].copy()
        after = layer.mask[y0:y1, x0:x1].copy()
        if np.array_equal(before, after):
            return
        self.host.commit_mask_edit(layer.id, stroke["rect"], before, after, self.label)


def rasterize_polygon(points: list[tuple[float, float]], shape: tuple[int, int]) -> tuple[Rect, np.ndarray] | None:
    """Pixels whose centres lie inside the polygon (even-odd rule), as (rect, bool patch).

    A scanline fill over pixel centres: exact for the edge-coordinate convention of the canvas, where
    pixel (i, j) spans [j, j+1) x [i, i+1) (OpenCV's fillPoly would also take boundary pixels).
    """
    if len(points) < 3:
        return None
    h, w = shape
    pts = np.asarray(points, np.float64)
    x0 = max(0, int(np.floor(pts[:, 0].min())))
    x1 = min(w, int(np.ceil(pts[:, 0].max())))
    y0 = max(0, int(np.floor(pts[:, 1].min())))
    y1 = min(h, int(np.ceil(pts[:, 1].max())))
    if x1 <= x0 or y1 <= y0:
        return None
    patch = np.zeros((y1 - y0, x1 - x0), bool)
    a = pts
    b = np.roll(pts, -1, axis=0)
    for row in range(y0, y1):
        yc = row + 0.5
        crosses = (a[:, 1] <= yc) != (b[:, 1] <= yc)
        if not crosses.any():
            continue
        ea, eb = a[crosses], b[crosses]
        xs = np.sort(ea[:, 0] + (yc - ea[:, 1]) * (eb[:, 0] - ea[:, 0]) / (eb[:, 1] - ea[:, 1]))
        for xa, xb in zip(xs[0::2], xs[1::2]):
            # Pixel columns whose centre j + 0.5 lies in [xa, xb).
            c0 = max(x0, int(np.ceil(xa - 0.5)))
            c1 = min(x1, int(np.ceil(xb - 0.5)))
            if c1 > c0:
                patch[row - y0, c0 - x0:c1 - x0] = True
    return (y0, y1, x0, x1), patch


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

    def activate(self, canvas: "Canvas") -> None:
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

    def press(self, e: "CanvasMouse") -> bool:
        if e.button == Qt.MouseButton.LeftButton:
            self.points.append((e.x, e.y))
            self._redraw()
            return True
        if e.button == Qt.MouseButton.RightButton and self.points:
            self.points.pop()
            self._redraw()
            return True
        return False

    def move(self, e: "CanvasMouse") -> bool:
        self._hover = (e.x, e.y)
        if self.points:
            self._redraw()
        return False

    def double_click(self, e: "CanvasMouse") -> bool:
        if e.button == Qt.MouseButton.LeftButton:
            self.close_polygon()
            return True
        return False

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
        raster = rasterize_polygon(points, layer.mask.shape)
        if raster is None:
            self.host.message("A polygon needs at least three points inside the image.")
            return
        rect, inside = raster
        y0, y1, x0, x1 = rect
        before = layer.mask[y0:y1, x0:x1].copy()
        after = before & ~inside if self.subtract else before | inside
        if np.array_equal(before, after):
            return
        layer.mask[y0:y1, x0:x1] = after
        self.host.layer_touched(layer.id, rect)
        self.host.commit_mask_edit(layer.id, rect, before, after, self.label)


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
        self._preview_item = None
        self._preview_buf: np.ndarray | None = None

    def activate(self, canvas: "Canvas") -> None:
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

    def press(self, e: "CanvasMouse") -> bool:
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

    def key_press(self, event) -> bool:
        key = event.key()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (event.modifiers() & Qt.KeyboardModifier.ControlModifier):
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
