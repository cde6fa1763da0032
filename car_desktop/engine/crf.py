"""Dense CRF post-processing of CaR: snapping the surviving concepts' soft maps to image edges.

A fully connected CRF (Kraehenbuehl and Koltun 2011, through pydensecrf2's ``pydensecrf.densecrf``)
labels every pixel as background or one of the k surviving queries, as ../shared/car-algorithm.md
("Post-processing") describes: background probability 1 - max_c cam_c, the cams themselves as the
other labels (not renormalised), unary -log(clip(p, floor)), a Gaussian smoothness term and a
bilateral appearance term. One deliberate difference from the authors' released code: the bilateral
term sees the true RGB image, whereas the released code passes a mean-subtracted image cast to uint8
(its values wrap around), which garbles colour distances. Everything-background is a normal outcome
that yields empty masks, never an error.

pydensecrf's inference holds Python's global interpreter lock for its whole run (about a second at
1024 px), which would freeze the GUI thread; ``dense_crf_isolated`` therefore runs it in one long-lived
helper process, which also lets a cancel return at once instead of waiting for the CRF to finish.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pydensecrf.densecrf as dcrf

from .cancel import CancelToken, check
from .config import CRFParams

log = logging.getLogger(__name__)


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """Label map (H, W) int32 from a dense CRF: 0 = background, i = the query of ``probs[i - 1]``.

    ``image`` is the uint8 (H, W, 3) RGB image; ``probs`` the (k, H, W) soft maps in [0, 1] of the k
    surviving queries (values outside are clipped, NaN counts as 0). With k = 0 every pixel is
    background. Runs on the CPU: about 0.2 s for 500x500 and a few labels.
    """
    img = _check_image(image)
    p = _check_probs(probs, img.shape[:2])
    h, w = img.shape[:2]
    k = p.shape[0]
    if k == 0:
        return np.zeros((h, w), np.int32)

    t0 = time.perf_counter()
    crf = dcrf.DenseCRF2D(w, h, k + 1)
    crf.setUnaryEnergy(_unary(p, params.unary_floor))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    # The true RGB image, C-contiguous uint8, which is what pydensecrf's colour kernel expects.
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy,
        srgb=params.bilateral_srgb,
        rgbim=np.ascontiguousarray(img),
        compat=params.bilateral_compat,
    )
    q = np.asarray(crf.inference(int(params.iterations)), dtype=np.float32).reshape(k + 1, h, w)
    labels = np.argmax(q, axis=0).astype(np.int32)
    log.debug("Dense CRF %dx%d, %d labels, %d iterations: %.3f s",
              w, h, k + 1, params.iterations, time.perf_counter() - t0)
    return labels


def masks_from_labels(labels: np.ndarray, k: int) -> np.ndarray:
    """(k, H, W) bool masks from a label map: mask i - 1 is where the label equals i.

    Labels missing from the map (a query the CRF gave no pixel) give empty masks.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be a 2-D label map (got shape {lab.shape}).")
    if k < 0:
        raise ValueError(f"k must be >= 0 (got {k}).")
    return lab[None, :, :] == np.arange(1, k + 1, dtype=np.int64)[:, None, None]


def _unary(probs: np.ndarray, floor: float) -> np.ndarray:
    """(k + 1, H * W) float32 unary energies: -log of [1 - max_c p_c ; p_1 .. p_k], floored."""
    k, h, w = probs.shape
    full = np.empty((k + 1, h, w), np.float32)
    full[0] = 1.0 - probs.max(axis=0)
    full[1:] = probs
    # Not renormalised: the background is only as likely as the strongest query is unlikely.
    np.clip(full, floor, 1.0, out=full)
    return np.ascontiguousarray(-np.log(full).reshape(k + 1, h * w), dtype=np.float32)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be a uint8 (H, W, 3) RGB array (got {desc}).")
    return image


def _check_probs(probs: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 3 or p.shape[1:] != hw:
        raise ValueError(f"probs must have shape (k, {hw[0]}, {hw[1]}) (got {p.shape}).")
    if not np.all(np.isfinite(p)):
        p = np.nan_to_num(p, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(p, 0.0, 1.0)


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _shutdown_pool() -> None:
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


def _get_pool() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # spawn: a fork of a process with torch and Qt threads running is not safe.
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            atexit.register(_shutdown_pool)
        return _pool


def _ready() -> bool:
    return True


def start_helper() -> None:
    """Start the helper process now (it takes a second or more) so the first CRF does not wait for it."""
    try:
        _get_pool().submit(_ready)
    except (BrokenProcessPool, OSError, RuntimeError) as exc:
        log.warning("Could not start the CRF helper process: %s", exc)


def dense_crf_isolated(image: np.ndarray, probs: np.ndarray, params: CRFParams,
                       cancel: CancelToken | None = None) -> np.ndarray:
    """``dense_crf`` in the helper process, polling ``cancel`` while it runs.

    Falls back to running in this process when the helper cannot be started or dies.
    """
    global _pool
    if probs.shape[0] == 0:
        return dense_crf(image, probs, params)
    try:
        future = _get_pool().submit(dense_crf, np.ascontiguousarray(image), np.asarray(probs, np.float32), params)
        while True:
            try:
                return future.result(timeout=0.05)
            except TimeoutError:
                check(cancel)  # the helper finishes its current CRF and the result is dropped
    except (BrokenProcessPool, OSError) as exc:
        log.warning("CRF helper process unavailable (%s); running the CRF in this process.", exc)
        with _pool_lock:
            _pool = None
        return dense_crf(image, probs, params)
