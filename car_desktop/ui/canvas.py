"""The image canvas: a QGraphicsView showing the image, the mask layers and the active tool.

Zoom at the cursor with the wheel, pan with space+drag or the middle button, fit and 100%. All mask
layers are composited into one RGBA overlay buffer (alpha 255 where a mask is) whose item opacity is
the user's opacity slider, so changing the opacity never recomposites; an edit recomposites only its
rectangle. The selected layer gets an outline traced with OpenCV, the hovered pixel's concept shows
as a tooltip. Mouse events over the image go to the active tool (tools.py) in image coordinates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from PySide6.QtCore import QEvent, QPoint, QRect, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QImage, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsScene,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QToolTip,
    QWidget,
)

from ..annotations.models import Rect
from .imaging import rgb_to_qimage, rgba_view_qimage
from .layers import LayerStack

log = logging.getLogger(__name__)

MIN_ZOOM, MAX_ZOOM = 0.02, 40.0


class ImageItem(QGraphicsItem):
    """Draws a QImage at scene origin, painting only the exposed part (cheap for 24-megapixel images)."""

    def __init__(self, image: QImage | None = None) -> None:
        super().__init__()
        self._image = image or QImage()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)

    def set_image(self, image: QImage) -> None:
        self.prepareGeometryChange()
        self._image = image
        self.update()

    def image(self) -> QImage:
        return self._image

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, self._image.width(), self._image.height())

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        if self._image.isNull():
            return
        exposed = option.exposedRect.intersected(self.boundingRect()).toAlignedRect()
        if exposed.isEmpty():
            return
        # Smooth when zoomed out (readable), nearest when zoomed in (pixels stay pixels).
        scale = painter.worldTransform().m11()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, scale < 1.0)
        painter.drawImage(exposed, self._image, exposed)


@dataclass
class CanvasMouse:
    """A mouse event in image coordinates (floats; pixel (i, j) spans [j, j+1) x [i, i+1))."""

    x: float
    y: float
    button: Qt.MouseButton
    buttons: Qt.MouseButton
    modifiers: Qt.KeyboardModifier

    @property
    def ix(self) -> int:
        return int(np.floor(self.x))

    @property
    def iy(self) -> int:
        return int(np.floor(self.y))


class Canvas(QGraphicsView):
    """The view of one image with its mask layers."""

    hovered = Signal(str)            # concept under the cursor ("" for none)
    cursorMoved = Signal(int, int)   # image pixel under the cursor
    zoomChanged = Signal(float)
    layerMenuRequested = Signal(int, QPoint)   # layer id under a right click (no tool active), global pos

    def __init__(self, stack: LayerStack, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.stack = stack
        self._scene = QGraphicsScene(self)
        self.setScene(self._scene)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setBackgroundBrush(QBrush(QColor(48, 48, 52)))
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)

        self._image_item = ImageItem()
        self._overlay_item = ImageItem()
        self._overlay_item.setZValue(1)
        self._overlay_item.setOpacity(0.5)
        self._outline_item = QGraphicsPathItem()
        self._outline_item.setZValue(2)
        pen = QPen(QColor(255, 255, 255), 2)
        pen.setCosmetic(True)
        self._outline_item.setPen(pen)
        self._outline_shadow = QGraphicsPathItem()
        self._outline_shadow.setZValue(1.9)
        shadow = QPen(QColor(0, 0, 0, 200), 4)
        shadow.setCosmetic(True)
        self._outline_shadow.setPen(shadow)
        for item in (self._image_item, self._overlay_item, self._outline_shadow, self._outline_item):
            self._scene.addItem(item)

        self._overlay = np.zeros((0, 0, 4), np.uint8)
        self._image_size = (0, 0)
        self._notice = ""          # drawn centred over an empty canvas (how to begin, an unreadable file)
        self._tool = None
        self._panning = False
        self._space_down = False
        self._pan_last = QPoint()
        self._last_hover = ""
        self._fitted = True          # refit on resize until the user zooms
        self._dirty: Rect | None = None
        self._dirty_all = False
        self._outline_timer = QTimer(self, singleShot=True, interval=40)
        self._outline_timer.timeout.connect(self._update_outline)
        self._composite_timer = QTimer(self, singleShot=True, interval=0)
        self._composite_timer.timeout.connect(self._flush_composite)

        stack.reset.connect(self._on_reset)
        stack.layerChanged.connect(self._on_layer_changed)
        stack.selectionChanged.connect(lambda _id: self._outline_timer.start())

    # ----- image
    def set_image(self, image: np.ndarray | None) -> None:
        """Show a new image (uint8 RGB) or nothing; the layer stack is reset by its owner."""
        if image is None:
            self._image_item.set_image(QImage())
            self._image_size = (0, 0)
        else:
            self._image_item.set_image(rgb_to_qimage(image))
            self._image_size = image.shape[:2]
        h, w = self._image_size
        self._scene.setSceneRect(QRectF(0, 0, w, h))
        self._alloc_overlay()
        self.fit()

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    def set_notice(self, text: str) -> None:
        """Text shown centred while no image is shown ("" for none)."""
        self._notice = text
        self.viewport().update()

    def notice(self) -> str:
        return self._notice if not self.has_image() else ""

    def show_notice(self, text: str) -> None:
        """Show no image, only ``text`` (the file cannot be read: never leave the previous one up)."""
        self.set_image(None)
        self.set_notice(text)

    def drawForeground(self, painter: QPainter, rect: QRectF | QRect) -> None:
        super().drawForeground(painter, rect)
        text = self.notice()
        if not text:
            return
        painter.save()
        painter.resetTransform()   # draw in viewport pixels, whatever the zoom
        area = self.viewport().rect().adjusted(40, 40, -40, -40)
        font = painter.font()
        font.setPointSizeF(font.pointSizeF() * 1.25)
        painter.setFont(font)
        painter.setPen(QColor(215, 215, 220))
        painter.drawText(area, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), text)
        painter.restore()

    def has_image(self) -> bool:
        return self._image_size != (0, 0)

    # ----- overlay
    def set_opacity(self, value: float) -> None:
        self._overlay_item.setOpacity(max(0.0, min(1.0, value)))

    def opacity(self) -> float:
        return self._overlay_item.opacity()

    def overlay_rgba(self) -> np.ndarray:
        """The composited overlay buffer (for tests)."""
        self._flush_composite()
        return self._overlay

    def _alloc_overlay(self) -> None:
        h, w = self._image_size
        self._overlay = np.zeros((h, w, 4), np.uint8)
        self._overlay_item.set_image(rgba_view_qimage(self._overlay) if h and w else QImage())
        self._dirty_all = True
        self._composite_timer.start()

    def _on_reset(self) -> None:
        if self.stack.size != self._image_size:
            log.debug("layer stack %s differs from image %s", self.stack.size, self._image_size)
        self._dirty_all = True
        self._composite_timer.start()
        self._outline_timer.start()

    def _on_layer_changed(self, layer_id: int, rect: Rect | None) -> None:
        if rect is None:
            self._dirty_all = True
        else:
            self._dirty = rect.union(self._dirty)
        self._composite_timer.start()
        if layer_id == self.stack.selected_id:
            self._outline_timer.start()

    def _flush_composite(self) -> None:
        h, w = self._image_size
        if not (h and w) or self.stack.size != (h, w):
            self._dirty, self._dirty_all = None, False
            if h and w:
                self._overlay[:] = 0
                self._overlay_item.update()
            return
        dirty = Rect(0, 0, h, w) if self._dirty_all else self._dirty
        self._dirty, self._dirty_all = None, False
        if dirty is None:
            return
        rect = dirty.clip((h, w))
        if rect.is_empty:
            return
        region = self._overlay[rect.slices]
        region[:] = 0
        for layer in self.stack.layers():
            if not layer.visible:
                continue
            sub = layer.mask[rect.slices]
            if sub.any():
                region[sub] = (*layer.color, 255)
        self._overlay_item.update(QRectF(rect.x0, rect.y0, rect.x1 - rect.x0, rect.y1 - rect.y0))

    def _update_outline(self) -> None:
        layer = self.stack.selected()
        path = QPainterPath()
        if layer is not None and layer.visible and layer.mask.shape == self._image_size:
            box = Rect.of_mask(layer.mask)
            if box is not None:
                y0, x0 = box.y0, box.x0
                sub = np.ascontiguousarray(layer.mask[box.slices]).view(np.uint8)
                contours, _ = cv2.findContours(sub, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
                for contour in contours:
                    pts = contour[:, 0, :]
                    if len(pts) < 2:
                        continue
                    # Contours run through pixel centres: shift by +0.5 so they sit on the drawn pixels.
                    path.moveTo(pts[0][0] + x0 + 0.5, pts[0][1] + y0 + 0.5)
                    for px, py in pts[1:]:
                        path.lineTo(px + x0 + 0.5, py + y0 + 0.5)
                    path.closeSubpath()
        self._outline_item.setPath(path)
        self._outline_shadow.setPath(path)

    # ----- zoom and pan
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, factor: float, anchor_under_mouse: bool = False) -> None:
        factor = max(MIN_ZOOM, min(MAX_ZOOM, factor))
        anchor = self.transformationAnchor()
        if not anchor_under_mouse:
            self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setTransform(self.transform().fromScale(factor, factor))
        self.setTransformationAnchor(anchor)
        self._fitted = False
        self.zoomChanged.emit(factor)

    def zoom_by(self, ratio: float, view_pos: QPoint | None = None) -> None:
        """Zoom by ``ratio`` keeping the image point under ``view_pos`` (default: view centre) fixed."""
        current = self.zoom()
        target = max(MIN_ZOOM, min(MAX_ZOOM, current * ratio))
        if abs(target - current) < 1e-9:
            return
        if view_pos is None:
            view_pos = self.viewport().rect().center()
        anchor_scene = self.mapToScene(view_pos)
        old_anchor = self.transformationAnchor()
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.scale(target / current, target / current)
        # Scroll so the anchored image point sits under the cursor again.
        moved = self.mapFromScene(anchor_scene) - view_pos
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + moved.x())
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + moved.y())
        self.setTransformationAnchor(old_anchor)
        self._fitted = False
        self.zoomChanged.emit(target)

    def fit(self) -> None:
        h, w = self._image_size
        if not (h and w):
            return
        self.fitInView(QRectF(0, 0, w, h), Qt.AspectRatioMode.KeepAspectRatio)
        self._fitted = True
        self.zoomChanged.emit(self.zoom())

    def is_fitted(self) -> bool:
        """Whether the view shows the fitted image (a resize then refits it)."""
        return self._fitted

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fitted and self.has_image():
            self.fit()

    def event(self, event) -> bool:
        # Keys a tool claims (Delete while editing a polygon) reach it before the window's shortcuts.
        if event.type() == QEvent.Type.ShortcutOverride and self._tool is not None \
                and self._tool.claims_key(event.key()):
            event.accept()
            return True
        return super().event(event)

    def contextMenuEvent(self, event) -> None:
        if self._tool is None and self.has_image():
            p = self.mapToScene(event.pos())
            layer = self.stack.layer_at(int(np.floor(p.x())), int(np.floor(p.y())))
            if layer is not None:
                self.stack.select(layer.id)
                self.layerMenuRequested.emit(layer.id, event.globalPos())
                event.accept()
                return
        super().contextMenuEvent(event)

    def actual_size(self) -> None:
        self.set_zoom(1.0)

    def wheelEvent(self, event) -> None:
        if (event.modifiers() & Qt.KeyboardModifier.ControlModifier and self._tool is not None
                and self._tool.wheel(event.angleDelta().y())):
            return
        delta = event.angleDelta().y()
        if delta:
            self.zoom_by(1.25 ** (delta / 120.0), event.position().toPoint())
        event.accept()

    # ----- tools
    def set_tool(self, tool) -> None:
        if self._tool is not None:
            self._tool.deactivate()
        self._tool = tool
        if tool is not None:
            tool.activate(self)
        self._apply_cursor()

    def tool(self):
        return self._tool

    def _apply_cursor(self) -> None:
        if self._panning:
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
        elif self._space_down:
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
        elif self._tool is not None:
            self.viewport().setCursor(self._tool.cursor())
        else:
            self.viewport().setCursor(Qt.CursorShape.ArrowCursor)

    def scene_item_add(self, item: QGraphicsItem) -> None:
        item.setZValue(max(item.zValue(), 5))
        self._scene.addItem(item)

    def _to_canvas_mouse(self, event) -> CanvasMouse:
        p = self.mapToScene(event.position().toPoint())
        return CanvasMouse(p.x(), p.y(), event.button(), event.buttons(), event.modifiers())

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.MiddleButton or (
            event.button() == Qt.MouseButton.LeftButton and self._space_down
        ):
            self._panning = True
            self._pan_last = event.position().toPoint()
            self._apply_cursor()
            event.accept()
            return
        if self._tool is not None and self.has_image() and self._tool.press(self._to_canvas_mouse(event)):
            event.accept()
            return
        if event.button() == Qt.MouseButton.LeftButton and self.has_image():
            p = self._to_canvas_mouse(event)
            layer = self.stack.layer_at(p.ix, p.iy)
            self.stack.select(layer.id if layer else -1)
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        if self._panning:
            pos = event.position().toPoint()
            delta = pos - self._pan_last
            self._pan_last = pos
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - delta.x())
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - delta.y())
            event.accept()
            return
        if self.has_image():
            p = self._to_canvas_mouse(event)
            self.cursorMoved.emit(p.ix, p.iy)
            self._hover(p, event)
            if self._tool is not None and self._tool.move(p):
                event.accept()
                return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        if self._panning and event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
            self._panning = False
            self._apply_cursor()
            event.accept()
            return
        if self._tool is not None and self.has_image() and self._tool.release(self._to_canvas_mouse(event)):
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event) -> None:
        if self._tool is not None and self.has_image() and self._tool.double_click(self._to_canvas_mouse(event)):
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def keyPressEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = True
            self._apply_cursor()
            event.accept()
            return
        if self._tool is not None and self._tool.key_press(event):
            event.accept()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = False
            self._apply_cursor()
            event.accept()
            return
        super().keyReleaseEvent(event)

    def leaveEvent(self, event) -> None:
        if self._last_hover:
            self._last_hover = ""
            self.hovered.emit("")
        if self._tool is not None:
            self._tool.leave()
        super().leaveEvent(event)

    def _hover(self, p: CanvasMouse, event) -> None:
        layer = self.stack.layer_at(p.ix, p.iy)
        text = ""
        if layer is not None:
            text = layer.name if layer.score is None else f"{layer.name} ({layer.score:.2f})"
        if text != self._last_hover:
            self._last_hover = text
            self.hovered.emit(text)
            if text:
                QToolTip.showText(event.globalPosition().toPoint(), text, self)
            else:
                QToolTip.hideText()
