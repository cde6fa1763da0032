"""Mask geometry and editing operations: pure functions on 2-D bool masks, each returning the new mask
and an ``Edit`` (the changed rectangle with its content before and after), so an undo stack stores
small diffs. Inputs are never modified, except by ``paint_into`` (the live brush of the GUI).

This module is the one place where brush strokes and polygons become pixels: the GUI tools, the tests
and the COCO round trip all call it.

Coordinates: points and polygon vertices are (x, y) in image pixel units where pixel (x, y) covers
[x, x + 1) x [y, y + 1) (the canvas's and COCO's convention). Polygons are rasterised by pycocotools,
exactly as a COCO polygon with the same vertices is read back (the exporter's rings run along pixel
edges, so a mask survives the round trip). A brush stroke is the union of discs of ``radius``
(rounded to whole pixels) around every point of the polyline, centred on the pixel that holds the
point, joined by straight bands of the same width; painting a polyline segment by segment gives the
same pixels as painting it at once. Connectivity is 8 for objects (as OpenCV traces them), so a hole
is background not 4-connected to the outside.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .errors import MaskError
from .models import EMPTY_RECT, Edit, Rect

Point = tuple[float, float]


def _check(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise MaskError(f"a mask must be 2-D, got shape {m.shape}")
    return np.ascontiguousarray(m, dtype=bool)


def _empty_edit() -> Edit:
    return Edit(EMPTY_RECT, np.zeros((0, 0), bool), np.zeros((0, 0), bool))


def region_edit(rect: Rect, before: np.ndarray, after: np.ndarray) -> Edit:
    """The edit from ``before`` to ``after`` (both of ``rect.shape``), shrunk to the pixels that changed."""
    diff = before != after
    if not diff.any():
        return _empty_edit()
    tight = Rect.of_mask(diff)
    assert tight is not None
    return Edit(Rect(rect.y0 + tight.y0, rect.x0 + tight.x0, rect.y0 + tight.y1, rect.x0 + tight.x1),
                before[tight.slices].copy(), after[tight.slices].copy())


def added_edit(mask: np.ndarray) -> Edit:
    """The edit that turns an empty mask into ``mask`` (adding a new mask, undoable like any edit)."""
    m = _check(mask)
    rect = Rect.of_mask(m)
    if rect is None:
        return _empty_edit()
    return Edit(rect, np.zeros(rect.shape, bool), m[rect.slices].copy())


def _commit(mask: np.ndarray, rect: Rect, new_region: np.ndarray) -> tuple[np.ndarray, Edit]:
    """Apply ``new_region`` at ``rect`` to a copy and return it with the tight edit."""
    edit = region_edit(rect, mask[rect.slices], new_region)
    return apply_edit(mask, edit), edit


def apply_edit(mask: np.ndarray, edit: Edit, reverse: bool = False, *, inplace: bool = False) -> np.ndarray:
    """Write ``edit.after`` (or ``edit.before`` with ``reverse``) into the edit's rectangle.

    Returns a new array unless ``inplace``. Raises MaskError if the rectangle does not fit.
    """
    out = mask if inplace else np.array(mask, dtype=bool, copy=True)
    if edit.is_empty:
        return out
    if not edit.rect.fits(out.shape):
        raise MaskError(f"edit rectangle {edit.rect} does not fit a {out.shape[1]}x{out.shape[0]} mask")
    out[edit.rect.slices] = edit.before if reverse else edit.after
    return out


def stroke_region(shape: tuple[int, int], points: Sequence[Point], radius: float) -> tuple[Rect, np.ndarray] | None:
    """The pixels of a brush stroke inside an image of ``shape``, as (rect, bool patch); None if none."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if pts.size == 0 or radius <= 0:
        return None
    rad = int(round(float(radius)))
    # Integer centres and radius keep the disc symmetric (OpenCV's sub-pixel circles are not) and make
    # the drawing translation-invariant, so segment-by-segment strokes equal whole ones.
    centres = np.floor(pts).astype(np.int64)
    reach = rad + 1
    rect = Rect(int(centres[:, 1].min()) - reach, int(centres[:, 0].min()) - reach,
                int(centres[:, 1].max()) + reach + 1, int(centres[:, 0].max()) + reach + 1).clip(shape)
    if rect.is_empty:
        return None
    brush = np.zeros(rect.shape, np.uint8)
    local = centres - (rect.x0, rect.y0)
    for i, (px, py) in enumerate(local):
        cv2.circle(brush, (int(px), int(py)), rad, 1, -1, cv2.LINE_8)
        qx, qy = local[i - 1]
        if i and (qx, qy) != (px, py):  # a zero-length thick line is a square, not a disc
            cv2.line(brush, (int(qx), int(qy)), (int(px), int(py)), 1, 2 * rad + 1, cv2.LINE_8)
    return rect, brush.astype(bool)


def paint_into(mask: np.ndarray, points: Sequence[Point], radius: float, value: bool = True) -> Rect | None:
    """Paint (or with ``value=False`` erase) a stroke into ``mask`` in place; returns the rectangle it
    covered, or None. The GUI brush draws with this while the mouse moves."""
    got = stroke_region(mask.shape, points, radius)
    if got is None:
        return None
    rect, stroke = got
    region = mask[rect.slices]
    if value:
        region |= stroke
    else:
        region &= ~stroke
    return rect


def paint_stroke(mask: np.ndarray, points: Sequence[Point], radius: float,
                 value: bool = True) -> tuple[np.ndarray, Edit]:
    """Paint (``value=True``) or erase a polyline of discs of ``radius`` pixels."""
    m = _check(mask)
    out = m.copy()
    rect = paint_into(out, points, radius, value)
    if rect is None:
        return out, _empty_edit()
    return out, region_edit(rect, m[rect.slices], out[rect.slices])


def erase(mask: np.ndarray, points: Sequence[Point], radius: float) -> tuple[np.ndarray, Edit]:
    """Erase a brush stroke (same geometry as ``paint_stroke``)."""
    return paint_stroke(mask, points, radius, value=False)


def polygon_region(shape: tuple[int, int], polygon: Sequence[Point]) -> tuple[Rect, np.ndarray] | None:
    """The pixels inside a polygon (at least 3 vertices) within an image of ``shape``, as
    (rect, bool patch); None when there are none to draw."""
    pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return None
    rect = Rect(int(np.floor(pts[:, 1].min())), int(np.floor(pts[:, 0].min())),
                int(np.ceil(pts[:, 1].max())) + 1, int(np.ceil(pts[:, 0].max())) + 1).clip(shape)
    if rect.is_empty:
        return None
    # pycocotools' rasteriser: the same convention as exported COCO polygons, so a polygon drawn
    # here and one read from a COCO file cover the same pixels.
    local = (pts - (rect.x0, rect.y0)).ravel().tolist()
    rle = mask_utils.frPyObjects([local], rect.shape[0], rect.shape[1])
    return rect, np.ascontiguousarray(mask_utils.decode(rle)[:, :, 0], dtype=bool)


def polygons_mask(shape: tuple[int, int], rings: Sequence[Sequence[float]]) -> np.ndarray:
    """A full mask of the union of COCO polygon rings ([x1, y1, x2, y2, ...] each)."""
    out = np.zeros(shape, bool)
    for ring in rings:
        got = polygon_region(shape, [(float(x), float(y)) for x, y in zip(ring[0::2], ring[1::2], strict=True)])
        if got is not None:
            out[got[0].slices] |= got[1]
    return out


def add_polygon(mask: np.ndarray, polygon: Sequence[Point], value: bool = True) -> tuple[np.ndarray, Edit]:
    """Add (or with ``value=False`` remove) the inside of a polygon (at least 3 vertices; fewer change nothing)."""
    m = _check(mask)
    got = polygon_region(m.shape, polygon)
    if got is None:
        return m.copy(), _empty_edit()
    rect, inside = got
    return _commit(m, rect, (m[rect.slices] | inside) if value else (m[rect.slices] & ~inside))


def subtract_polygon(mask: np.ndarray, polygon: Sequence[Point]) -> tuple[np.ndarray, Edit]:
    """Remove the inside of a polygon."""
    return add_polygon(mask, polygon, value=False)


def fill_holes(mask: np.ndarray, max_hole_pixels: int | None = None) -> tuple[np.ndarray, Edit]:
    """Fill background regions enclosed by the mask (optionally only those up to ``max_hole_pixels``)."""
    m = _check(mask)
    rect = Rect.of_mask(m)
    if rect is None:
        return m.copy(), _empty_edit()
    region = m[rect.slices]
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
    rect = Rect.of_mask(m)
    if rect is None or min_pixels <= 1:
        return m.copy(), _empty_edit()
    region = m[rect.slices]
    _n, labels, stats, _ = cv2.connectedComponentsWithStats(region.view(np.uint8), connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] < min_pixels
    small[0] = False  # label 0 is the background
    return _commit(m, rect, region & ~small[labels])


def connected_components(mask: np.ndarray, min_pixels: int = 1) -> list[np.ndarray]:
    """The 8-connected parts of ``mask`` as full-size masks, largest first (ties: top-left first)."""
    m = _check(mask)
    rect = Rect.of_mask(m)
    if rect is None:
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m[rect.slices].view(np.uint8), connectivity=8)
    order = sorted(range(1, n), key=lambda i: (-stats[i, cv2.CC_STAT_AREA], stats[i, cv2.CC_STAT_TOP],
                                               stats[i, cv2.CC_STAT_LEFT]))
    parts = []
    for i in order:
        if stats[i, cv2.CC_STAT_AREA] < min_pixels:
            continue
        full = np.zeros_like(m)
        full[rect.slices] = labels == i
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
    rect = Rect.of_mask(m)
    assert rect is not None
    new_mask, edit = _commit(m, rect, kept[rect.slices])
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
    rect = Rect.of_mask(union)
    if rect is None:
        return m.copy(), _empty_edit()
    return _commit(m, rect, m[rect.slices] | union[rect.slices])


def replace(mask: np.ndarray, new_mask: np.ndarray) -> tuple[np.ndarray, Edit]:
    """Replace the whole mask (e.g. with a SAM result); the edit covers only what changed."""
    m = _check(mask)
    n = _check(new_mask)
    if n.shape != m.shape:
        raise MaskError(f"replacement mask is {n.shape[1]}x{n.shape[0]}, expected {m.shape[1]}x{m.shape[0]}")
    diff = m != n
    rect = Rect.of_mask(diff)
    if rect is None:
        return m.copy(), _empty_edit()
    return _commit(m, rect, n[rect.slices])
