"""Mask -> COCO polygon rings, and the two coordinate conventions our polygons can follow.

``pixel-edges`` (the default): vertices lie on pixel *edges*, in COCO continuous coordinates where
pixel (x, y) covers [x, x + 1] x [y, y + 1]. The ring is the exact outline of the pixels (not a
contour through pixel centres, which sits half a pixel inside the edge and shrinks small shapes), so
pycocotools (what COCO evaluation uses) rasterises it back to the same pixels. Every ring has at
least 4 vertices, even for a one-pixel object. Readers that rasterise with OpenCV's ``fillPoly``
(supervision, for one) draw the right and bottom edge as a row of pixels of its own, so they read
such a ring one pixel wider and taller.

``pixel-centres``: vertices are the centres of the mask's border pixels in pixel-index
coordinates (pixel (x, y) is centred on (x, y)), the contour OpenCV's ``findContours`` traces;
``fillPoly`` (supervision and other OpenCV-based readers) gives back exactly the mask's pixels, and
pycocotools reads it half a pixel inside the edge (slightly smaller). A ring has at least 3 vertices
(a one-pixel object repeats its one point). The export writes which convention it used in the
file's ``info.polygon_convention``, and the importer reads it back the matching way.

Either way holes are not expressible (COCO polygons have no inner rings): only outer outlines are
traced, and callers decide whether to report the loss or write RLE instead.

How: OpenCV traces the outer border *pixels* of each 8-connected part (``CHAIN_APPROX_NONE``,
counter-clockwise on screen, so the part lies on the left of each step). Each border pixel then
adds the pixel corners the outline passes between the step that enters it and the step that leaves
it, read from a table indexed by the two steps; all in numpy, on points packed as one int64 (x, y
as two int32), and no upscaled copy of the mask is made. The ring starts at the top-left corner of
the part's first pixel in raster order and runs the same way as OpenCV's contour (down the left
side first); vertices in the middle of straight runs are dropped.
"""

from __future__ import annotations

import cv2
import numpy as np

PIXEL_EDGES = "pixel-edges"
PIXEL_CENTRES = "pixel-centres"
CONVENTIONS = (PIXEL_EDGES, PIXEL_CENTRES)
#: What each convention means, written beside its name in an export's ``info``.
CONVENTION_TEXT = {
    PIXEL_EDGES: ("polygon vertices lie on pixel edges (pixel x,y covers [x,x+1]x[y,y+1]); rasterising with "
                  "pycocotools gives back the mask's pixels, holes excepted"),
    PIXEL_CENTRES: ("polygon vertices are the centres of the mask's border pixels (pixel x,y is centred on x,y, "
                    "as in OpenCV); rasterising with cv2.fillPoly gives back the mask's pixels, holes excepted"),
}


def convention_of(value: object) -> str:
    """The convention named by an export's ``info.polygon_convention`` ('' when it names none)."""
    if isinstance(value, str):
        for name in CONVENTIONS:
            if value.startswith(name):
                return name
    return ""


# Pixel corners in the order the outline walks round a pixel (counter-clockwise on screen, the
# part on the left): top-left, bottom-left, bottom-right, top-right, as (dx, dy) from pixel (x, y).
_CORNERS = ((0, 0), (0, 1), (1, 1), (1, 0))
_TL, _BL, _BR, _TR = range(4)


def _pack(xy) -> np.ndarray:
    """(n, 2) integer points -> n int64, each the bytes of an int32 pair (no carries between the
    halves for the non-negative coordinates and offsets used here; works in either byte order)."""
    return np.ascontiguousarray(np.asarray(xy, np.int32).reshape(-1, 2)).view(np.int64).ravel()


def _step_key(d: np.ndarray) -> np.ndarray:
    """A 0..15 key for packed differences of 8-neighbour steps (one half in -1..1 each)."""
    return (((d + 2) >> 30) & 12) | (d & 3)


_CORNER64 = _pack(_CORNERS)
# For a step from one border pixel to the next: the corner of the pixel the outline leaves it by,
# and the corner of the next pixel it arrives at.
_STEPS = {(1, 0): (_BR, _BL), (-1, 0): (_TL, _TR), (0, 1): (_BL, _TL), (0, -1): (_TR, _BR),
          (1, -1): (_TR, _BL), (1, 1): (_BR, _TL), (-1, 1): (_BL, _TR), (-1, -1): (_TL, _BR)}


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (entering step, leaving step) key pair: the packed corner offsets the pixel adds (up to
    4, in order), which of them it adds, and the position of the top-left corner among them."""
    keys = {s: int(_step_key(_pack([(2 + s[0], 2 + s[1])]) - _pack([(2, 2)]))[0]) for s in _STEPS}
    assert len(set(keys.values())) == len(keys)
    offsets = np.zeros((256, 4), np.int64)
    adds = np.zeros((256, 4), bool)
    tl_at = np.full(256, -1, np.int8)
    for s_in, (_, entry) in _STEPS.items():
        for s_out, (leave, _) in _STEPS.items():
            count = (leave - entry) % 4
            if count == 0 and s_out == (-s_in[0], -s_in[1]):
                count = 4  # back where it came from, diagonally: a pixel hanging by a corner, walked round
            k = keys[s_in] * 16 + keys[s_out]
            corners = [(entry + 1 + j) % 4 for j in range(4)]
            offsets[k] = _CORNER64[corners]
            adds[k, :count] = True
            if _TL in corners[:count]:
                tl_at[k] = corners.index(_TL)
    return offsets, adds, tl_at


_OFFSETS, _ADDS, _TL_AT = _tables()


def outer_rings(crop: np.ndarray, offset: tuple[int, int] = (0, 0),
                convention: str = PIXEL_EDGES) -> list[list[int]]:
    """Outer outlines of the 8-connected parts of a bool crop, as flat [x1, y1, x2, y2, ...] lists
    in full-image coordinates (``offset`` = (x, y) of the crop), in the given convention."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown polygon convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    img = np.asarray(crop)
    img = (np.ascontiguousarray(img) if img.dtype in (np.bool_, np.uint8) else img != 0).view(np.uint8)
    if img.size == 0:
        return []
    simple = cv2.CHAIN_APPROX_SIMPLE if convention == PIXEL_CENTRES else cv2.CHAIN_APPROX_NONE
    contours, _ = cv2.findContours(img, cv2.RETR_EXTERNAL, simple)
    shift = _pack([offset])[0]
    rings = []
    for c in contours:
        if convention == PIXEL_CENTRES:
            p = _pack(c)
            if len(p) < 3:  # one pixel, or a straight line of them: repeat to make a valid ring
                p = np.resize(p, 3)
        else:
            p = _drop_collinear(_edge_outline(_pack(c)))
            if len(p) < 3:  # cannot happen for edge outlines; guarded because a 2-point ring is a box
                continue
        rings.append((p + shift).view(np.int32).tolist())
    return rings


def _edge_outline(p: np.ndarray) -> np.ndarray:
    if len(p) == 1:
        return p + _CORNER64
    d = np.empty_like(p)
    np.subtract(p[1:], p[:-1], out=d[:-1])
    d[-1] = p[0] - p[-1]
    key_out = _step_key(d)
    key = np.empty_like(key_out)
    np.left_shift(key_out[:-1], 4, out=key[1:])
    key[0] = key_out[-1] << 4
    key |= key_out
    corners = (p[:, None] + _OFFSETS[key])[_ADDS[key]]
    # Start at the top-left corner of the first pixel, which that pixel adds (no other pixel of the
    # part touches it), as a trace starting at the part's first pixel would.
    start = int(_TL_AT[key[0]])
    return np.concatenate([corners[start:], corners[:start]]) if start > 0 else corners


def _drop_collinear(p: np.ndarray) -> np.ndarray:
    """Remove vertices in the middle of straight runs (packed points; every step of an edge outline
    is one pixel along x or y, so a vertex is straight-through when the steps before and after it
    are the same, or opposite)."""
    if len(p) < 4:
        return p
    d = np.empty_like(p)
    np.subtract(p[1:], p[:-1], out=d[:-1])  # d[i]: step leaving vertex i
    d[-1] = p[0] - p[-1]
    before = np.empty_like(d)
    before[1:] = d[:-1]
    before[0] = d[-1]
    return p[(d != before) & (d != -before)]
