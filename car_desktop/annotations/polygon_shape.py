"""An editable polygon made from a mask: its outer rings, vertices to drag, insert and delete, and back
to pixels.

``PolygonShape.from_mask`` traces the mask's outer outlines with the exporter's tracer
(``polygons.outer_rings``, pixel-edge convention), so an untouched shape covers exactly the mask's
pixels (holes excepted: COCO polygons have none). ``to_mask`` rasterises with ``mask_ops.polygons_mask``
(pycocotools, the rasteriser of the polygon tools and of COCO import), so what the editor shows is what
is saved and exported. Hit tests take a tolerance in image pixels (the GUI converts its handle size at
the current zoom). Pure numpy: no Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import mask_ops
from .models import Rect
from .polygons import PIXEL_EDGES, outer_rings

#: A ring keeps at least this many vertices (deleting below it is refused).
MIN_VERTICES = 3


@dataclass
class PolygonShape:
    """Rings of (x, y) float vertices, in image pixel coordinates (pixel (x, y) covers [x, x+1) x [y, y+1))."""

    rings: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> PolygonShape:
        m = np.asarray(mask, bool)
        box = Rect.of_mask(m)
        if box is None:
            return cls([])
        flat = outer_rings(m[box.slices], (box.x0, box.y0), PIXEL_EDGES)
        return cls([np.asarray(r, np.float64).reshape(-1, 2) for r in flat])

    # ----- reading
    @property
    def vertex_count(self) -> int:
        return sum(len(r) for r in self.rings)

    def is_empty(self) -> bool:
        return not self.rings

    def flat_rings(self) -> list[list[float]]:
        """COCO-style [x1, y1, x2, y2, ...] lists."""
        return [r.ravel().tolist() for r in self.rings]

    def copy(self) -> PolygonShape:
        return PolygonShape([r.copy() for r in self.rings])

    def to_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The pixels inside the rings (their union), rasterised as COCO polygons are."""
        return mask_ops.polygons_mask(shape, self.flat_rings())

    # ----- hit tests
    def vertex_at(self, x: float, y: float, tol: float) -> tuple[int, int] | None:
        """(ring, index) of the nearest vertex within ``tol`` of (x, y)."""
        best, where = tol * tol, None
        for ri, ring in enumerate(self.rings):
            d = ((ring - (x, y)) ** 2).sum(axis=1)
            i = int(np.argmin(d))
            if d[i] <= best:
                best, where = float(d[i]), (ri, i)
        return where

    def edge_at(self, x: float, y: float, tol: float) -> tuple[int, int, tuple[float, float]] | None:
        """(ring, index of the edge's first vertex, nearest point on it) for the nearest edge within ``tol``."""
        best, where = tol * tol, None
        p = np.array((x, y), np.float64)
        for ri, ring in enumerate(self.rings):
            a = ring
            b = np.roll(ring, -1, axis=0)
            ab = b - a
            length2 = (ab ** 2).sum(axis=1)
            t = np.clip(((p - a) * ab).sum(axis=1) / np.maximum(length2, 1e-12), 0.0, 1.0)
            near = a + ab * t[:, None]
            d = ((near - p) ** 2).sum(axis=1)
            i = int(np.argmin(d))
            if d[i] <= best:
                best, where = float(d[i]), (ri, i, (float(near[i, 0]), float(near[i, 1])))
        return where

    def ring_containing(self, x: float, y: float) -> int | None:
        """The ring whose inside holds (x, y) (even-odd rule), or None."""
        for ri, ring in enumerate(self.rings):
            xs, ys = ring[:, 0], ring[:, 1]
            xn, yn = np.roll(xs, -1), np.roll(ys, -1)
            crosses = (ys > y) != (yn > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                at = xs + (y - ys) * (xn - xs) / (yn - ys)
            if int(np.count_nonzero(crosses & (x < at))) % 2 == 1:
                return ri
        return None

    # ----- editing (in place)
    def move_vertex(self, ring: int, index: int, x: float, y: float) -> None:
        self.rings[ring][index] = (x, y)

    def insert_vertex(self, ring: int, after: int, x: float, y: float) -> int:
        """Insert (x, y) on the edge from vertex ``after`` to the next one; returns the new index."""
        at = after + 1
        self.rings[ring] = np.insert(self.rings[ring], at, (x, y), axis=0)
        return at

    def delete_vertex(self, ring: int, index: int) -> bool:
        """Remove a vertex; refused (False) when the ring would fall below ``MIN_VERTICES``."""
        if len(self.rings[ring]) <= MIN_VERTICES:
            return False
        self.rings[ring] = np.delete(self.rings[ring], index, axis=0)
        return True

    def translate(self, dx: float, dy: float) -> None:
        """Move the whole shape (every ring)."""
        for ring in self.rings:
            ring += (dx, dy)
