"""Device and precision choice: auto falls back to the CPU, forced absent devices are clear errors."""

from __future__ import annotations

import pytest
import torch

from car_desktop.engine.device import resolve_device, resolve_dtype
from car_desktop.engine.errors import ConfigError


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_forced_but_absent_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="MPS"):
        resolve_device("mps")
    with pytest.raises(ConfigError, match="Unknown device"):
        resolve_device("tpu")


def test_half_precision_only_on_cuda():
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("fp32", torch.device("cuda")) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("fp16", torch.device("cpu")) == torch.float32  # falls back with a warning
    with pytest.raises(ConfigError):
        resolve_dtype("int8", torch.device("cpu"))
