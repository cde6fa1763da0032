"""Conversions between numpy images/masks and Qt images, and the stable concept colour palette."""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np
from PySide6.QtGui import QColor, QImage

#: Hand-picked, well-separated colours used first; more are generated from the golden angle.
_BASE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (128, 0, 0), (170, 255, 195), (128, 128, 0),
)


def palette_colour(index: int) -> tuple[int, int, int]:
    """The colour of the index-th category (stable: the same index always gets the same colour)."""
    if index < len(_BASE_COLOURS):
        return _BASE_COLOURS[index]
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def name_colour(name: str) -> tuple[int, int, int]:
    """A stable colour for a concept name (same name, same colour, across sessions)."""
    digest = int(hashlib.md5(name.strip().casefold().encode()).hexdigest()[:8], 16)
    return palette_colour(digest % 64)


def qcolor(rgb: tuple[int, int, int], alpha: int = 255) -> QColor:
    return QColor(int(rgb[0]), int(rgb[1]), int(rgb[2]), alpha)


def rgb_to_qimage(image: np.ndarray) -> QImage:
    """A deep-copied QImage of an (H, W, 3) uint8 RGB or (H, W) grey array."""
    image = np.ascontiguousarray(image)
    if image.ndim == 2:
        h, w = image.shape
        return QImage(image.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    h, w, c = image.shape
    if c == 4:
        return QImage(image.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
    return QImage(image.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def rgba_view_qimage(buffer: np.ndarray) -> QImage:
    """A QImage that shares memory with an (H, W, 4) uint8 buffer (the caller keeps the buffer alive)."""
    assert buffer.ndim == 3 and buffer.shape[2] == 4 and buffer.dtype == np.uint8 and buffer.flags.c_contiguous
    h, w = buffer.shape[:2]
    return QImage(buffer.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
