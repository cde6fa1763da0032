"""Driving open_clip's towers by hand where CaR needs more than ``encode_image`` / ``encode_text`` gives.

The visual side: patch embedding at any grid (positional embedding interpolated, CLS kept apart),
and a re-implementation of open_clip's ``ResidualAttentionBlock`` on the block's own parameters that
also returns the head-averaged attention weights (open_clip's blocks call attention with
``need_weights=False``) and the ``ln_1`` output that Grad-CAM differentiates. The text side: CLIP text
encoding cut to the longest prompt in the batch, which under the causal mask gives the same
end-of-text embedding as the full 77-token context for a fraction of the cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

#: An open_clip module driven by attribute name (``ln_1``, ``attn``, ``conv1``, ``proj`` ...): ``nn.Module``
#: resolves these at run time, so a static type cannot name them.
OpenClipModule = Any


@dataclass
class BlockOutput:
    """One residual attention block's results."""

    x: torch.Tensor                    # (B, L, C) block output
    ln1: torch.Tensor                  # (B, L, C) ln_1 output (the Grad-CAM target layer)
    attn: torch.Tensor | None = None   # (B, L, L) head-averaged attention weights, when requested


def layer_norm(ln: OpenClipModule, x: torch.Tensor) -> torch.Tensor:
    # LayerNorm statistics in fp32 even for fp16 weights (as open_clip's LayerNormFp32), cast back.
    if isinstance(ln, nn.Identity):
        return x
    w = ln.weight.float() if ln.weight is not None else None
    b = ln.bias.float() if ln.bias is not None else None
    return F.layer_norm(x.float(), ln.normalized_shape, w, b, ln.eps).to(x.dtype)


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


def _layer_scale(ls: OpenClipModule, x: torch.Tensor) -> torch.Tensor:
    if isinstance(ls, nn.Identity):
        return x
    gamma = ls.gamma.to(x.dtype)
    return x * gamma


def _mlp(mlp: OpenClipModule, x: torch.Tensor) -> torch.Tensor:
    # Sequential(c_fc, gelu, c_proj) in open_clip; cast weights so an fp32 pass works on fp16 models.
    h = F.linear(x, mlp.c_fc.weight.to(x.dtype), _cast(mlp.c_fc.bias, x.dtype))
    h = mlp.gelu(h)
    return F.linear(h, mlp.c_proj.weight.to(x.dtype), _cast(mlp.c_proj.bias, x.dtype))


def check_block(block: OpenClipModule) -> None:
    """Raise ConfigError unless ``block`` is a plain open_clip ResidualAttentionBlock we can drive."""
    attn = getattr(block, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim or not hasattr(block, "mlp"):
        raise ConfigError(
            f"CLIP blocks of type {type(block).__name__} are not supported by the CaR proposal generator; "
            "use a standard ViT CLIP (e.g. ViT-B-16)."
        )


def block_forward(
    block: OpenClipModule, x: torch.Tensor, need_weights: bool = False, ln1: torch.Tensor | None = None
) -> BlockOutput:
    """open_clip's ResidualAttentionBlock on batch-first ``x`` (B, L, C), computed in ``x.dtype``.

    The weights are cast to ``x.dtype`` on the fly so the Grad-CAM pass can run in fp32 on an
    fp16 model. With ``need_weights`` the attention is materialised to return its head average;
    otherwise scaled_dot_product_attention keeps memory low (it matters for the batched backward).
    ``ln1`` may be passed in (a leaf tensor that requires grad) to differentiate with respect to it.
    """
    attn: nn.MultiheadAttention = block.attn
    bsz, length, width = x.shape
    heads = attn.num_heads
    hd = width // heads
    if ln1 is None:
        ln1 = layer_norm(block.ln_1, x)
    qkv = F.linear(ln1, attn.in_proj_weight.to(x.dtype), _cast(attn.in_proj_bias, x.dtype))
    q, k, v = (t.reshape(bsz, length, heads, hd).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    weights = None
    if need_weights:
        # Scaled as torch's MultiheadAttention does with need_weights (q * sqrt(1 / E)), to the last bit.
        scores = (q * math.sqrt(1.0 / float(hd))) @ k.transpose(-1, -2)
        probs = scores.float().softmax(dim=-1)
        weights = probs.mean(dim=1)
        out = probs.to(v.dtype) @ v
    else:
        out = F.scaled_dot_product_attention(q, k, v)
    out = out.transpose(1, 2).reshape(bsz, length, width)
    out = F.linear(out, attn.out_proj.weight.to(x.dtype), _cast(attn.out_proj.bias, x.dtype))
    x = x + _layer_scale(block.ls_1, out)
    x = x + _layer_scale(block.ls_2, _mlp(block.mlp, layer_norm(block.ln_2, x)))
    return BlockOutput(x=x, ln1=ln1, attn=weights)


def native_grid(visual: OpenClipModule) -> tuple[int, int]:
    """The (rows, cols) patch grid the positional embedding was trained for."""
    n = visual.positional_embedding.shape[0] - 1
    gh, gw = getattr(visual, "grid_size", (0, 0))
    if gh * gw != n:
        side = int(round(math.sqrt(n)))
        gh = gw = side
    return int(gh), int(gw)


def interpolate_pos_embed(
    pos: torch.Tensor, native: tuple[int, int], grid: tuple[int, int], fp16_round: bool = False
) -> torch.Tensor:
    """(1 + gh*gw, C) positional embedding for ``grid``: patch part resized bilinearly, CLS apart.

    ``fp16_round`` rounds the whole result (CLS included) to fp16 and back, as the released code does
    with every embedding it interpolates, also at the native grid (a resize to the same size is exact).
    """
    if tuple(grid) != tuple(native):
        cls, patches = pos[:1], pos[1:]
        c = patches.shape[-1]
        img = patches.float().reshape(1, native[0], native[1], c).permute(0, 3, 1, 2)
        img = F.interpolate(img, size=tuple(grid), mode="bilinear", align_corners=False)
        patches = img.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], c).to(pos.dtype)
        pos = torch.cat([cls, patches], dim=0)
    return pos.half().to(pos.dtype) if fp16_round else pos


def embed_image(
    visual: OpenClipModule, pixels: torch.Tensor, pos_fp16: bool = False
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Tokens entering the first block (B, 1 + gh*gw, C), and the grid, for normalised ``pixels``.

    ``pos_fp16``: round the positional embedding to fp16 (see ``interpolate_pos_embed``).
    """
    dtype = visual.conv1.weight.dtype
    # The residual stream stays in the weights' dtype even under autocast (which lowers only the
    # matrix products): a bf16 stream sends torch's attention in-projection of the transposed tokens
    # to a batched-matmul path that copies the weight per batch, ten times slower on a CPU.
    x = visual.conv1(pixels.to(dtype)).to(dtype)             # (B, C, gh, gw)
    grid = (int(x.shape[-2]), int(x.shape[-1]))
    x = x.flatten(2).transpose(1, 2)                        # (B, gh*gw, C), row-major patches
    cls = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    pos = interpolate_pos_embed(visual.positional_embedding, native_grid(visual), grid, fp16_round=pos_fp16)
    x = x + pos.to(x.dtype)
    # patch_dropout is an identity in eval mode; ln_pre may be an Identity (no_ln_pre configs).
    return layer_norm(visual.ln_pre, x), grid


def run_blocks(blocks, x: torch.Tensor) -> torch.Tensor:
    """Run open_clip's own blocks (fast fused attention) on batch-first ``x``."""
    for blk in blocks:
        batch_first = getattr(blk.attn, "batch_first", True)
        x = blk(x) if batch_first else blk(x.transpose(0, 1)).transpose(0, 1)
    return x


def project(visual: OpenClipModule, pooled: torch.Tensor) -> torch.Tensor:
    """ln_post then the projection, in fp32 (the scores are computed in fp32)."""
    y = layer_norm(visual.ln_post, pooled.float())
    if visual.proj is not None:
        y = y @ visual.proj.float()
    return y


def pool_patches(visual: OpenClipModule, tokens: torch.Tensor) -> torch.Tensor:
    """CaR's proposal embedding (B, d): ln_post on each patch token, mean over patches, projection.

    As the released code: LayerNorm per token first, then the mean (the CLS token is left out).
    """
    y = layer_norm(visual.ln_post, tokens[:, 1:].float()).mean(dim=1)
    if visual.proj is not None:
        y = y @ visual.proj.float()
    return y


# ----------------------------------------------------------------------------------------- text
def encode_text_truncated(model: OpenClipModule, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP text features (n, d), unnormalised, equal to ``model.encode_text(tokens)``.

    Only the first ``max(EOT position) + 1`` tokens are run: under the causal mask nothing after a
    sequence's end-of-text token can reach it. Models that do not pool at the EOT argmax with a
    causal mask (CoCa, SigLIP-like text towers) take the full path.
    """
    simple = (
        hasattr(model, "token_embedding") and getattr(model, "text_pool_type", None) == "argmax"
        and getattr(model, "attn_mask", None) is not None
    )
    if not simple:
        return model.encode_text(tokens)
    eot = tokens.argmax(dim=-1)
    length = int(eot.max().item()) + 1
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj
