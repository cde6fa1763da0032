"""The hand-driven CLIP towers must compute exactly what open_clip computes."""

from __future__ import annotations

import pytest
import torch

from car_desktop.engine import clip_models as cm
from car_desktop.engine import clip_tower as ct


@pytest.fixture(scope="module")
def models():
    return cm.load_test_models(device="cpu")


def _hand_encode(visual, pixels):
    x, grid = ct.embed_image(visual, pixels)
    attns = []
    for blk in visual.transformer.resblocks:
        out = ct.block_forward(blk, x, need_weights=True)
        x = out.x
        attns.append(out.attn)
    return ct.project(visual, x[:, 0]), grid, attns


@pytest.mark.parametrize("which", [0, 1])
def test_hand_forward_equals_encode_image(models, which):
    clip = models[which]
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = clip.model.encode_image(pixels)
        got, grid, attns = _hand_encode(clip.model.visual, pixels)
    assert grid == ct.native_grid(clip.model.visual)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # Head-averaged attention rows are distributions over all tokens.
    n = grid[0] * grid[1] + 1
    assert attns[0].shape == (2, n, n)
    torch.testing.assert_close(attns[-1].sum(-1), torch.ones(2, n), atol=1e-5, rtol=0)


def test_attention_weights_match_multihead_attention(models):
    blk = models[0].model.visual.transformer.resblocks[3]
    x = torch.randn(1, 50, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = ct.block_forward(blk, x, need_weights=True)
        y = blk.ln_1(x)
        _, want = blk.attn(y, y, y, need_weights=True, average_attn_weights=True)
        torch.testing.assert_close(out.attn, want, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out.x, blk(x), atol=1e-5, rtol=1e-5)
        # The SDPA path (no weights) gives the same block output.
        torch.testing.assert_close(ct.block_forward(blk, x).x, out.x, atol=1e-5, rtol=1e-5)


def test_pos_embed_identity_at_native_grid_and_cls_kept(models):
    visual = models[0].model.visual
    pos = visual.positional_embedding
    native = ct.native_grid(visual)
    assert native == (14, 14)
    assert ct.interpolate_pos_embed(pos, native, native) is pos
    resized = ct.interpolate_pos_embed(pos, native, (7, 9))
    assert resized.shape == (1 + 63, pos.shape[1])
    assert torch.equal(resized[0], pos[0])
    # A constant patch embedding stays constant under bilinear interpolation.
    flat = torch.cat([pos[:1], torch.ones(196, pos.shape[1])])
    torch.testing.assert_close(ct.interpolate_pos_embed(flat, native, (5, 31))[1:], torch.ones(155, pos.shape[1]))


def test_embed_image_non_native_grid(models):
    visual = models[0].model.visual
    pixels = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        x, grid = ct.embed_image(visual, pixels)
    assert grid == (3, 5) and x.shape == (1, 16, 64)


def test_truncated_text_equals_full_context(models):
    for clip in models:
        texts = ["dog", "a clean origami traffic light.", "There is a large fire hydrant in the scene.", ""]
        tokens = clip.tokenizer(texts)
        assert tokens.shape[1] == 77
        with torch.no_grad():
            want = clip.model.encode_text(tokens)
            got = ct.encode_text_truncated(clip.model, tokens)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_pool_patches_is_layernorm_then_mean(models):
    visual = models[0].model.visual
    tokens = torch.randn(2, 10, 64)
    with torch.no_grad():
        want = visual.ln_post(tokens[:, 1:]).mean(1) @ visual.proj
        torch.testing.assert_close(ct.pool_patches(visual, tokens), want, atol=1e-5, rtol=1e-5)
