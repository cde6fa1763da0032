"""SamSession on a tiny random SAM: cached embeddings, LRU, prompts, empty outcomes, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from car_desktop.engine.errors import ImageLoadError
from car_desktop.engine.image_io import as_rgb_uint8, content_hash
from car_desktop.engine.results import PassCounter
from car_desktop.engine.sam_interactive import SamSession
from car_desktop.engine.sam_models import load_sam


@pytest.fixture(scope="module")
def handle():
    return load_sam("tiny", None, "cpu")


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (40, 56, 3), dtype=np.uint8)


def test_one_encode_serves_many_clicks(handle):
    counter = PassCounter()
    session = SamSession(handle, counter)
    img = _image(0)
    session.set_image(img)
    session.set_image(img.copy())  # same content, another array: no new encode
    first = session.predict([(10, 12)], [1])
    assert first.mask.shape == (40, 56) and first.mask.dtype == bool
    assert isinstance(first.iou, float) and first.low_res_logits.shape == (1, 256, 256)
    # Refine with a negative point and the previous low-res mask, then with a box only.
    second = session.predict([(10, 12), (40, 30)], [1, 0], mask_input=first.low_res_logits, multimask=False)
    third = session.predict(box=(5, 5, 30, 25))
    assert second.mask.shape == third.mask.shape == (40, 56)
    assert counter.sam_image_encodes == 1 and counter.sam_decodes == 3


def test_predict_returns_the_candidate_with_the_best_predicted_iou(handle):
    session = SamSession(handle)
    session.set_image(_image(0))
    candidates = session.predict_candidates([(20, 20)], [1], multimask=True)
    assert len(candidates) == 3
    best = session.predict([(20, 20)], [1], multimask=True)
    assert best.iou == max(c.iou for c in candidates)
    assert len(session.predict_candidates([(20, 20)], [1], multimask=False)) == 1


def test_no_prompt_is_an_empty_mask_without_a_decode(handle):
    counter = PassCounter()
    session = SamSession(handle, counter)
    session.set_image(_image(0))
    pred = session.predict()
    assert pred.empty and pred.iou == 0.0 and pred.mask.shape == (40, 56)
    assert counter.sam_decodes == 0


def test_predict_before_set_image_and_bad_prompts(handle):
    session = SamSession(handle)
    with pytest.raises(RuntimeError, match="before set_image"):
        session.predict([(1, 1)], [1])
    session.set_image(_image(0))
    with pytest.raises(ValueError, match="labels"):
        session.predict([(1, 1)], [])
    with pytest.raises(ValueError, match="1 \\(object\\) or 0"):
        session.predict([(1, 1)], [2])
    with pytest.raises(ValueError, match="mask_input"):
        session.predict([(1, 1)], [1], mask_input=np.zeros((64, 64)))
    # A point outside the image and a reversed box are accepted.
    assert session.predict([(500, -3)], [1]).mask.shape == (40, 56)
    assert session.predict(box=(30, 25, 5, 5)).mask.shape == (40, 56)


@pytest.mark.slow
def test_lru_keeps_the_current_image_while_prefetching(handle):
    counter = PassCounter()
    session = SamSession(handle, counter, cache_size=2)
    a, b, c = _image(1), _image(2), _image(3)
    key_a = session.set_image(a)
    before = session.predict([(20, 20)], [1])
    key_b = session.prefetch(b)
    key_c = session.prefetch(c)  # over capacity: evicts b (oldest non-current), never a
    assert session.current_key == key_a
    assert session.cached_keys == [key_a, key_c] and key_b not in session.cached_keys
    assert counter.sam_image_encodes == 3
    # Prefetching did not change what predict answers for.
    np.testing.assert_array_equal(session.predict([(20, 20)], [1]).low_res_logits, before.low_res_logits)
    session.set_image(c)   # cached: no encode
    session.prefetch(c)
    assert counter.sam_image_encodes == 3
    session.set_image(b)   # evicted before: encoded again; a (oldest, no longer current) goes
    assert counter.sam_image_encodes == 4
    assert session.current_key == key_b and session.cached_keys == [key_c, key_b]
    session.clear()
    assert session.cached_keys == [] and session.current_key is None


def test_cache_key_depends_on_content_and_model(handle):
    session = SamSession(handle)
    img = _image(5)
    other = img.copy()
    other[0, 0, 0] ^= 1
    assert session.cache_key(img) == session.cache_key(img.copy())
    assert session.cache_key(img) != session.cache_key(other)
    assert session.cache_key(img).endswith(handle.key)
    assert content_hash(img) != content_hash(img.reshape(56, 40, 3))


def test_grey_and_rgba_images_are_accepted():
    grey = np.zeros((8, 9), np.uint8)
    assert as_rgb_uint8(grey).shape == (8, 9, 3)
    assert as_rgb_uint8(np.zeros((8, 9, 4), np.uint8)).shape == (8, 9, 3)
    with pytest.raises(ImageLoadError, match="uint8"):
        as_rgb_uint8(np.zeros((8, 9, 3), np.float32))
    with pytest.raises(ImageLoadError, match="empty"):
        as_rgb_uint8(np.zeros((0, 9, 3), np.uint8))


def test_clicks_and_a_prefetch_from_several_threads(handle):
    counter = PassCounter()
    session = SamSession(handle, counter)
    session.set_image(_image(0))
    expected = session.predict([(20, 20)], [1]).low_res_logits
    errors: list[BaseException] = []
    results: list[np.ndarray] = []

    def click():
        try:
            for _ in range(3):
                results.append(session.predict([(20, 20)], [1]).low_res_logits)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def prefetch():
        try:
            session.prefetch(_image(9))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=prefetch)] + [threading.Thread(target=click) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results) == 9 and all(np.array_equal(r, expected) for r in results)
    assert counter.sam_image_encodes == 2 and counter.sam_decodes == 10


def test_bf16_encoder_keeps_fp32_features_and_close_masks():
    """On a CPU the bf16 handle runs only the image encoder under autocast; the decoder sees fp32."""
    fp32 = SamSession(load_sam("tiny", None, "cpu", precision="fp32"))
    bf16_handle = load_sam("tiny", None, "cpu", precision="bf16")
    assert bf16_handle.precision.name == "bf16" and bf16_handle.key != fp32.handle.key
    bf16 = SamSession(bf16_handle)
    img = _image(3)
    fp32.set_image(img)
    bf16.set_image(img)
    feats32, feats16 = fp32._current.features, bf16._current.features
    assert feats16.dtype == feats32.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(feats32.flatten(), feats16.flatten(), dim=0)
    assert cos > 0.999
    a = fp32.predict(box=(5, 5, 30, 25)).mask
    b = bf16.predict(box=(5, 5, 30, 25)).mask
    assert (a & b).sum() / max((a | b).sum(), 1) > 0.9
