"""Tests of car_desktop.engine.crf: the dense CRF snaps soft maps to colour edges, and never crashes."""

from __future__ import annotations

import numpy as np
import pytest

from car_desktop.engine.config import CRFParams
from car_desktop.engine.crf import _unary, dense_crf, masks_from_labels


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _two_colour(rng: np.random.Generator, h: int = 64, w: int = 96, edge: int = 48) -> np.ndarray:
    img = np.zeros((h, w, 3), np.int64)
    img[:, :edge] = (40, 60, 150)
    img[:, edge:] = (230, 200, 50)
    return np.clip(img + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("offset", [40, 56])  # the soft map's 0.5 crossing 8 px left / right of the edge
def test_crf_snaps_to_colour_edge(offset: int) -> None:
    rng = np.random.default_rng(offset)
    h, w, edge = 64, 96, 48
    img = _two_colour(rng, h, w, edge)
    ramp = 1.0 / (1.0 + np.exp(-(np.arange(w) - offset) / 5.0))
    cam = np.clip(np.tile(ramp, (h, 1)) + rng.normal(0, 0.15, (h, w)), 0, 1).astype(np.float32)
    truth = np.zeros((h, w), bool)
    truth[:, edge:] = True

    labels = dense_crf(img, cam[None], CRFParams())
    assert labels.dtype == np.int32 and labels.shape == (h, w)
    assert set(np.unique(labels)) <= {0, 1}
    raw = cam > 0.5  # where the unary alone would put the label
    assert _iou(raw, truth) < 0.9
    assert _iou(labels == 1, truth) > 0.98


def test_crf_recovers_square_from_blurry_blob(two_colour_image: np.ndarray) -> None:
    # The fixture's red square (rows 30-59, cols 16-45) on dark blue, given a round, too-wide blob.
    h, w = two_colour_image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-(((yy - 44.5) / 24) ** 2 + ((xx - 30.5) / 24) ** 2)).astype(np.float32)
    square = np.zeros((h, w), bool)
    square[30:60, 16:46] = True
    labels = dense_crf(two_colour_image, blob[None], CRFParams())
    assert _iou(blob > 0.5, square) < 0.8
    assert _iou(labels == 1, square) > 0.95


def test_two_queries_keep_their_label_order() -> None:
    rng = np.random.default_rng(5)
    img = _two_colour(rng)
    left = np.zeros((64, 96), np.float32)
    left[:, :40] = 0.9
    right = np.zeros((64, 96), np.float32)
    right[:, 60:] = 0.9
    labels = dense_crf(img, np.stack([left, right]), CRFParams())
    masks = masks_from_labels(labels, 2)
    assert masks.shape == (2, 64, 96) and masks.dtype == bool
    assert masks[0][:, :40].all() and masks[1][:, 60:].all()
    assert not (masks[0] & masks[1]).any()


def test_zero_iterations_is_argmax_of_unnormalised_probabilities() -> None:
    rng = np.random.default_rng(6)
    probs = rng.random((3, 12, 10)).astype(np.float32)
    img = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    labels = dense_crf(img, probs, CRFParams(iterations=0))
    full = np.concatenate([1 - probs.max(axis=0, keepdims=True), probs])
    np.testing.assert_array_equal(labels, full.argmax(axis=0))


def test_unary_values() -> None:
    probs = np.array([[[0.0, 0.5]], [[0.3, 1.0]]], np.float32)  # k=2, 1x2 image
    u = _unary(probs, 1e-5)
    assert u.shape == (3, 2) and u.dtype == np.float32 and u.flags.c_contiguous
    expected = -np.log(np.array([[0.7, 1e-5], [1e-5, 0.5], [0.3, 1.0]]))
    np.testing.assert_allclose(u, expected, rtol=1e-5)


def test_all_background_gives_empty_masks() -> None:
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    probs = np.full((2, 40, 50), 0.05, np.float32)
    labels = dense_crf(img, probs, CRFParams())
    assert not labels.any()
    masks = masks_from_labels(labels, 2)
    assert masks.shape == (2, 40, 50) and not masks.any()


def test_no_queries() -> None:
    img = np.zeros((7, 9, 3), np.uint8)
    labels = dense_crf(img, np.zeros((0, 7, 9), np.float32), CRFParams())
    assert labels.shape == (7, 9) and labels.dtype == np.int32 and not labels.any()
    assert masks_from_labels(labels, 0).shape == (0, 7, 9)


def test_one_pixel_image() -> None:
    img = np.array([[[10, 20, 30]]], np.uint8)
    assert dense_crf(img, np.array([[[0.9]]], np.float32), CRFParams()).tolist() == [[1]]
    assert dense_crf(img, np.array([[[0.1]]], np.float32), CRFParams()).tolist() == [[0]]


def test_out_of_range_and_nan_probabilities_are_tamed() -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    probs = np.full((1, 8, 8), 1.5, np.float32)
    probs[0, 0, 0] = np.nan
    probs[0, 1, 1] = -3.0
    labels = dense_crf(img, probs, CRFParams())
    assert labels.shape == (8, 8) and set(np.unique(labels)) <= {0, 1}


def test_inputs_not_modified() -> None:
    rng = np.random.default_rng(8)
    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    probs = rng.random((2, 16, 16)).astype(np.float32) * 1.2
    img0, probs0 = img.copy(), probs.copy()
    dense_crf(img, probs, CRFParams())
    np.testing.assert_array_equal(img, img0)
    np.testing.assert_array_equal(probs, probs0)


def test_non_contiguous_image_accepted() -> None:
    rng = np.random.default_rng(9)
    img = _two_colour(rng)[:, ::-1]
    cam = np.zeros((1, 64, 96), np.float32)
    cam[0, :, :40] = 0.9
    labels = dense_crf(img, cam, CRFParams())
    np.testing.assert_array_equal(labels, dense_crf(np.ascontiguousarray(img), cam, CRFParams()))


def test_masks_from_labels_ignores_labels_above_k() -> None:
    labels = np.array([[0, 1, 2, 3]], np.int32)
    masks = masks_from_labels(labels, 2)
    assert masks.tolist() == [[[False, True, False, False]], [[False, False, True, False]]]


def test_bad_shapes() -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="probs"):
        dense_crf(img, np.zeros((1, 8, 9), np.float32), CRFParams())
    with pytest.raises(ValueError, match="image"):
        dense_crf(img[..., 0], np.zeros((1, 8, 8), np.float32), CRFParams())
    with pytest.raises(ValueError):
        masks_from_labels(np.zeros((2, 2, 2)), 1)


def test_isolated_crf_matches_in_process_and_honours_cancel(two_colour_image):
    """The helper-process CRF gives the same labels; a cancel returns without waiting for it."""
    from car_desktop.engine.cancel import CancelToken
    from car_desktop.engine.crf import dense_crf_isolated
    from car_desktop.engine.errors import Cancelled

    probs = np.zeros((1, 96, 128), np.float32)
    probs[0, 25:65, 10:50] = 0.8
    expected = dense_crf(two_colour_image, probs, CRFParams())
    np.testing.assert_array_equal(dense_crf_isolated(two_colour_image, probs, CRFParams()), expected)
    token = CancelToken()
    token.cancel()
    big = np.zeros((600, 800, 3), np.uint8)
    with pytest.raises(Cancelled):
        dense_crf_isolated(big, np.full((2, 600, 800), 0.5, np.float32), CRFParams(), token)


def test_read_only_image_in_process(two_colour_image):
    """np.asarray(PIL image) is read-only; pydensecrf needs a writable buffer: the CRF copies."""
    from PIL import Image

    ro = np.asarray(Image.fromarray(two_colour_image))
    assert not ro.flags.writeable
    probs = np.zeros((1, 96, 128), np.float32)
    probs[0, 25:65, 10:50] = 0.8
    labels = dense_crf(ro, probs, CRFParams())
    np.testing.assert_array_equal(labels, dense_crf(two_colour_image.copy(), probs, CRFParams()))
    assert labels[45, 30] == 1 and labels[5, 120] == 0
    for colour in ("rgb", "released"):
        assert dense_crf(ro, probs, CRFParams(), colour=colour).shape == (96, 128)


def test_released_colour_image_is_bgr_minus_mean_wrapped():
    from car_desktop.engine.crf import RELEASED_MEAN_BGR, crf_colour_image

    img = np.array([[[0, 0, 0], [255, 255, 255], [122, 116, 104], [10, 200, 130]]], np.uint8)
    got = crf_colour_image(img, "released")
    bgr = img[:, :, ::-1].astype(np.float64) - np.array(RELEASED_MEAN_BGR)
    want = np.mod(np.trunc(bgr), 256).astype(np.uint8)  # truncate toward zero, wrap modulo 256
    np.testing.assert_array_equal(got, want)
    # Black: B 0 - 104.008 -> -104 -> 152; white: 255 - 104.008 -> 150.99 -> 150.
    assert got[0, 0].tolist() == [152, 140, 134] and got[0, 1].tolist() == [150, 138, 132]
    assert got.flags.c_contiguous and got.flags.writeable and got.dtype == np.uint8
    rgb = crf_colour_image(img, "rgb")
    assert rgb is img  # already contiguous and writable: no copy
    with pytest.raises(ValueError, match="colour"):
        crf_colour_image(img, "lab")


def test_released_colour_wraps_a_smooth_region_into_an_edge():
    """Blue 103 | 105 is no edge in RGB, but the released image wraps 103 - 104.008 to 255 and 105 to 0:
    its CRF snaps the label to that spurious edge, the RGB one follows the soft map."""
    h, w = 64, 96
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0], img[:, :, 1] = 120, 118
    img[:, :48, 2], img[:, 48:, 2] = 103, 105
    ramp = np.clip(0.5 + 0.3 * (40 - np.arange(w)) / 40, 0.05, 0.95)   # crosses 0.5 at column 40
    probs = np.tile(ramp, (h, 1))[None].astype(np.float32)
    rgb = dense_crf(img, probs, CRFParams())
    released = dense_crf(img, probs, CRFParams(), colour="released")
    assert (released[:, :48] == 1).all() and (released[:, 48:] == 0).all()
    assert (rgb[:, 40:] == 0).all() and (rgb[:, :20] == 1).all()


GUARDLESS_SCRIPT = '''
import sys, json
from pathlib import Path
counter = Path(sys.argv[1])
with counter.open("a") as fh:           # one line per execution of this file
    fh.write("ran\\n")
import numpy as np
from car_desktop.engine.config import preset
from car_desktop.engine.pipeline import CaRPipeline
from car_desktop.engine import crf
img = np.zeros((96, 128, 3), np.uint8)
img[:, 64:] = (240, 220, 40)
config = preset("objects", sam_mode="off", device="cpu", crf_in_subprocess=True)
result = CaRPipeline(config, test_models=True).run(img, "cat, dog")
print(json.dumps({"stats": crf.helper_stats, "concepts": len(result.concepts)}))
'''


@pytest.mark.slow
def test_crf_helper_never_reruns_a_guardless_script(tmp_path):
    """A user's script without a main guard runs once: the helper starts from the package's own entry."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "user_script.py"
    script.write_text(GUARDLESS_SCRIPT)
    counter = tmp_path / "runs.txt"
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), HF_HUB_OFFLINE="1", CAR_DESKTOP_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, str(script), str(counter)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert counter.read_text().splitlines() == ["ran"]          # never re-executed by the helper
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["concepts"] == 2
    assert out["stats"]["requests"] >= 1 and out["stats"]["fallbacks"] == 0   # the helper did the CRF
    assert "helper process unavailable" not in proc.stderr


def test_helper_replaced_after_it_dies(two_colour_image):
    """A dead helper is noticed: the next CRF starts a new one and still answers correctly."""
    from car_desktop.engine import crf

    probs = np.zeros((1, 96, 128), np.float32)
    probs[0, 25:65, 10:50] = 0.8
    expected = dense_crf(two_colour_image, probs, CRFParams())
    np.testing.assert_array_equal(crf.dense_crf_isolated(two_colour_image, probs, CRFParams()), expected)
    first = crf._helper
    assert first is not None and first.pid != __import__("os").getpid()
    first._proc.kill()
    first._proc.wait()
    np.testing.assert_array_equal(crf.dense_crf_isolated(two_colour_image, probs, CRFParams()), expected)
    assert crf._helper is not None and crf._helper is not first
