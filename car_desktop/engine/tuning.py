"""The engine side of threshold calibration: CaR's stages on one image, each call one real model pass,
for the sweep in car_desktop/evaluation/tuning.py to cache and replay.

``PipelineStages`` prepares the image once (the proposal tower pass and the CLIP-ES affinity, through
the pipeline's own ProposalGenerator and its per-image cache), then answers ``propose`` (one batched
last-block pass for a set of surviving concepts), ``classify`` (the visual prompts at a given eta and
prompt set, scored by the classifier; text embeddings come from the pipeline's cache) and ``masks``
(CRF, then SAM when the config asks for it, at full resolution). It mirrors what ``CaRPipeline.run``
does inside its loop, with the swept values passed in instead of read from the config; it uses the
pipeline's stage objects and its mask helpers, so models are loaded once for the whole sweep.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .cancel import CancelToken
from .car_loop import proposal_texts
from .concepts import Concept
from .config import CaRConfig
from .image_io import as_rgb_uint8
from .pipeline import CaRPipeline, effective_background, resize_long_side, resize_mask


class PipelineStages:
    """One image's CaR stages on ``pipeline``'s models (see the module docstring)."""

    def __init__(self, pipeline: CaRPipeline, config: CaRConfig, image: np.ndarray, concepts: Sequence[Concept],
                 cancel: CancelToken | None = None) -> None:
        self.pipeline = pipeline
        self.config = config
        self.concepts = list(concepts)
        self.cancel = cancel
        self.full = as_rgb_uint8(image)
        self.work = resize_long_side(self.full, config.work_long_side)
        self.generator, self.classifier = pipeline.stages(config)
        words = effective_background(config, self.concepts, [])
        self.background = [config.proposal_template.format(b) for b in words]
        self.features = self.generator.prepare(self.work)

    def propose(self, surviving: tuple[int, ...], first_step: bool) -> np.ndarray:
        texts = proposal_texts([self.concepts[i].text for i in surviving], 1 if first_step else 2,
                               self.config.proposal_template)
        return self.generator.propose(self.features, texts, self.background, referring=self.config.referring,
                                      lam=self.config.lam)

    def classify(self, surviving: tuple[int, ...], maps: np.ndarray, eta: float,
                 prompts: tuple[str, ...] | None) -> np.ndarray:
        from .visual_prompts import apply_visual_prompts

        cfg = self.config if prompts is None else self.config.replace(prompts=prompts)
        images = [apply_visual_prompts(self.work, maps[r] > eta, cfg.prompts_for(self.concepts[i].name),
                                       soft_map=maps[r], blur_kernel=cfg.blur_kernel,
                                       correct_gray=cfg.gray_correct_luminance)
                  for r, i in enumerate(surviving)]
        scores = self.classifier.score(images, [self.concepts[i].text for i in surviving], cfg.templates)
        return np.diag(scores)

    def masks(self, survivors: tuple[int, ...], maps: np.ndarray) -> list[np.ndarray]:
        work_masks = self.pipeline._masks_from_maps(self.work, maps, self.config, self.cancel)
        masks = {i: resize_mask(m, self.full.shape[:2]) for i, m in zip(survivors, work_masks)}
        if self.config.sam_mode != "off" and masks:
            masks, _ = self.pipeline._refine_with_sam(self.full, masks, self.config, self.cancel)
        return [masks[i] for i in survivors]
