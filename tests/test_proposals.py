"""The proposal generator: one batched Grad-CAM pass, per-image caching, shapes at odd image sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from car_desktop.engine import cam_refine as cr
from car_desktop.engine import clip_models as cm
from car_desktop.engine import clip_tower as ct
from car_desktop.engine.config import CaRConfig
from car_desktop.engine.errors import ImageLoadError
from car_desktop.engine.proposals import ProposalGenerator, proposal_input_size
from car_desktop.engine.results import PassCounter
from car_desktop.engine.text_encoder import TextEncoder

QUERIES = ["dog", "a red square", "sky", "a car"]
BACKGROUND = ["a clean origami tree.", "a clean origami wall.", "a clean origami road."]


@pytest.fixture(scope="module")
def proposal_clip():
    return cm.load_test_models(device="cpu")[0]


@pytest.fixture
def gen(proposal_clip):
    counter = PassCounter()
    return ProposalGenerator(proposal_clip, CaRConfig(), TextEncoder(counter), counter)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[h // 4: h // 2, w // 4: w // 2] = (220, 30, 30)
    return img


def visual_scale(gen: ProposalGenerator) -> torch.Tensor:
    """The model's own exp(logit_scale), as the released code (and the default config) uses it."""
    return gen.clip.model.logit_scale.exp()


def _reference_cam(gen: ProposalGenerator, feats, texts: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM for one query through open_clip's own block module, with a tensor hook on ln_1."""
    visual = gen.visual
    block = visual.transformer.resblocks[-1]
    saved = {}

    def hook(module, inputs, output):
        output.retain_grad()
        saved["ln1"] = output

    handle = block.ln_1.register_forward_hook(hook)
    try:
        x = feats.last_input.clone().requires_grad_(True)
        tokens = block(x)
        emb = visual.ln_post(tokens)[:, 1:].mean(dim=1) @ visual.proj
        probs = (visual_scale(gen) * F.normalize(emb, dim=-1) @ texts.T).softmax(dim=-1)
        probs[0, target].backward()
    finally:
        handle.remove()
    acts, grads = saved["ln1"].detach()[0, 1:], saved["ln1"].grad[0, 1:]
    cam = torch.relu(acts @ grads.mean(dim=0)).reshape(feats.grid).numpy()
    return cr.minmax(cam[None])[0]


def test_input_size_rounding_and_cap():
    assert proposal_input_size(1, 1, 16, 640) == (16, 16)
    assert proposal_input_size(37, 53, 16, 640) == (48, 64)
    assert proposal_input_size(224, 224, 16, 640) == (224, 224)
    assert proposal_input_size(3000, 2000, 16, 640) == (640, 432)
    assert proposal_input_size(2000, 3000, 14, 640) == (434, 630)   # never above the cap


def test_batched_pass_equals_one_pass_per_concept(gen):
    feats = gen.prepare(_image(80, 112))
    q = gen.text_encoder.encode(gen.clip, QUERIES)
    bg = gen.text_encoder.encode(gen.clip, BACKGROUND)
    batched = gen.grad_cams(feats, q, bg)
    assert batched.shape == (4, 5, 7)
    texts = torch.cat([q, bg])
    for i in range(len(QUERIES)):
        single = gen.grad_cams(feats, q, bg, indices=[i])[0]
        np.testing.assert_allclose(batched[i], single, atol=1e-5)
        np.testing.assert_allclose(batched[i], _reference_cam(gen, feats, texts, i), atol=1e-4)
    # Chunking a large batch (memory cap) changes nothing.
    gen.grad_memory_bytes = 1
    np.testing.assert_allclose(gen.grad_cams(feats, q, bg), batched, atol=1e-5)


def test_referring_is_own_softmax_per_phrase(gen):
    feats = gen.prepare(_image(64, 64))
    q = gen.text_encoder.encode(gen.clip, QUERIES)
    bg = gen.text_encoder.encode(gen.clip, BACKGROUND)
    ref = gen.grad_cams(feats, q, bg, referring=True)
    for i in range(len(QUERIES)):
        alone = gen.grad_cams(feats, q[i:i + 1], bg)[0]
        np.testing.assert_allclose(ref[i], alone, atol=1e-5)
    maps = gen.propose(feats, QUERIES, BACKGROUND, referring=True)
    assert maps.shape == (4, 64, 64)


def test_prepare_is_cached_per_image(gen):
    img = _image(50, 70)
    feats = gen.prepare(img)
    assert gen.counter.proposal_image_passes == 1
    assert gen.prepare(img.copy()) is feats                 # same content, no tower pass
    assert gen.counter.proposal_image_passes == 1
    gen.cache_size = 2
    gen.prepare(_image(50, 70, seed=1))
    gen.prepare(_image(50, 70, seed=2))                      # evicts the first image
    assert gen.counter.proposal_image_passes == 3
    gen.prepare(img)
    assert gen.counter.proposal_image_passes == 4


def test_affinity_is_last_blocks_attention_refined(gen):
    img = _image(48, 80)
    feats = gen.prepare(img)
    with torch.no_grad():
        x, grid = ct.embed_image(gen.visual, gen.preprocess(img))
        attns = []
        for blk in gen.visual.transformer.resblocks:
            out = ct.block_forward(blk, x, need_weights=True)
            x = out.x
            attns.append(out.attn[0, 1:, 1:])
    assert grid == feats.grid == (3, 5) and len(attns) == 9
    mean = torch.stack(attns[-8:]).mean(0)
    torch.testing.assert_close(feats.attn_mean, mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(feats.affinity, cr.refinement_matrix(mean), atol=1e-6, rtol=1e-5)


def test_propose_composes_cam_box_refine_resize(gen):
    img = _image(45, 70)
    feats = gen.prepare(img)
    maps = gen.propose(feats, QUERIES[:2], BACKGROUND)
    assert gen.counter.last_block_passes >= 1
    cams = gen.cams(feats, QUERIES[:2], BACKGROUND)
    masks = np.stack([cr.box_mask_from_cam(c, gen.config.lam) for c in cams])
    want = cr.resize_maps(cr.refine_cams(feats.affinity, cams, masks), (45, 70))
    np.testing.assert_allclose(maps, want, atol=1e-5)


@pytest.mark.parametrize("size", [(1, 1), (37, 53), (3000, 2000)])
def test_output_shape_and_range(gen, size):
    img = _image(*size)
    feats = gen.prepare(img)
    assert max(feats.input_size) <= 640
    maps = gen.propose(feats, QUERIES[:3], BACKGROUND)
    assert maps.shape == (3, *size) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    if size == (3000, 2000):
        assert feats.input_size == (640, 432)
        assert maps.max() == pytest.approx(1.0, abs=0.05)


def test_no_queries_and_bad_images(gen):
    feats = gen.prepare(_image(20, 30))
    assert gen.propose(feats, [], BACKGROUND).shape == (0, 20, 30)
    assert gen.prepare(np.zeros((20, 30), np.uint8)).image_size == (20, 30)     # grey is accepted
    with pytest.raises(ImageLoadError):
        gen.prepare(np.zeros((20, 30, 3), np.float32))
    with pytest.raises(ImageLoadError):
        gen.prepare(np.zeros((0, 30, 3), np.uint8))


def test_zero_cam_is_retried_without_background(gen, monkeypatch):
    feats = gen.prepare(_image(40, 40))
    calls = []
    real = gen.grad_cams

    def fake(feats_, q, bg, indices=None, referring=False):
        calls.append((bg is None, indices))
        out = real(feats_, q, bg, indices=indices, referring=referring)
        if bg is not None:
            out[1] = 0.0                      # pretend query 1 lost against the background
        return out

    monkeypatch.setattr(gen, "grad_cams", fake)
    before = gen.counter.last_block_passes
    cams = gen.cams(feats, QUERIES[:3], BACKGROUND)
    assert calls == [(False, None), (True, [1])]
    assert gen.counter.last_block_passes - before == 2
    q = gen.text_encoder.encode(gen.clip, QUERIES[:3])
    np.testing.assert_allclose(cams[1], real(feats, q, None, indices=[1])[0], atol=1e-6)
