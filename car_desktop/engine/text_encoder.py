"""CLIP text embeddings with a cache keyed by (model, text), shared by the proposal and classifier stages.

The recurrent loop asks for the same prompts step after step and image after image (15 classifier
templates x the concepts, plus the background words); each distinct text is encoded once per model,
in one batch, cut to the longest prompt (see clip_tower.encode_text_truncated). Cache misses are
counted in ``PassCounter.text_encodes``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import torch
import torch.nn.functional as F

from .clip_models import ClipModel
from .clip_tower import encode_text_truncated
from .results import PassCounter

log = logging.getLogger(__name__)


class TextEncoder:
    """L2-normalised CLIP text embeddings, cached (LRU) by ``(clip.key, text)``."""

    def __init__(self, counter: PassCounter, max_entries: int = 20000, batch_size: int = 256) -> None:
        self.counter = counter
        self.max_entries = max_entries
        self.batch_size = batch_size
        self._cache: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    @torch.no_grad()
    def encode(self, clip: ClipModel, texts: list[str]) -> torch.Tensor:
        """(len(texts), d) float32 embeddings on ``clip.device``, each of unit length."""
        texts = list(texts)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if (clip.key, t) not in self._cache))
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start:start + self.batch_size]
                tokens = clip.tokenizer(chunk).to(clip.device)
                feats = F.normalize(encode_text_truncated(clip.model, tokens).float(), dim=-1)
                for text, f in zip(chunk, feats):
                    self._cache[(clip.key, text)] = f
                self.counter.text_encodes += len(chunk)
            if missing:
                log.debug("Encoded %d new texts with %s.", len(missing), clip.name)
            rows = []
            for t in texts:
                self._cache.move_to_end((clip.key, t))
                rows.append(self._cache[(clip.key, t)])
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        if not rows:
            dim = int(clip.model.text_projection.shape[-1]) if isinstance(clip.model.text_projection, torch.Tensor) \
                else clip.model.visual.output_dim
            return torch.zeros((0, dim), dtype=torch.float32, device=clip.device)
        return torch.stack(rows, dim=0)
