"""Choosing the torch device and precision: auto (CUDA, then Apple MPS, then CPU) or forced.

Half precision is used only on CUDA: CPU half-precision kernels are slow or missing.
"""

from __future__ import annotations

import logging

import torch

from .config import DEVICE_CHOICES, PRECISION_CHOICES
from .errors import ConfigError

log = logging.getLogger(__name__)


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


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """fp16 on CUDA when 'auto'; fp32 everywhere else. Forcing fp16 off CUDA falls back with a warning."""
    precision = (precision or "auto").lower()
    if precision not in PRECISION_CHOICES:
        raise ConfigError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}.")
    if device.type == "cuda" and precision in ("auto", "fp16"):
        return torch.float16
    if precision == "fp16":
        log.warning("Half precision is only used on CUDA; running in fp32 on %s.", device)
    return torch.float32
