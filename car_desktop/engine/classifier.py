"""The CaR mask classifier: scores each visually prompted image against every surviving query.

Each prompted image (the image with one query's mask drawn onto it) is preprocessed like CLIP and
encoded once, batched; its embedding is the CLS token after ``config.classifier_cls_block`` (-2, the
second-to-last block: the released code's quirk that theta was tuned on), then ln_post and the
projection. For each template m, S_m = softmax over queries of scale x cosine (scale: the model's
exp(logit_scale), 100 for OpenAI's weights, or the config's fixed value); the S_m are summed over
templates and passed through a second softmax (the double softmax theta depends on). The released
code re-encodes every image once per template; encoding once gives the same numbers far cheaper.

Precision: the image tower runs under bf16 autocast where device.resolve_precision chose it; the
embeddings, the products and both softmaxes are fp32. See docs/engine.md ("Classifier").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from .clip_models import ClipModel
from .clip_tower import embed_image, project, run_blocks
from .config import CaRConfig
from .device import full_precision
from .errors import ConfigError
from .image_io import as_rgb_uint8
from .proposals import logit_scale_for
from .results import PassCounter
from .text_encoder import TextEncoder

log = logging.getLogger(__name__)


def clip_preprocess(image: np.ndarray, size: int = 224) -> np.ndarray:
    """CLIP's eval transform on uint8 RGB: short side to ``size`` (bicubic), centre crop, float [0, 1].

    Mirrors torchvision's Resize(size) + CenterCrop(size) on a PIL image, which open_clip uses.
    """
    height, width = image.shape[:2]
    short, long = (height, width) if height <= width else (width, height)
    new_long = max(1, int(size * long / short))
    new_h, new_w = (size, new_long) if height <= width else (new_long, size)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC), dtype=np.float32)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return resized[top:top + size, left:left + size] / 255.0


def double_softmax(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: float = 100.0,
                   second: bool = True) -> torch.Tensor:
    """(k, n) scores from (k, d) image and (m, n, d) template-by-query text embeddings (unit length).

    softmax_j( sum_m softmax_j(scale * cos(img_i, text_{m,j})) ); with ``second=False`` only the inner
    softmax summed over templates (the released referring config: one template, one softmax). In the
    released code's order: the image embedding is scaled first, each template is a separate product.
    """
    scaled = scale * image_emb
    per_template = torch.stack([(scaled @ text_emb[m].T).softmax(dim=-1) for m in range(text_emb.shape[0])])
    summed = per_template.sum(dim=0)
    return summed.softmax(dim=-1) if second else summed


class MaskClassifier:
    """Scores prompted images against query texts with CLIP (score matrix P, row = image)."""

    def __init__(
        self,
        clip: ClipModel,
        config: CaRConfig,
        text_encoder: TextEncoder,
        counter: PassCounter,
        batch_size: int = 16,
    ) -> None:
        self.clip = clip
        self.config = config
        self.text_encoder = text_encoder
        self.counter = counter
        self.batch_size = max(1, batch_size)
        self.visual = clip.model.visual
        blocks = list(self.visual.transformer.resblocks)
        index = int(config.classifier_cls_block)
        if not -len(blocks) <= index < len(blocks):
            raise ConfigError(
                f"classifier_cls_block {index} is outside the {len(blocks)} blocks of {clip.name}."
            )
        # Blocks up to and including the chosen one: -2 runs all but the last.
        self.blocks = blocks[: index % len(blocks) + 1]
        self.logit_scale = logit_scale_for(clip, config)
        size = self.visual.image_size
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        mean = getattr(self.visual, "image_mean", None) or OPENAI_DATASET_MEAN
        std = getattr(self.visual, "image_std", None) or OPENAI_DATASET_STD
        self._mean = torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        arrays = [clip_preprocess(as_rgb_uint8(im), self.input_size) for im in images]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return (pixels - self._mean) / self._std

    @torch.no_grad()
    def encode_images(self, images: list[np.ndarray]) -> torch.Tensor:
        """(k, d) unit-length fp32 embeddings: CLS after the chosen block, ln_post, projection."""
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.preprocess(images[start:start + self.batch_size]).to(self.clip.device)
            with self.clip.precision.context():  # bf16 autocast where it pays
                x, _ = embed_image(self.visual, pixels, pos_fp16=self.config.pos_embed_fp16)
                x = run_blocks(self.blocks, x)
            with full_precision(x.device.type):
                out.append(F.normalize(project(self.visual, x[:, 0].float()), dim=-1))
            self.counter.classifier_image_passes += pixels.shape[0]
        return torch.cat(out, dim=0)

    def text_embeddings(self, query_texts: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """(m, n, d) embeddings of template m filled with query n."""
        texts = [t.format(q) for t in templates for q in query_texts]
        emb = self.text_encoder.encode(self.clip, texts)
        return emb.reshape(len(templates), len(query_texts), -1)

    def score(
        self,
        prompted_images: list[np.ndarray],
        query_texts: list[str],
        templates: Sequence[str] | None = None,
    ) -> np.ndarray:
        """(len(prompted_images), len(query_texts)) float32 matrix P; P[i, i] is query i's score."""
        templates = tuple(self.config.templates if templates is None else templates)
        if not templates:
            raise ConfigError("At least one classifier template is needed.")
        if not prompted_images or not query_texts:
            return np.zeros((len(prompted_images), len(query_texts)), dtype=np.float32)
        image_emb = self.encode_images(list(prompted_images))
        text_emb = self.text_embeddings(list(query_texts), templates)
        with full_precision(image_emb.device.type):
            scores = double_softmax(image_emb, text_emb.to(image_emb.device), self.logit_scale,
                                    second=self.config.double_softmax)
        return scores.cpu().numpy().astype(np.float32)
