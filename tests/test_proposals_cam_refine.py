"""CLIP-ES refinement pieces against hand-computed answers and a plain numpy computation."""

from __future__ import annotations

import numpy as np
import torch

from car_desktop.engine import cam_refine as cr


def _cam() -> np.ndarray:
    cam = np.full((6, 8), 0.1, np.float32)
    cam[1:3, 1:4] = 1.0      # strong blob: rows 1-2, cols 1-3
    cam[4, 6] = 0.5          # weak single pixel
    return cam


def test_boxes_and_mask_hand_computed():
    cam = _cam()
    # cam*255 -> 255 / 127 / 25; threshold int(0.4 * 255) = 102 keeps the blob and the weak pixel.
    assert sorted(cr.cam_boxes(cam, 0.4)) == [(1, 1, 4, 3), (6, 4, 7, 5)]
    want = np.zeros((6, 8), np.float32)
    want[1:3, 1:4] = 1
    want[4, 6] = 1
    np.testing.assert_array_equal(cr.box_mask_from_cam(cam, 0.4), want)
    # int(0.6 * 255) = 153 drops the weak pixel.
    assert cr.cam_boxes(cam, 0.6) == [(1, 1, 4, 3)]


def test_box_of_a_ring_is_its_outer_box():
    cam = np.zeros((7, 7), np.float32)
    cam[1:6, 1:6] = 1.0
    cam[2:5, 2:5] = 0.0      # a hole: RETR_TREE also returns the inner contour
    mask = cr.box_mask_from_cam(cam, 0.4)
    want = np.zeros((7, 7), np.float32)
    want[1:6, 1:6] = 1
    np.testing.assert_array_equal(mask, want)


def test_edge_quirk_drops_last_row_and_column():
    cam = np.zeros((4, 5), np.float32)
    cam[2:, 3:] = 1.0        # touches the bottom-right corner
    fixed = cr.box_mask_from_cam(cam, 0.4)
    quirk = cr.box_mask_from_cam(cam, 0.4, edge_quirk=True)
    assert fixed[2:, 3:].all() and fixed.sum() == 4
    assert quirk.sum() == 1 and quirk[2, 3] == 1   # released code: x1 = min(x1, w-1), y1 = min(y1, h-1)


def test_all_zero_cam_gives_empty_mask_and_threshold_lowering():
    assert cr.box_mask_from_cam(np.zeros((3, 4), np.float32), 0.4).sum() == 0
    # lam = 1 keeps nothing (pixels must exceed the max) until lowered by 0.1.
    cam = np.array([[0.0, 0.95, 1.0]], np.float32)
    assert cr.cam_boxes(cam, 1.0) == [(1, 0, 3, 1)]


def _numpy_refinement(a: np.ndarray) -> np.ndarray:
    t = a.astype(np.float64)
    for _ in range(3):
        t = t / t.sum(axis=0, keepdims=True)
        t = t / t.sum(axis=1, keepdims=True)
    t = (t + t.T) / 2
    return t @ t


def test_refinement_matrix_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.random((12, 12)).astype(np.float32) + 0.01
    got = cr.refinement_matrix(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(got, _numpy_refinement(a), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got, got.T, rtol=1e-6, atol=1e-8)


def test_refine_cams_equals_masked_matrix_product():
    rng = np.random.default_rng(1)
    n_rows, n_cols = 3, 4
    affinity = _numpy_refinement(rng.random((12, 12)) + 0.01).astype(np.float32)
    cams = rng.random((2, n_rows, n_cols)).astype(np.float32)
    masks = np.stack([cr.box_mask_from_cam(c, 0.5) for c in cams])
    got = cr.refine_cams(torch.from_numpy(affinity), cams, masks)
    for i in range(2):
        masked = affinity * masks[i].reshape(1, -1)           # zero the columns outside the boxes
        ref = (masked @ cams[i].reshape(-1, 1)).reshape(n_rows, n_cols)
        ref = (ref - ref.min()) / (1e-15 + (ref - ref.min()).max())
        np.testing.assert_allclose(got[i], ref, rtol=1e-4, atol=2e-5)


def test_minmax_and_resize():
    maps = np.array([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]], np.float32)
    out = cr.minmax(maps)
    np.testing.assert_allclose(out[0], [[0, 0.5], [0.25, 1.0]], rtol=1e-6)
    assert not out[1].any()
    same = cr.resize_maps(out, (2, 2))
    np.testing.assert_array_equal(same, out)
    big = cr.resize_maps(out, (5, 7))
    assert big.shape == (2, 5, 7) and big.dtype == np.float32 and big.min() >= 0 and big.max() <= 1
    assert cr.resize_maps(out, (1, 1)).shape == (2, 1, 1)
