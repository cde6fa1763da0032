"""Mask editing operations: exact pixels, tight changed rectangles, edits that reverse exactly,
and inputs left untouched."""

from __future__ import annotations

import numpy as np
import pytest

from car_desktop.annotations import MaskError, mask_ops
from car_desktop.annotations.mask_ops import apply_edit
from car_desktop.annotations.models import Rect


def _check_edit(before: np.ndarray, after: np.ndarray, edit) -> None:
    """The edit reproduces ``after`` from ``before``, reverses exactly, and its rect is tight."""
    assert np.array_equal(apply_edit(before, edit), after)
    assert np.array_equal(apply_edit(after, edit, reverse=True), before)
    diff = before != after
    if not diff.any():
        assert edit.is_empty
        return
    ys, xs = np.nonzero(diff)
    assert edit.rect == Rect(ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


def test_paint_single_disc():
    m = np.zeros((50, 60), bool)
    new, edit = mask_ops.paint_stroke(m, [(30.5, 20.5)], radius=5)
    assert not m.any()  # input untouched
    ys, xs = np.nonzero(new)
    d2 = (xs - 30) ** 2 + (ys - 20) ** 2
    assert d2.max() <= 5.5 ** 2 and abs(int(new.sum()) - np.pi * 25) < 15
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (15, 25, 25, 35)  # symmetric about pixel (30, 20)
    _check_edit(m, new, edit)


def test_paint_stroke_covers_segment_and_erase():
    m = np.zeros((40, 100), bool)
    new, edit = mask_ops.paint_stroke(m, [(10, 20), (50, 20), (90, 25)], radius=3)
    assert new[20, 10:51].all() and new[17:23, 30].all() and not new[10, 30]
    _check_edit(m, new, edit)
    erased, e2 = mask_ops.erase(new, [(30, 20)], radius=4)
    assert not erased[20, 28:33].any() and erased[20, 20]
    _check_edit(new, erased, e2)
    clipped, e3 = mask_ops.paint_stroke(m, [(-5, -5), (2, 2)], radius=4)  # off the image edge
    assert clipped[0, 0] and clipped[2, 2]
    _check_edit(m, clipped, e3)
    same, e4 = mask_ops.paint_stroke(new, [(30, 20)], radius=2)
    assert e4.is_empty and np.array_equal(same, new)


def test_polygons():
    m = np.zeros((40, 40), bool)
    square = [(10, 10), (20, 10), (20, 20), (10, 20)]
    added, edit = mask_ops.add_polygon(m, square)
    expected = np.zeros_like(m)
    expected[10:20, 10:20] = True
    assert np.array_equal(added, expected)
    _check_edit(m, added, edit)
    cut, e2 = mask_ops.subtract_polygon(added, [(15, 0), (40, 0), (40, 40), (15, 40)])
    assert cut.sum() == 50 and cut[10:20, 10:15].all()
    _check_edit(added, cut, e2)
    same, e3 = mask_ops.add_polygon(m, [(1, 1), (5, 5)])  # under 3 points: nothing
    assert e3.is_empty and not same.any()


def test_fill_holes_and_specks():
    m = np.zeros((30, 30), bool)
    m[5:20, 5:20] = True
    m[8:10, 8:10] = False    # hole of 4
    m[12:17, 12:17] = False  # hole of 25
    m[25, 25] = True         # speck
    m[0:2, 28:30] = True     # 4-pixel part touching the border
    filled, edit = mask_ops.fill_holes(m)
    assert filled[5:20, 5:20].all() and filled[25, 25]
    _check_edit(m, filled, edit)
    small_only, _ = mask_ops.fill_holes(m, max_hole_pixels=4)
    assert small_only[8:10, 8:10].all() and not small_only[12:17, 12:17].any()
    clean, e2 = mask_ops.remove_specks(m, min_pixels=5)
    assert not clean[25, 25] and not clean[0:2, 28:30].any() and clean[5, 5]
    _check_edit(m, clean, e2)
    # A background region open to the border is not a hole.
    c = np.ones((10, 10), bool)
    c[3:7, 0:5] = False
    _same, e3 = mask_ops.fill_holes(c)
    assert e3.is_empty


def test_split_merge_replace():
    m = np.zeros((30, 40), bool)
    m[2:12, 2:12] = True     # 100 px
    m[20:25, 30:35] = True   # 25 px
    m[0, 39] = True          # 1 px
    m[12, 12] = True         # touches the big square diagonally: same part (8-connected)
    kept, edit, others = mask_ops.split_instances(m, min_pixels=2)
    assert kept.sum() == 101 and len(others) == 1 and others[0].sum() == 25
    _check_edit(m, kept, edit)
    merged, e2 = mask_ops.merge(kept, others)
    assert merged.sum() == 126
    _check_edit(kept, merged, e2)
    sam = np.zeros_like(m)
    sam[5:8, 5:30] = True
    rep, e3 = mask_ops.replace(m, sam)
    assert np.array_equal(rep, sam)
    _check_edit(m, rep, e3)
    with pytest.raises(MaskError):
        mask_ops.replace(m, np.zeros((3, 3), bool))
    with pytest.raises(MaskError):
        mask_ops.merge(m, [np.zeros((3, 3), bool)])


def test_apply_edit_rejects_misfit():
    m = np.zeros((10, 10), bool)
    _, edit = mask_ops.paint_stroke(np.zeros((50, 50), bool), [(40, 40)], 3)
    with pytest.raises(MaskError):
        apply_edit(m, edit)


def test_polygons_follow_the_exporters_round_trip():
    """The exporter's rings (``polygons.outer_rings``, along pixel edges) rasterised by ``polygons_mask``
    give back the mask with its holes filled, pixel for pixel, and the same pixels as pycocotools."""
    import cv2
    from pycocotools import mask as mask_utils

    from car_desktop.annotations.polygons import outer_rings

    rng = np.random.default_rng(11)
    for _ in range(40):
        m = np.zeros((48, 64), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            cv2.ellipse(m, (int(rng.integers(0, 64)), int(rng.integers(0, 48))),
                        (int(rng.integers(2, 20)), int(rng.integers(2, 14))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        mask = m.astype(bool)
        rings = outer_rings(mask)
        got = mask_ops.polygons_mask(mask.shape, rings)
        filled, _ = mask_ops.fill_holes(mask)
        assert np.array_equal(got, filled)
        if rings:
            reference = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(rings, 48, 64))).astype(bool)
            assert np.array_equal(got, reference)
