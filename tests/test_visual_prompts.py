"""Tests of car_desktop.engine.visual_prompts: pixel checks of every prompt and of their order."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from car_desktop.engine.image_io import load_image
from car_desktop.engine.visual_prompts import PROMPT_ORDER, apply_visual_prompts

RED = np.array([255, 0, 0], np.uint8)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_image(Path(__file__).parent / "data" / "chelsea.jpg")


def _box_mask(shape: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0 : y1 + 1, x0 : x1 + 1] = True
    return m


def _red(img: np.ndarray) -> np.ndarray:
    return np.all(img == RED, axis=-1)


def _reference_blur(img: np.ndarray, k: int) -> np.ndarray:
    """Separable Gaussian with OpenCV's sigma-from-size rule and reflect-101 borders, in numpy."""
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    x = np.arange(k) - (k - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    r = k // 2
    f = np.pad(img.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="reflect")
    rows = sum(g[i] * f[i : i + img.shape[0]] for i in range(k))
    both = sum(g[i] * rows[:, i : i + img.shape[1]] for i in range(k))
    return both


def test_blur_outside_only(photo: np.ndarray) -> None:
    h, w = photo.shape[:2]
    m = _box_mask((h, w), 50, 150, 80, 240)
    out = apply_visual_prompts(photo, m, ["blur"])
    np.testing.assert_array_equal(out[m], photo[m])
    ref = _reference_blur(photo, 15)
    diff = np.abs(out[~m].astype(np.float64) - ref[~m])
    # OpenCV blurs uint8 in fixed point: within 2 levels of the exact filter, nearly always within 1.
    assert diff.max() <= 2.0 and diff.mean() < 0.5
    # The photo has texture: blurring it must change many outside pixels.
    assert (out[~m] != photo[~m]).any(axis=-1).mean() > 0.5


def test_blur_kernel_parameter(photo: np.ndarray) -> None:
    m = _box_mask(photo.shape[:2], 50, 150, 80, 240)
    out = apply_visual_prompts(photo, m, ["blur"], blur_kernel=5)
    assert np.abs(out[~m].astype(np.float64) - _reference_blur(photo, 5)[~m]).max() <= 2.0


@pytest.mark.parametrize("correct", [True, False])
def test_gray_outside_only(photo: np.ndarray, correct: bool) -> None:
    m = _box_mask(photo.shape[:2], 20, 100, 30, 200)
    out = apply_visual_prompts(photo, m, ["gray"], correct_gray=correct)
    np.testing.assert_array_equal(out[m], photo[m])
    o = out[~m].astype(np.float64)
    assert np.all(o[:, 0] == o[:, 1]) and np.all(o[:, 1] == o[:, 2])
    r, g, b = (photo[~m][:, c].astype(np.float64) for c in range(3))
    expected = 0.299 * r + 0.587 * g + 0.114 * b if correct else 0.114 * r + 0.587 * g + 0.299 * b
    assert np.abs(o[:, 0] - expected).max() <= 1.0


def test_gray_quirk_differs_on_colourful_pixels() -> None:
    img = np.zeros((10, 10, 3), np.uint8)
    img[:] = (255, 0, 0)
    m = _box_mask((10, 10), 0, 1, 0, 1)
    good = apply_visual_prompts(img, m, ["gray"])
    quirk = apply_visual_prompts(img, m, ["gray"], correct_gray=False)
    assert good[5, 5, 0] == 76  # 0.299 * 255
    assert quirk[5, 5, 0] == 29  # red weighted as blue: 0.114 * 255


def test_black_outside_only(photo: np.ndarray) -> None:
    m = _box_mask(photo.shape[:2], 10, 60, 10, 60)
    out = apply_visual_prompts(photo, m, ["black"])
    np.testing.assert_array_equal(out[m], photo[m])
    assert not out[~m].any()


def test_circle_ellipse_positions() -> None:
    img = np.full((100, 120, 3), 128, np.uint8)
    m = _box_mask((100, 120), 20, 59, 30, 89)  # 40 tall, 60 wide
    out = apply_visual_prompts(img, m, ["circle"])
    red = _red(out)
    # Centroid (39.5, 59.5) truncates to (39, 59); semi-axes 60 // 2 = 30 and 40 // 2 = 20.
    cy, cx, a, b = 39, 59, 30, 20
    for y, x in [(cy, cx - a), (cy, cx + a), (cy - b, cx), (cy + b, cx)]:
        assert red[y, x], (y, x)
    assert not red[cy, cx]
    ys, xs = np.nonzero(red)
    radial = ((xs - cx) / a) ** 2 + ((ys - cy) / b) ** 2
    assert np.all(np.abs(np.sqrt(radial) - 1) < 0.08)
    # Nothing but the red outline changed, and it is 1 px thick: about the ellipse's perimeter.
    changed = np.any(out != img, axis=-1)
    np.testing.assert_array_equal(changed, red)
    perimeter = np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))
    assert 0.9 * perimeter < red.sum() < 1.3 * perimeter


def test_circle_uses_centroid_not_bbox_centre() -> None:
    img = np.full((60, 60, 3), 128, np.uint8)
    m = np.zeros((60, 60), bool)
    m[10:50, 10:14] = True   # thin bar on the left ...
    m[10:50, 14:50] = False
    m[30:50, 14:50] = True   # ... and a heavy block at the bottom: centroid is low and right
    out = apply_visual_prompts(img, m, ["circle"])
    rows, cols = np.nonzero(m)
    cy, cx = int(rows.mean()), int(cols.mean())
    a, b = (cols.max() - cols.min() + 1) // 2, (rows.max() - rows.min() + 1) // 2
    red = _red(out)
    assert red[cy, cx + a] and red[cy, cx - a] and red[cy - b, cx]
    assert cy != (rows.min() + rows.max()) // 2


def test_rectangle_is_bounding_box() -> None:
    img = np.full((80, 90, 3), 128, np.uint8)
    m = np.zeros((80, 90), bool)
    # A lopsided triangle: its centroid is far from its bounding-box centre.
    for y in range(15, 61):
        m[y, 20 : 20 + (y - 15) + 1] = True
    out = apply_visual_prompts(img, m, ["rectangle"])
    rows, cols = np.nonzero(m)
    y0, y1, x0, x1 = rows.min(), rows.max(), cols.min(), cols.max()
    expected = np.zeros((80, 90), bool)
    expected[y0, x0 : x1 + 1] = expected[y1, x0 : x1 + 1] = True
    expected[y0 : y1 + 1, x0] = expected[y0 : y1 + 1, x1] = True
    np.testing.assert_array_equal(_red(out), expected)
    np.testing.assert_array_equal(np.any(out != img, axis=-1), expected)


def _outer_ring(shape: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    ring = _box_mask(shape, y0, y1, x0, x1)
    ring[y0 + 1 : y1, x0 + 1 : x1] = False
    return ring


def test_contour_follows_outer_boundary_only() -> None:
    img = np.full((70, 70, 3), 128, np.uint8)
    m = _box_mask((70, 70), 10, 59, 10, 59)
    m[25:45, 25:45] = False          # a hole ...
    m[32:38, 32:38] = True           # ... with an island in it (hole filling swallows it)
    out = apply_visual_prompts(img, m, ["contour"])
    red = _red(out)
    np.testing.assert_array_equal(red, _outer_ring((70, 70), 10, 59, 10, 59))
    assert not red[24:46, 24:46].any()  # neither the hole's edge nor the island is outlined


def test_contour_matches_filled_mask_contours() -> None:
    rng = np.random.default_rng(3)
    img = np.full((64, 64, 3), 128, np.uint8)
    m = cv2.GaussianBlur(rng.random((64, 64)), (9, 9), 0) > 0.5
    out = apply_visual_prompts(img, m, ["contour"])
    # Reference: fill holes (flood the background from a padded border), then trace every contour.
    pad = np.pad(m.astype(np.uint8), 1)
    flood = pad.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    filled = (pad | (1 - flood)).astype(np.uint8)[1:-1, 1:-1]
    contours, _ = cv2.findContours(filled, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    ref = cv2.drawContours(img.copy(), contours, -1, (255, 0, 0), 1)
    np.testing.assert_array_equal(out, ref)


def test_combination_order_is_fixed(photo: np.ndarray) -> None:
    m = _box_mask(photo.shape[:2], 40, 120, 60, 200)
    both = apply_visual_prompts(photo, m, ["gray", "blur"])  # listed order does not matter
    blurred = apply_visual_prompts(photo, m, ["blur"])
    blur_then_gray = apply_visual_prompts(blurred, m, ["gray"])
    np.testing.assert_array_equal(both, blur_then_gray)
    np.testing.assert_array_equal(both, apply_visual_prompts(photo, m, ["blur", "gray"]))


def test_drawn_prompts_come_after_black() -> None:
    img = np.full((60, 60, 3), 200, np.uint8)
    m = np.zeros((60, 60), bool)
    m[10:50, 27:33] = True
    m[27:33, 10:50] = True  # a plus sign: its bounding-box ellipse runs outside the mask
    out = apply_visual_prompts(img, m, ["circle", "black"])
    red = _red(out)
    assert (red & ~m).sum() > 20  # the ellipse was drawn on top of the blacked-out area
    assert not out[~m & ~red].any()
    np.testing.assert_array_equal(out[m & ~red], img[m & ~red])


def test_all_prompts_together(photo: np.ndarray) -> None:
    m = _box_mask(photo.shape[:2], 40, 120, 60, 200)
    out = apply_visual_prompts(photo, m, list(PROMPT_ORDER))
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert _red(out).sum() > 100
    assert not out[~m & ~_red(out)].any()  # black wins over blur and grey outside


def test_empty_mask_and_weak_soft_map_give_unprompted_copy(photo: np.ndarray) -> None:
    empty = np.zeros(photo.shape[:2], bool)
    out = apply_visual_prompts(photo, empty, ["blur", "circle"])
    np.testing.assert_array_equal(out, photo)
    assert not np.shares_memory(out, photo)

    m = _box_mask(photo.shape[:2], 40, 120, 60, 200)
    weak = np.zeros(photo.shape[:2], np.float32)
    weak[50, 70] = 1.0  # sums to exactly 1
    np.testing.assert_array_equal(apply_visual_prompts(photo, m, ["black"], soft_map=weak), photo)
    weak[50, 71] = 0.01
    assert not np.array_equal(apply_visual_prompts(photo, m, ["black"], soft_map=weak), photo)


def test_no_prompts_gives_copy(photo: np.ndarray) -> None:
    m = _box_mask(photo.shape[:2], 40, 120, 60, 200)
    np.testing.assert_array_equal(apply_visual_prompts(photo, m, []), photo)


def test_inputs_not_modified(photo: np.ndarray) -> None:
    img = photo.copy()
    m = _box_mask(photo.shape[:2], 40, 120, 60, 200)
    m_before = m.copy()
    out = apply_visual_prompts(img, m, list(PROMPT_ORDER))
    np.testing.assert_array_equal(img, photo)
    np.testing.assert_array_equal(m, m_before)
    assert not np.shares_memory(out, img)


def test_non_contiguous_input_and_int_mask(photo: np.ndarray) -> None:
    flipped = photo[:, ::-1]
    m = _box_mask(photo.shape[:2], 40, 120, 60, 200)
    out = apply_visual_prompts(flipped, m.astype(np.uint8), ["circle", "gray"])
    ref = apply_visual_prompts(np.ascontiguousarray(flipped), m, ["circle", "gray"])
    np.testing.assert_array_equal(out, ref)
    assert out.flags.c_contiguous


def test_bad_arguments(photo: np.ndarray) -> None:
    m = np.ones(photo.shape[:2], bool)
    with pytest.raises(ValueError, match="Unknown visual prompt"):
        apply_visual_prompts(photo, m, ["sparkle"])
    with pytest.raises(ValueError, match="mask shape"):
        apply_visual_prompts(photo, m[:-1], ["blur"])
    with pytest.raises(ValueError, match="odd"):
        apply_visual_prompts(photo, m, ["blur"], blur_kernel=4)
    with pytest.raises(ValueError, match="uint8"):
        apply_visual_prompts(photo.astype(np.float32), m, ["blur"])


def test_released_rectangle_is_centred_on_the_centroid() -> None:
    img = np.full((80, 90, 3), 128, np.uint8)
    m = np.zeros((80, 90), bool)
    for y in range(15, 61):                      # the same lopsided triangle
        m[y, 20 : 20 + (y - 15) + 1] = True
    out = apply_visual_prompts(img, m, ["rectangle"], rectangle_on_bbox=False)
    rows, cols = np.nonzero(m)
    cy, cx = int(np.mean(rows)), int(np.mean(cols))
    hh, hw = (rows.max() - rows.min() + 1) // 2, (cols.max() - cols.min() + 1) // 2
    y0, y1, x0, x1 = cy - hh, cy + hh, cx - hw, cx + hw
    expected = np.zeros((80, 90), bool)
    expected[y0, x0 : x1 + 1] = expected[y1, x0 : x1 + 1] = True
    expected[y0 : y1 + 1, x0] = expected[y0 : y1 + 1, x1] = True
    np.testing.assert_array_equal(_red(out), expected)
    assert y1 > rows.max()                       # shifted down, past the mask's own bottom
