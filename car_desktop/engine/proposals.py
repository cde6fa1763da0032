"""The CaR proposal generator: one soft mask per query from Grad-CAM on CLIP, refined with CLIP attention.

``prepare`` runs the visual tower once per image (at the image's own aspect, long side capped) and
keeps what does not depend on the text: the input of the last block and the CLIP-ES affinity built
from the last blocks' attention. ``propose`` then costs one batched last-block forward/backward for
all queries of a step: the last block's input is replicated k times, the sum of the k target
probabilities is backpropagated once, and each query's Grad-CAM (on the last block's ln_1 output) is
refined through the affinity and resized to the original image. Behaviour follows the authors'
released code; docs/engine.md ("Proposals") describes each step and the named deviations.

Precision: on a CPU with bfloat16 the image pass (all blocks, no gradient) runs under autocast; the
Grad-CAM pass, the softmax it differentiates and the CLIP-ES refinement always run in fp32.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from . import cam_refine
from .clip_models import ClipModel
from .clip_tower import (
    block_forward,
    check_block,
    embed_image,
    layer_norm,
    pool_patches,
    run_blocks,
)
from .config import CaRConfig
from .device import FP32, Precision, full_precision
from .image_io import as_rgb_uint8, content_hash
from .results import PassCounter
from .text_encoder import TextEncoder

log = logging.getLogger(__name__)


def logit_scale_for(clip: ClipModel, config: CaRConfig) -> float:
    """The softmax temperature: the config's fixed value, else the model's own exp(logit_scale)."""
    return float(config.logit_scale) if config.logit_scale is not None else clip.logit_scale


@dataclass
class ImageFeatures:
    """Everything about one image that the proposal stage reuses across steps."""

    key: str                          # content hash of the image (bytes + shape)
    clip_key: str                     # the proposal model these features belong to
    image_size: tuple[int, int]       # (H, W) of the original image; maps come back at this size
    input_size: tuple[int, int]       # (h, w) pixels fed to CLIP, multiples of the patch size
    grid: tuple[int, int]             # (rows, cols) of patches
    last_input: torch.Tensor          # (1, 1 + rows*cols, C) input of the last block, model dtype
    attn_mean: torch.Tensor           # (N, N) fp32 patch attention averaged over the last blocks
    affinity: torch.Tensor            # (N, N) fp32 CLIP-ES refinement matrix (A^2)


def proposal_input_size(height: int, width: int, patch: int, long_side: int | None) -> tuple[int, int]:
    """(h, w) fed to CLIP: each side rounded up to the patch size after capping the long side.

    A side never exceeds ``long_side`` rounded down to a whole patch (at least one patch). Without a
    cap (None, the released code) each side is simply rounded up to whole patches.
    """
    if long_side is None:
        return max(1, math.ceil(height / patch)) * patch, max(1, math.ceil(width / patch)) * patch
    scale = min(1.0, long_side / max(height, width))
    max_cells = max(1, long_side // patch)
    rows = min(max_cells, max(1, math.ceil(height * scale / patch)))
    cols = min(max_cells, max(1, math.ceil(width * scale / patch)))
    return rows * patch, cols * patch


class ProposalGenerator:
    """Soft masks for text queries on one image at a time; caches per-image work (small LRU)."""

    def __init__(
        self,
        clip: ClipModel,
        config: CaRConfig,
        text_encoder: TextEncoder,
        counter: PassCounter,
        cache_size: int = 4,
        grad_memory_bytes: int = 1 << 30,
    ) -> None:
        self.clip = clip
        self.config = config
        self.text_encoder = text_encoder
        self.counter = counter
        self.cache_size = max(1, cache_size)
        #: Budget for one chunk of the replicated last-block pass; large k is split, results unchanged.
        self.grad_memory_bytes = grad_memory_bytes
        self.visual = clip.model.visual
        self.blocks = list(self.visual.transformer.resblocks)
        for blk in self.blocks:
            check_block(blk)
        self.patch = clip.patch_size
        mean = getattr(self.visual, "image_mean", None) or OPENAI_DATASET_MEAN
        std = getattr(self.visual, "image_std", None) or OPENAI_DATASET_STD
        self._mean = torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)
        # Named deviation (see cam_refine.cam_boxes): off unless the config asks for the released
        # code's off-by-one box edges.
        self.box_edge_quirk = config.refine_box_edge_quirk
        self.logit_scale = logit_scale_for(clip, config)
        self._cache: OrderedDict[str, ImageFeatures] = OrderedDict()
        self._lock = threading.RLock()

    # ----- per image --------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, h, w) normalised pixels: bicubic resize to whole patches, CLIP mean/std."""
        height, width = image.shape[:2]
        h, w = proposal_input_size(height, width, self.patch, self.config.proposal_long_side)
        resized = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
        pixels = torch.from_numpy(resized).permute(2, 0, 1).unsqueeze(0) / 255.0
        return ((pixels - self._mean) / self._std).to(self.clip.device)

    def prepare(self, image: np.ndarray) -> ImageFeatures:
        """Run the tower (all blocks, no grad) once per distinct image; later calls hit the cache."""
        image = as_rgb_uint8(image)
        key = content_hash(image)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            feats = self._compute_features(image, key)
            self._cache[key] = feats
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return feats

    @torch.no_grad()
    def _compute_features(self, image: np.ndarray, key: str) -> ImageFeatures:
        pixels = self.preprocess(image)
        n_blocks = len(self.blocks)
        keep = max(1, min(int(self.config.refine_layers), n_blocks))
        attn_sum: torch.Tensor | None = None
        last_input: torch.Tensor | None = None
        with self.clip.precision.context():  # bf16 autocast where it pays (device.resolve_precision)
            x, grid = embed_image(self.visual, pixels, pos_fp16=self.config.pos_embed_fp16)
            for i, blk in enumerate(self.blocks):
                if i == n_blocks - 1:
                    last_input = x
                if i >= n_blocks - keep:
                    out = block_forward(blk, x, need_weights=True)
                    assert out.attn is not None  # need_weights=True
                    patch_attn = out.attn[0, 1:, 1:].float()
                    attn_sum = patch_attn if attn_sum is None else attn_sum + patch_attn
                    x = out.x
                else:
                    x = run_blocks([blk], x)
        # The last block's attention does not depend on the text, so it is taken here (no grad)
        # rather than from the gradient pass: the whole affinity is then once per image.
        assert attn_sum is not None and last_input is not None  # keep >= 1 block, the last one included
        attn_mean = attn_sum / keep
        affinity = cam_refine.refinement_matrix(attn_mean)  # fp32
        self.counter.proposal_image_passes += 1
        return ImageFeatures(
            key=key, clip_key=self.clip.key, image_size=(int(image.shape[0]), int(image.shape[1])),
            input_size=(int(pixels.shape[-2]), int(pixels.shape[-1])), grid=grid,
            last_input=last_input.detach(), attn_mean=attn_mean, affinity=affinity,
        )

    # ----- per step ---------------------------------------------------------------------------
    def _chunk_size(self, feats: ImageFeatures) -> int:
        """Targets per batched backward, so one chunk's gradient buffers stay within the budget."""
        length = feats.last_input.shape[1]
        width = feats.last_input.shape[2]
        heads = self.blocks[-1].attn.num_heads
        per_item = 4 * (2 * heads * length * length + 16 * length * width)
        return max(1, self.grad_memory_bytes // per_item)

    def grad_cams(
        self,
        feats: ImageFeatures,
        query_emb: torch.Tensor,
        background_emb: torch.Tensor | None,
        indices: list[int] | None = None,
        referring: bool = False,
        precision: Precision = FP32,
    ) -> np.ndarray:
        """(len(indices), rows, cols) min-max normalised Grad-CAMs, no fallback, no refinement.

        Joint mode: query i's target is its probability in one softmax over [queries; background].
        Referring mode: each query's own softmax over [that query; background]. The last block runs
        forward once (its input is the same for every query) and one batched backward gives every
        target's gradient at once (autograd's ``is_grads_batched``): the same numbers as replicating
        the block per query, without repeating its forward pass. It runs in fp32; ``precision`` exists
        so the engine benchmark can measure what bf16 would change here (it is not used otherwise).
        """
        n = query_emb.shape[0]
        indices = list(range(n)) if indices is None else list(indices)
        rows, cols = feats.grid
        if not indices:
            return np.zeros((0, rows, cols), dtype=np.float32)
        bg = background_emb if background_emb is not None and background_emb.shape[0] else None
        block = self.blocks[-1]
        x0 = feats.last_input.float()
        idx = torch.tensor(indices, device=x0.device)
        k = len(indices)
        out_cams = []
        scale = self.logit_scale
        # fp32 whatever the models' precision: the softmax, its gradient and the CAM stay exact.
        with torch.enable_grad(), full_precision(x0.device.type), precision.context():
            ln1 = layer_norm(block.ln_1, x0).detach().requires_grad_(True)
            tokens = block_forward(block, x0, ln1=ln1).x
            # The image embedding is scaled before the products, in the released code's order.
            img = scale * F.normalize(pool_patches(self.visual, tokens), dim=-1)[0]   # (d,)
            if referring:
                own = (query_emb[idx] @ img)[:, None]                                 # (k, 1)
                logits = own if bg is None else torch.cat([own, (bg @ img)[None].expand(k, -1)], dim=1)
                targets = logits.softmax(dim=-1)[:, 0]
            else:
                texts = query_emb if bg is None else torch.cat([query_emb, bg], dim=0)
                targets = (texts @ img).softmax(dim=-1)[idx]                          # (k,)
            step = self._chunk_size(feats)
            for start in range(0, k, step):
                m = min(step, k - start)
                basis = torch.zeros(m, k, device=x0.device)
                basis[torch.arange(m), torch.arange(start, start + m)] = 1.0
                (grad,) = torch.autograd.grad(targets, ln1, grad_outputs=basis, is_grads_batched=True,
                                              retain_graph=start + m < k)
                acts = ln1.detach()[0, 1:]                                            # (N, C)
                weights = grad[:, 0, 1:].mean(dim=1)                                  # (m, C)
                cam = torch.relu(weights.float() @ acts.float().T)                    # (m, N)
                out_cams.append(cam.float().reshape(m, rows, cols).cpu().numpy())
        return cam_refine.minmax(np.concatenate(out_cams, axis=0))

    def cams(
        self, feats: ImageFeatures, query_texts: list[str], background_texts: list[str], referring: bool = False
    ) -> np.ndarray:
        """(k, rows, cols) Grad-CAMs with the released code's fallback for all-zero maps."""
        q = self.text_encoder.encode(self.clip, query_texts)
        bg = self.text_encoder.encode(self.clip, background_texts) if background_texts else None
        cams = self.grad_cams(feats, q, bg, referring=referring)
        self.counter.last_block_passes += 1
        empty = [i for i in range(len(query_texts)) if cams[i].max() == 0]
        # Without background the softmax runs over the queries alone; over a single text it is the
        # constant 1 (zero gradient), so the retry is skipped there as it could not change the map.
        competitors = 1 if referring else len(query_texts)
        if empty and bg is not None and competitors > 1:
            log.debug("Grad-CAM was empty for %d queries; retrying without background words.", len(empty))
            cams[empty] = self.grad_cams(feats, q, None, indices=empty, referring=referring)
            self.counter.last_block_passes += 1
        return cams

    def propose(
        self,
        feats: ImageFeatures,
        query_texts: list[str],
        background_texts: list[str],
        referring: bool = False,
        lam: float | None = None,
    ) -> np.ndarray:
        """(k, H, W) float32 soft maps in [0, 1] at the original image size, one per query text.

        ``lam`` overrides the config's box threshold, so one generator (and its per-image cache)
        serves runs with different thresholds.
        """
        lam = self.config.lam if lam is None else lam
        height, width = feats.image_size
        if not query_texts:
            return np.zeros((0, height, width), dtype=np.float32)
        if feats.clip_key != self.clip.key:
            raise ValueError("These image features were prepared with another CLIP model.")
        with self._lock:
            cams = self.cams(feats, list(query_texts), list(background_texts), referring=referring)
            masks = np.stack([
                cam_refine.box_mask_from_cam(c, lam, edge_quirk=self.box_edge_quirk) for c in cams
            ])
            refined = cam_refine.refine_cams(feats.affinity, cams, masks)
            return cam_refine.resize_maps(refined, (height, width))
