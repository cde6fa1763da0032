"""Mask -> COCO polygon rings, and the coordinate convention of our polygons.

Convention: vertices lie on pixel *edges*, in COCO continuous coordinates where pixel (x, y) covers
[x, x + 1] x [y, y + 1]. The ring is the exact outline of the pixels (not a contour through pixel
centres, which sits half a pixel inside the edge and shrinks small shapes), so pycocotools
rasterises it back to the same pixels. Every ring therefore has at least 4 vertices, even for a
one-pixel object. Holes are not expressible (COCO polygons have no inner rings): only outer
outlines are traced, and callers decide whether to report the loss or write RLE instead.
"""

from __future__ import annotations

import cv2
import numpy as np


def outer_rings(crop: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[list[int]]:
    """Outer outlines of the 8-connected parts of a bool crop, as flat [x1, y1, x2, y2, ...] lists
    in full-image coordinates (``offset`` = (x, y) of the crop). Rings run along pixel edges."""
    if not crop.any():
        return []
    ox, oy = offset
    # Doubling the resolution puts the outermost foreground pixels on both sides of every edge at
    # distinct coordinates; ceil(u / 2) then maps each contour pixel to the pixel corner it touches.
    up = cv2.resize(np.ascontiguousarray(crop, dtype=bool).view(np.uint8), None, fx=2, fy=2,
                    interpolation=cv2.INTER_NEAREST_EXACT)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    rings = []
    for c in contours:
        p = (c.reshape(-1, 2) + 1) // 2
        keep = np.ones(len(p), bool)
        keep[1:] = np.any(p[1:] != p[:-1], axis=1)
        p = p[keep]
        if len(p) > 1 and np.array_equal(p[0], p[-1]):
            p = p[:-1]
        p = _drop_collinear(p)
        if len(p) < 3:  # cannot happen for edge outlines; guarded because a 2-point ring is a box
            continue
        p = p + (ox, oy)
        rings.append(p.ravel().tolist())
    return rings


def _drop_collinear(p: np.ndarray) -> np.ndarray:
    """Remove vertices in the middle of straight runs (the doubling leaves some behind)."""
    if len(p) < 4:
        return p
    prev = np.roll(p, 1, axis=0)
    nxt = np.roll(p, -1, axis=0)
    cross = (p[:, 0] - prev[:, 0]) * (nxt[:, 1] - p[:, 1]) - (p[:, 1] - prev[:, 1]) * (nxt[:, 0] - p[:, 0])
    return p[cross != 0]
