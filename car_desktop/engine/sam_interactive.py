"""Interactive SAM: one image embedding per image, then cheap prompt decodes (points, box, previous mask).

``SamSession`` wraps segment_anything's ``SamPredictor``. The expensive part, the image encoder, runs
once per image; the embedding is cached under (image content hash, SAM model key) in a small LRU, so
prefetching the next image does not evict the current one and returning to a recent image costs
nothing. Every click and every prompted refinement of CaR's masks then costs only the prompt decoder
(tens of milliseconds against seconds for an embedding).

Thread safety: the GUI's worker thread(s) may call ``set_image``, ``prefetch`` and ``predict``
concurrently. Encodes are serialised by one lock and run outside the decode lock, so a prefetch of the
next image never blocks clicks on the current one.

Empty masks and calls without prompts are normal outcomes (an empty mask), never errors.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .image_io import as_rgb_uint8, content_hash
from .results import PassCounter
from .sam_models import SamHandle

log = logging.getLogger(__name__)

#: Side of SAM's low-resolution mask logits (the decoder's output and its ``mask_input``).
LOW_RES_SIDE = 256

Point = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass
class SamPrediction:
    """One SAM mask at the image's full resolution.

    ``iou`` is SAM's own predicted IoU (its confidence), ``low_res_logits`` the (1, 256, 256) float32
    logits to pass back as ``mask_input`` on the next click.
    """

    mask: np.ndarray
    iou: float
    low_res_logits: np.ndarray

    @property
    def empty(self) -> bool:
        return not bool(self.mask.any())


@dataclass(frozen=True)
class _Embedding:
    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class SamSession:
    """Cached-embedding SAM predictor for one model; see the module docstring.

    ``cache_size`` is the number of image embeddings kept (at least 1; the current image is never
    evicted). ``counter.sam_image_encodes`` counts real encoder runs, ``counter.sam_decodes`` decoder
    runs.
    """

    def __init__(self, handle: SamHandle, counter: PassCounter | None = None, cache_size: int = 3) -> None:
        self.handle = handle
        self.counter = counter
        self.cache_size = max(1, int(cache_size))
        self._cache: OrderedDict[str, _Embedding] = OrderedDict()
        self._current_key: str | None = None
        self._current: _Embedding | None = None
        self._lock = threading.RLock()          # cache, current image, decoder predictor, counter
        self._encode_lock = threading.Lock()    # one encoder run at a time
        self._encoder = handle.new_predictor()  # used only under _encode_lock
        self._decoder = handle.new_predictor()  # used only under _lock

    # ----------------------------------------------------------------- embeddings
    def cache_key(self, image: np.ndarray) -> str:
        """The embedding cache key of ``image`` for this session's model."""
        return f"{content_hash(as_rgb_uint8(image))}@{self.handle.key}"

    @property
    def cached_keys(self) -> list[str]:
        """Cache keys, least recently used first."""
        with self._lock:
            return list(self._cache)

    @property
    def current_key(self) -> str | None:
        with self._lock:
            return self._current_key

    def set_image(self, image: np.ndarray) -> str:
        """Make ``image`` the one ``predict`` answers for; encode it only if its embedding is not cached."""
        rgb = as_rgb_uint8(image)
        key = self.cache_key(rgb)
        emb = self._get_or_encode(rgb, key)
        with self._lock:
            self._current_key, self._current = key, emb
            self._touch(key, emb)
        return key

    def prefetch(self, image: np.ndarray) -> str:
        """Encode ``image`` into the cache (e.g. the next image in the list) without making it current."""
        rgb = as_rgb_uint8(image)
        key = self.cache_key(rgb)
        self._get_or_encode(rgb, key)
        return key

    def clear(self) -> None:
        """Drop every cached embedding and the current image."""
        with self._lock:
            self._cache.clear()
            self._current_key = self._current = None
            self._decoder.reset_image()

    def _get_or_encode(self, rgb: np.ndarray, key: str) -> _Embedding:
        with self._lock:
            emb = self._cache.get(key)
            if emb is not None:
                self._cache.move_to_end(key)
                return emb
        with self._encode_lock:
            with self._lock:  # encoded by another thread while this one waited?
                emb = self._cache.get(key)
                if emb is not None:
                    self._cache.move_to_end(key)
                    return emb
            log.debug("SAM %s: encoding a %dx%d image", self.handle.model_type, rgb.shape[1], rgb.shape[0])
            self.handle.encode(self._encoder.set_image, self._encoder, rgb, image_format="RGB")
            emb = _Embedding(
                features=self._encoder.features,
                original_size=tuple(self._encoder.original_size),
                input_size=tuple(self._encoder.input_size),
            )
            self._encoder.reset_image()
            with self._lock:
                if self.counter is not None:
                    self.counter.sam_image_encodes += 1
                self._touch(key, emb)
            return emb

    def _touch(self, key: str, emb: _Embedding) -> None:
        """Insert or refresh ``key`` as most recently used; evict the oldest non-current entries."""
        self._cache[key] = emb
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            victim = next((k for k in self._cache if k != self._current_key), None)
            if victim is None:
                break
            del self._cache[victim]

    # ----------------------------------------------------------------- decoding
    def predict(
        self,
        points: Sequence[Point] = (),
        labels: Sequence[int] = (),
        box: Box | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
    ) -> SamPrediction:
        """The best SAM mask (highest predicted IoU) for the prompts on the current image.

        ``points`` are (x, y) pixels of the original image, ``labels`` 1 (object) / 0 (background),
        ``box`` (x0, y0, x1, y1) pixels, ``mask_input`` the previous prediction's ``low_res_logits``.
        Without any prompt the answer is an empty mask (no decoder run).
        """
        candidates = self.predict_candidates(points, labels, box, mask_input, multimask)
        return max(candidates, key=lambda c: c.iou)

    def predict_candidates(
        self,
        points: Sequence[Point] = (),
        labels: Sequence[int] = (),
        box: Box | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
    ) -> list[SamPrediction]:
        """Every candidate of one decoder run (3 with ``multimask``, else 1), in SAM's order."""
        coords, lab, box_arr, mask_arr = _prompt_arrays(points, labels, box, mask_input)
        with self._lock:
            if self._current is None:
                raise RuntimeError("SamSession.predict was called before set_image.")
            h, w = self._current.original_size
            if coords is None and box_arr is None and mask_arr is None:
                return [_empty_prediction(h, w)]
            self._install(self._current)
            masks, ious, logits = self._decoder.predict(
                point_coords=coords, point_labels=lab, box=box_arr, mask_input=mask_arr,
                multimask_output=bool(multimask),
            )
            if self.counter is not None:
                self.counter.sam_decodes += 1
        return [
            SamPrediction(mask=np.asarray(masks[i], bool), iou=float(ious[i]),
                          low_res_logits=np.asarray(logits[i : i + 1], np.float32))
            for i in range(len(ious))
        ]

    def _install(self, emb: _Embedding) -> None:
        """Point the decoder predictor at ``emb`` (the attributes ``SamPredictor.set_image`` sets)."""
        p = self._decoder
        p.features = emb.features
        p.original_size = emb.original_size
        p.input_size = emb.input_size
        p.is_image_set = True


def _empty_prediction(h: int, w: int) -> SamPrediction:
    return SamPrediction(
        mask=np.zeros((h, w), bool), iou=0.0,
        low_res_logits=np.zeros((1, LOW_RES_SIDE, LOW_RES_SIDE), np.float32),
    )


def _prompt_arrays(points, labels, box, mask_input):
    """Validate prompts and turn them into the arrays ``SamPredictor.predict`` takes (None if absent)."""
    points = list(points or ())
    labels = list(labels or ())
    if len(points) != len(labels):
        raise ValueError(f"{len(points)} points but {len(labels)} labels.")
    coords = lab = None
    if points:
        coords = np.asarray(points, np.float32).reshape(-1, 2)
        lab = np.asarray(labels, np.int64).reshape(-1)
        if not np.all(np.isfinite(coords)):
            raise ValueError("Point coordinates must be finite numbers.")
        if not np.all((lab == 0) | (lab == 1)):
            raise ValueError("Point labels must be 1 (object) or 0 (background).")
        lab = lab.astype(np.int32)
    box_arr = None
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        box_arr = np.array([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], np.float32)
        if not np.all(np.isfinite(box_arr)):
            raise ValueError("Box coordinates must be finite numbers.")
    mask_arr = None
    if mask_input is not None:
        mask_arr = np.asarray(mask_input, np.float32)
        if mask_arr.shape == (LOW_RES_SIDE, LOW_RES_SIDE):
            mask_arr = mask_arr[None]
        if mask_arr.shape != (1, LOW_RES_SIDE, LOW_RES_SIDE):
            raise ValueError(
                f"mask_input must be SAM low-res logits of shape (1, 256, 256), got {mask_arr.shape}."
            )
    return coords, lab, box_arr, mask_arr
