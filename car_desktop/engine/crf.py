"""Dense CRF post-processing of CaR: snapping the surviving concepts' soft maps to image edges.

A fully connected CRF (Kraehenbuehl and Koltun 2011, through pydensecrf2's ``pydensecrf.densecrf``)
labels every pixel as background or one of the k surviving queries, as docs/engine.md ("CRF")
describes: background probability 1 - max_c cam_c, the cams themselves as the other labels (not
renormalised), unary -log(clip(p, floor)), a Gaussian smoothness term and a bilateral appearance term.
The bilateral term sees the true RGB image by default; ``colour="released"`` gives it what the released
code gives it: the image converted to BGR, minus the mean (104.008, 116.669, 122.675), cast to uint8 so
negative values wrap around (``crf_colour_image``). Everything-background is a normal outcome that
yields empty masks, never an error.

pydensecrf's inference holds Python's global interpreter lock for its whole run (about a second at
1024 px), which would freeze the GUI thread; ``dense_crf_isolated`` therefore runs it in one long-lived
helper process, started from this package's own entry point (``python -m
car_desktop.engine.crf_worker``) so that it never imports the caller's ``__main__``: a user's script
without a main guard is not run again. A frozen app (no ``-m``) starts it with multiprocessing's spawn
instead, which its guarded entry point and ``freeze_support`` make safe. A cancel kills the helper and
returns at once; a helper that cannot start or dies makes the CRF run in this process with a warning.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydensecrf.densecrf as dcrf

from ..arrays import check_rgb_image
from . import crf_worker
from .cancel import CancelToken, check
from .config import CRF_COLOURS, CRFParams

log = logging.getLogger(__name__)

#: The released code's BGR channel means, subtracted before its uint8 cast.
RELEASED_MEAN_BGR: tuple[float, float, float] = (104.008, 116.669, 122.675)


def crf_colour_image(image: np.ndarray, colour: str = "rgb") -> np.ndarray:
    """The C-contiguous, writable uint8 (H, W, 3) image the bilateral term compares colours on.

    "rgb": the image itself (copied only when read-only or not contiguous: pydensecrf needs a writable
    buffer). "released": BGR minus ``RELEASED_MEAN_BGR`` in float32, truncated toward zero and wrapped
    modulo 256 -- what the released code's ``astype(np.uint8)`` does on x86, written out so it does not
    depend on the platform's undefined float-to-unsigned cast.
    """
    img = check_rgb_image(image)
    if colour == "rgb":
        if img.flags.c_contiguous and img.flags.writeable:
            return img
        return np.array(img, dtype=np.uint8, order="C", copy=True)
    if colour != "released":
        raise ValueError(f"Unknown CRF colour image {colour!r}; choose from {', '.join(CRF_COLOURS)}.")
    bgr = img[:, :, ::-1].astype(np.float32)
    bgr -= np.asarray(RELEASED_MEAN_BGR, dtype=np.float32)
    return np.ascontiguousarray(np.mod(np.trunc(bgr).astype(np.int16), 256).astype(np.uint8))


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams, colour: str = "rgb") -> np.ndarray:
    """Label map (H, W) int32 from a dense CRF: 0 = background, i = the query of ``probs[i - 1]``.

    ``image`` is the uint8 (H, W, 3) RGB image (read-only arrays are fine); ``probs`` the (k, H, W)
    soft maps in [0, 1] of the k surviving queries (values outside are clipped, NaN counts as 0);
    ``colour`` the bilateral term's image (see ``crf_colour_image``). With k = 0 every pixel is
    background. Runs on the CPU: about 0.2 s for 500x500 and a few labels.
    """
    img = check_rgb_image(image)
    p = _check_probs(probs, img.shape[:2])
    h, w = img.shape[:2]
    k = p.shape[0]
    if k == 0:
        return np.zeros((h, w), np.int32)

    t0 = time.perf_counter()
    crf = dcrf.DenseCRF2D(w, h, k + 1)
    crf.setUnaryEnergy(_unary(p, params.unary_floor))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy,
        srgb=params.bilateral_srgb,
        rgbim=crf_colour_image(img, colour),
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


def _check_probs(probs: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 3 or p.shape[1:] != hw:
        raise ValueError(f"probs must have shape (k, {hw[0]}, {hw[1]}) (got {p.shape}).")
    if not np.all(np.isfinite(p)):
        p = np.nan_to_num(p, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(p, 0.0, 1.0)


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


class _Helper:
    """One helper process and the thread that reads its replies into a queue."""

    def __init__(self) -> None:
        self.replies: queue.Queue = queue.Queue()
        self._proc: Any = None
        self._conn: Any = None
        if getattr(sys, "frozen", False):
            self._start_spawned()
        else:
            self._start_subprocess()
        threading.Thread(target=self._read_loop, name="crf-helper-reader", daemon=True).start()

    def _start_subprocess(self) -> None:
        env = dict(os.environ)
        # The helper must import this very package, wherever the caller found it.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH", "")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "car_desktop.engine.crf_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )

    def _start_spawned(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_connection, args=(child,), daemon=True, name="car-crf-helper")
        self._proc.start()
        child.close()
        self._conn = parent

    @property
    def pid(self) -> int | None:
        return getattr(self._proc, "pid", None)

    def alive(self) -> bool:
        if self._conn is not None:
            return bool(self._proc.is_alive())
        return self._proc.poll() is None

    def send(self, request: Any) -> None:
        if self._conn is not None:
            self._conn.send(request)
        else:
            crf_worker.write_frame(self._proc.stdin, request)

    def _read_loop(self) -> None:
        try:
            while True:
                reply = self._conn.recv() if self._conn is not None else crf_worker.read_frame(self._proc.stdout)
                self.replies.put(reply)
        except (EOFError, OSError, ValueError) as exc:
            self.replies.put(("dead", str(exc) or type(exc).__name__))

    def stop(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
                self._proc.terminate()
            else:
                self._proc.kill()
                self._proc.wait(timeout=5)
                for stream in (self._proc.stdin, self._proc.stdout):
                    stream.close()
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass


def _serve_connection(conn: Any) -> None:
    """Body of the spawned helper (frozen apps): the worker's loop over a multiprocessing pipe."""
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        conn.send(crf_worker.handle(request))


class HelperUnavailable(RuntimeError):
    """The helper process could not be started, or it died."""


_helper: _Helper | None = None
#: The same object as ``_helper`` under the name the self-test checks: non-None once a helper runs.
_pool: _Helper | None = None
_helper_lock = threading.Lock()     # guards _helper
_request_lock = threading.Lock()    # one request in flight: replies come back in order
#: Counts for tests and the self-test: CRFs answered by the helper, and in-process fallbacks.
helper_stats = {"requests": 0, "fallbacks": 0, "starts": 0}


def _set_helper(helper: _Helper | None) -> None:
    global _helper, _pool
    _helper = _pool = helper


def shutdown_pool() -> None:
    """Stop the helper process (at exit, or to start afresh)."""
    with _helper_lock:
        if _helper is not None:
            _helper.stop()
        _set_helper(None)


atexit.register(shutdown_pool)


def _get_helper() -> _Helper:
    with _helper_lock:
        if _helper is None or not _helper.alive():
            if _helper is not None:
                _helper.stop()
            try:
                _set_helper(_Helper())
            except (OSError, ValueError) as exc:
                _set_helper(None)
                raise HelperUnavailable(str(exc)) from exc
            helper_stats["starts"] += 1
        assert _helper is not None
        return _helper


def start_helper() -> None:
    """Start the helper process now (it takes a fraction of a second) so the first CRF does not wait."""
    try:
        _get_helper()
    except HelperUnavailable as exc:
        log.warning("Could not start the CRF helper process: %s", exc)


def _ask_helper(request: Any, cancel: CancelToken | None) -> Any:
    """Send one request and wait for its reply, polling ``cancel``; a cancel kills the helper."""
    with _request_lock:
        helper = _get_helper()
        try:
            helper.send(request)
        except (OSError, ValueError) as exc:
            raise HelperUnavailable(f"cannot write to it ({exc})") from exc
        while True:
            try:
                status, payload = helper.replies.get(timeout=0.05)
                break
            except queue.Empty:
                try:
                    check(cancel)
                except BaseException:
                    shutdown_pool()  # the reply would arrive out of order; a new helper starts next time
                    raise
        if status == "ok":
            return payload
        if status == "dead":
            shutdown_pool()
        raise HelperUnavailable(payload)


def dense_crf_isolated(image: np.ndarray, probs: np.ndarray, params: CRFParams,
                       cancel: CancelToken | None = None, colour: str = "rgb") -> np.ndarray:
    """``dense_crf`` in the helper process, polling ``cancel`` while it runs.

    Falls back to running in this process when the helper cannot be started, dies or fails.
    """
    if probs.shape[0] == 0:
        return dense_crf(image, probs, params, colour)
    try:
        labels = _ask_helper(("crf", np.ascontiguousarray(image), np.asarray(probs, np.float32), params, colour),
                             cancel)
        helper_stats["requests"] += 1
        return labels
    except HelperUnavailable as exc:
        log.warning("CRF helper process unavailable (%s); running the CRF in this process.", exc)
        helper_stats["fallbacks"] += 1
        return dense_crf(image, probs, params, colour)
