"""Choosing the torch device and the numeric precision the models run in.

Device: auto (CUDA, then Apple MPS, then CPU) or forced. Precision: ``auto`` picks fp16 on CUDA; on a
CPU it picks bfloat16 when the CPU has bfloat16 arithmetic (AVX512-BF16, AMX, Arm BF16) AND a short
timing at first use shows it faster than fp32, else fp32. The timing's verdict is cached per machine in
the user cache folder, so later starts do not time again. ``fp32``, ``bf16`` and ``fp16`` force a
choice (fp16 exists only on CUDA; elsewhere it falls back to fp32 with a warning).

A ``Precision`` names two dtypes: the weights' and the one the heavy matrix products run in. On a CPU
the weights stay fp32 and bf16 runs through ``torch.autocast``, so the stages that must stay fp32
(Grad-CAM, the CLIP-ES refinement, every softmax and the comparison with theta) simply step outside it.
docs/engine.md ("Precision") has the measured speed and agreement.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import DEVICE_CHOICES, PRECISION_CHOICES
from .errors import ConfigError

log = logging.getLogger(__name__)

#: bf16 must beat fp32 by this factor in the probe to be chosen automatically.
BF16_MIN_SPEEDUP = 1.3
_PROBE_FILE = "precision_probe.json"


def resolve_device(choice: str = "auto") -> torch.device:
    """Map a user choice to an available torch device; a forced but absent device is an error."""
    choice = (choice or "auto").lower()
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("CUDA was requested but no CUDA GPU is available; choose 'auto' or 'cpu'.")
        return torch.device(choice)
    if choice == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("Apple MPS was requested but is not available; choose 'auto' or 'cpu'.")
        return torch.device("mps")
    if choice == "cpu":
        return torch.device("cpu")
    if choice != "auto":
        raise ConfigError(f"Unknown device {choice!r}; choose one of {', '.join(DEVICE_CHOICES)}.")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass(frozen=True)
class Precision:
    """How a model runs: ``weights`` is its parameters' dtype, ``compute`` the dtype of its heavy passes."""

    weights: torch.dtype
    compute: torch.dtype
    device_type: str = "cpu"

    @property
    def name(self) -> str:
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.compute]

    @property
    def autocast(self) -> bool:
        """True when the heavy passes run under torch.autocast (fp32 weights, lower compute dtype)."""
        return self.compute != self.weights

    def context(self) -> contextlib.AbstractContextManager:
        """The context to run a heavy pass in: autocast to ``compute``, or nothing."""
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.compute)


FP32 = Precision(torch.float32, torch.float32)


@contextlib.contextmanager
def full_precision(device_type: str = "cpu") -> Iterator[None]:
    """Leave any enclosing autocast: what runs inside stays in the tensors' own dtype (fp32 stages)."""
    with torch.autocast(device_type, enabled=False):
        yield


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 arithmetic that torch's oneDNN kernels use."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private API: absent on some builds
        return False


def _machine_signature() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}|{platform.machine()}|{os.cpu_count()}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def _probe_path() -> Path:
    from ..paths import cache_dir

    return cache_dir() / _PROBE_FILE


def _time_matmuls(autocast: bool, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of a small transformer-shaped workload (linear layers on 257 tokens)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(257, 1024, generator=g)
    w1 = torch.randn(4096, 1024, generator=g) * 0.02
    w2 = torch.randn(1024, 4096, generator=g) * 0.02
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    best = float("inf")
    with torch.no_grad(), ctx:
        for i in range(repeats + 1):
            start = time.perf_counter()
            for _ in range(4):
                torch.nn.functional.linear(torch.nn.functional.linear(x, w1), w2)
            if i:  # the first round warms the kernels up
                best = min(best, time.perf_counter() - start)
    return best


_probe_lock = threading.Lock()
_probe_memo: dict[str, dict] = {}


def bf16_probe(use_cache: bool = True) -> dict:
    """{'bf16_supported', 'fp32_s', 'bf16_s', 'speedup', 'faster'} for this machine, timed once and cached.

    Without native bf16 nothing is timed (emulated bf16 is always slower). The verdict is kept in
    memory and in the user cache folder under this machine's signature (CPU model, cores, torch).
    """
    sig = _machine_signature()
    with _probe_lock:
        if sig in _probe_memo:
            return _probe_memo[sig]
        path = _probe_path()
        if use_cache:
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(stored, dict) and isinstance(stored.get(sig), dict):
                    result = stored[sig]
                    if isinstance(result.get("faster"), bool):
                        _probe_memo[sig] = result
                        return result
            except (OSError, ValueError):
                pass
        result = {"bf16_supported": cpu_has_bf16()}
        if result["bf16_supported"]:
            fp32 = _time_matmuls(False)
            bf16 = _time_matmuls(True)
            result.update(fp32_s=round(fp32, 5), bf16_s=round(bf16, 5), speedup=round(fp32 / bf16, 3))
            result["faster"] = fp32 / bf16 >= BF16_MIN_SPEEDUP
        else:
            result["faster"] = False
        log.info("bfloat16 probe on this CPU: %s", result)
        _probe_memo[sig] = result
        if use_cache:
            _store_probe(path, sig, result)
        return result


def _store_probe(path: Path, sig: str, result: dict) -> None:
    try:
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            stored = stored if isinstance(stored, dict) else {}
        except (OSError, ValueError):
            stored = {}
        stored[sig] = result
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stored, indent=1), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:  # an unwritable cache only costs a new probe next start
        log.debug("Could not store the bf16 probe in %s: %s", path, exc)


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """The precision a model on ``device`` runs in for the user's choice (see the module docstring)."""
    choice = (precision or "auto").lower()
    if choice not in PRECISION_CHOICES:
        raise ConfigError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}.")
    dev = device.type
    if dev == "cuda":
        if choice in ("auto", "fp16"):
            return Precision(torch.float16, torch.float16, dev)
        if choice == "bf16":
            return Precision(torch.bfloat16, torch.bfloat16, dev)
        return Precision(torch.float32, torch.float32, dev)
    if choice == "fp16":
        log.warning("Half precision (fp16) is only used on CUDA; running in fp32 on %s.", device)
    if dev == "cpu":
        if choice == "bf16":
            if not cpu_has_bf16():
                log.warning("This CPU has no native bfloat16 arithmetic: bf16 will be slower than fp32.")
            return Precision(torch.float32, torch.bfloat16, dev)
        if choice == "auto" and bf16_probe()["faster"]:
            return Precision(torch.float32, torch.bfloat16, dev)
    elif choice == "bf16":
        log.warning("bfloat16 is used on CPUs and CUDA only; running in fp32 on %s.", device)
    return Precision(torch.float32, torch.float32, dev)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The weights' dtype for a precision choice (see ``resolve_precision``)."""
    return resolve_precision(precision, device).weights
