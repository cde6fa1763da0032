"""Mask editing operations: pure functions on 2-D bool masks, each returning the new mask and an
``Edit`` (the changed rectangle with its content before and after), so an undo stack stores small
diffs. Inputs are never modified.

Coordinates: points and polygon vertices are (x, y) in image pixel units where pixel (x, y) covers
[x, x + 1) x [y, y + 1); polygons are rasterised by pycocotools, exactly as a COCO polygon with
the same vertices is read back. A brush stroke is the
union of discs of ``radius`` (rounded to whole pixels) around every point of the polyline, centred
on the pixel that holds the point. Connectivity is 8 for
objects (as OpenCV traces them), so a hole is background not 4-connected to the outside.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .errors import MaskError
from .models import Edit

Point = tuple[float, float]
Rect = tuple[int, int, int, int]  # y0, x0, y1, x1 (half-open)

EMPTY_EDIT_RECT: Rect = (0, 0, 0, 0)


def _check(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise MaskError(f"a mask must be 2-D, got shape {m.shape}")
    return np.ascontiguousarray(m, dtype=bool)


def _empty_edit() -> Edit:
    return Edit(EMPTY_EDIT_RECT, np.zeros((0, 0), bool), np.zeros((0, 0), bool))


def _clip_rect(rect: Rect, shape: tuple[int, int]) -> Rect:
    y0, x0, y1, x1 = rect
    h, w = shape
    return max(0, y0), max(0, x0), min(h, y1), min(w, x1)


def _commit(mask: np.ndarray, rect: Rect, new_region: np.ndarray) -> tuple[np.ndarray, Edit]:
    """Apply ``new_region`` at ``rect`` and shrink the edit to the pixels that really changed."""
    y0, x0, y1, x1 = rect
    old_region = mask[y0:y1, x0:x1]
    diff = old_region != new_region
    if not diff.any():
        return mask.copy(), _empty_edit()
    rows = np.flatnonzero(diff.any(axis=1))
    cols = np.flatnonzero(diff.any(axis=0))
    ry0, ry1, rx0, rx1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    out = mask.copy()
    out[y0:y1, x0:x1] = new_region
    tight = (y0 + int(ry0), x0 + int(rx0), y0 + int(ry1), x0 + int(rx1))
    edit = Edit(tight, old_region[ry0:ry1, rx0:rx1].copy(), new_region[ry0:ry1, rx0:rx1].copy())
    return out, edit


def _bbox_rect(mask: np.ndarray, pad: int = 0) -> Rect | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return _clip_rect((int(rows[0]) - pad, int(cols[0]) - pad, int(rows[-1]) + 1 + pad,
                       int(cols[-1]) + 1 + pad), mask.shape)


def apply_edit(mask: np.ndarray, edit: Edit, reverse: bool = False, *, inplace: bool = False) -> np.ndarray:
    """Write ``edit.after`` (or ``edit.before`` with ``reverse``) into the edit's rectangle.

    Returns a new array unless ``inplace``. Raises MaskError if the rectangle does not fit.
    """
    out = mask if inplace else np.array(mask, dtype=bool, copy=True)
    if edit.is_empty:
        return out
    y0, x0, y1, x1 = edit.rect
    if y0 < 0 or x0 < 0 or y1 > out.shape[0] or x1 > out.shape[1]:
        raise MaskError(f"edit rectangle {edit.rect} does not fit a {out.shape[1]}x{out.shape[0]} mask")
    out[y0:y1, x0:x1] = edit.before if reverse else edit.after
    return out


def paint_stroke(mask: np.ndarray, points: Sequence[Point], radius: float,
                 value: bool = True) -> tuple[np.ndarray, Edit]:
    """Paint (``value=True``) or erase a polyline of discs of ``radius`` pixels."""
    m = _check(mask)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if pts.size == 0 or radius <= 0:
        return m.copy(), _empty_edit()
    r = float(radius)
    reach = int(np.ceil(r)) + 1
    rect = _clip_rect((int(np.floor(pts[:, 1].min())) - reach, int(np.floor(pts[:, 0].min())) - reach,
                       int(np.floor(pts[:, 1].max())) + reach + 1, int(np.floor(pts[:, 0].max())) + reach + 1),
                      m.shape)
    y0, x0, y1, x1 = rect
    if y1 <= y0 or x1 <= x0:
        return m.copy(), _empty_edit()
    brush = np.zeros((y1 - y0, x1 - x0), np.uint8)
    # Integer centres and radius keep the disc symmetric (OpenCV's sub-pixel circles are not); a
    # brush does not need sub-pixel placement.
    centres = np.floor(pts).astype(np.int64) - (x0, y0)
    rad = int(round(r))
    for i, (px, py) in enumerate(centres):
        cv2.circle(brush, (int(px), int(py)), rad, 1, -1, cv2.LINE_8)
        if i:
            qx, qy = centres[i - 1]
            cv2.line(brush, (int(qx), int(qy)), (int(px), int(py)), 1, 2 * rad + 1, cv2.LINE_8)
    region = m[y0:y1, x0:x1]
    stroke = brush.astype(bool)
    new_region = (region | stroke) if value else (region & ~stroke)
    return _commit(m, rect, new_region)


def erase(mask: np.ndarray, points: Sequence[Point], radius: float) -> tuple[np.ndarray, Edit]:
    """Erase a brush stroke (same geometry as ``paint_stroke``)."""
    return paint_stroke(mask, points, radius, value=False)


def _polygon_region(shape: tuple[int, int], polygon: Sequence[Point]) -> tuple[Rect, np.ndarray] | None:
    pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return None
    rect = _clip_rect((int(np.floor(pts[:, 1].min())), int(np.floor(pts[:, 0].min())),
                       int(np.ceil(pts[:, 1].max())) + 1, int(np.ceil(pts[:, 0].max())) + 1), shape)
    y0, x0, y1, x1 = rect
    if y1 <= y0 or x1 <= x0:
        return None
    # pycocotools' rasteriser: the same convention as exported COCO polygons, so a polygon drawn
    # here and one read from a COCO file cover the same pixels.
    local = (pts - (x0, y0)).ravel().tolist()
    rle = mask_utils.frPyObjects([local], y1 - y0, x1 - x0)
    return rect, np.ascontiguousarray(mask_utils.decode(rle)[:, :, 0], dtype=bool)


def add_polygon(mask: np.ndarray, polygon: Sequence[Point]) -> tuple[np.ndarray, Edit]:
    """Add the inside of a polygon (at least 3 vertices; fewer changes nothing)."""
    m = _check(mask)
    got = _polygon_region(m.shape, polygon)
    if got is None:
        return m.copy(), _empty_edit()
    (y0, x0, y1, x1), inside = got
    return _commit(m, (y0, x0, y1, x1), m[y0:y1, x0:x1] | inside)


def subtract_polygon(mask: np.ndarray, polygon: Sequence[Point]) -> tuple[np.ndarray, Edit]:
    """Remove the inside of a polygon."""
    m = _check(mask)
    got = _polygon_region(m.shape, polygon)
    if got is None:
        return m.copy(), _empty_edit()
    (y0, x0, y1, x1), inside = got
    return _commit(m, (y0, x0, y1, x1), m[y0:y1, x0:x1] & ~inside)


def fill_holes(mask: np.ndarray, max_hole_pixels: int | None = None) -> tuple[np.ndarray, Edit]:
    """Fill background regions enclosed by the mask (optionally only those up to ``max_hole_pixels``)."""
    m = _check(mask)
    rect = _bbox_rect(m)
    if rect is None:
        return m.copy(), _empty_edit()
    y0, x0, y1, x1 = rect
    region = m[y0:y1, x0:x1]
    # Pad with background so everything outside the object is one 4-connected background region.
    bg = np.pad(~region, 1, constant_values=True).view(np.uint8)
    n, labels = cv2.connectedComponents(bg, connectivity=4)
    outside = labels[0, 0]
    holes = (labels != outside) & (bg == 1)
    if max_hole_pixels is not None:
        sizes = np.bincount(labels.ravel(), minlength=n)
        holes &= sizes[labels] <= max_hole_pixels
    return _commit(m, rect, region | holes[1:-1, 1:-1])


def remove_specks(mask: np.ndarray, min_pixels: int) -> tuple[np.ndarray, Edit]:
    """Remove 8-connected parts smaller than ``min_pixels``."""
    m = _check(mask)
    rect = _bbox_rect(m)
    if rect is None or min_pixels <= 1:
        return m.copy(), _empty_edit()
    y0, x0, y1, x1 = rect
    region = m[y0:y1, x0:x1]
    n, labels, stats, _ = cv2.connectedComponentsWithStats(region.view(np.uint8), connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] < min_pixels
    small[0] = False  # label 0 is the background
    return _commit(m, rect, region & ~small[labels])


def connected_components(mask: np.ndarray, min_pixels: int = 1) -> list[np.ndarray]:
    """The 8-connected parts of ``mask`` as full-size masks, largest first (ties: top-left first)."""
    m = _check(mask)
    rect = _bbox_rect(m)
    if rect is None:
        return []
    y0, x0, y1, x1 = rect
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m[y0:y1, x0:x1].view(np.uint8), connectivity=8)
    order = sorted(range(1, n), key=lambda i: (-stats[i, cv2.CC_STAT_AREA], stats[i, cv2.CC_STAT_TOP],
                                               stats[i, cv2.CC_STAT_LEFT]))
    parts = []
    for i in order:
        if stats[i, cv2.CC_STAT_AREA] < min_pixels:
            continue
        full = np.zeros_like(m)
        full[y0:y1, x0:x1] = labels == i
        parts.append(full)
    return parts


def split_instances(mask: np.ndarray, min_pixels: int = 1) -> tuple[np.ndarray, Edit, list[np.ndarray]]:
    """Split into connected instances: the largest part stays in this mask (returned with the edit
    that removes the others); the other parts (each >= ``min_pixels``) are returned as new masks
    for the caller to add as annotations. Parts below ``min_pixels`` are dropped."""
    m = _check(mask)
    parts = connected_components(m, 1)
    if len(parts) <= 1:
        return m.copy(), _empty_edit(), []
    kept, others = parts[0], [p for p in parts[1:] if int(p.sum()) >= min_pixels]
    rect = _bbox_rect(m)
    assert rect is not None
    y0, x0, y1, x1 = rect
    new_mask, edit = _commit(m, rect, kept[y0:y1, x0:x1])
    return new_mask, edit, others


def merge(mask: np.ndarray, others: Sequence[np.ndarray]) -> tuple[np.ndarray, Edit]:
    """Union ``others`` into ``mask`` (the caller then deletes the merged annotations)."""
    m = _check(mask)
    union = np.zeros_like(m)
    for o in others:
        o = _check(o)
        if o.shape != m.shape:
            raise MaskError(f"cannot merge a {o.shape[1]}x{o.shape[0]} mask into a {m.shape[1]}x{m.shape[0]} one")
        union |= o
    rect = _bbox_rect(union)
    if rect is None:
        return m.copy(), _empty_edit()
    y0, x0, y1, x1 = rect
    return _commit(m, rect, m[y0:y1, x0:x1] | union[y0:y1, x0:x1])


def replace(mask: np.ndarray, new_mask: np.ndarray) -> tuple[np.ndarray, Edit]:
    """Replace the whole mask (e.g. with a SAM result); the edit covers only what changed."""
    m = _check(mask)
    n = _check(new_mask)
    if n.shape != m.shape:
        raise MaskError(f"replacement mask is {n.shape[1]}x{n.shape[0]}, expected {m.shape[1]}x{m.shape[0]}")
    diff = m != n
    rect = _bbox_rect(diff)
    if rect is None:
        return m.copy(), _empty_edit()
    y0, x0, y1, x1 = rect
    return _commit(m, rect, n[y0:y1, x0:x1])
