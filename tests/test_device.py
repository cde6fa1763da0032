"""Device and precision choice: auto falls back to the CPU, forced absent devices are clear errors,
bf16 on a CPU only where it is native and timed faster, the timing cached per machine."""

from __future__ import annotations

import pytest
import torch

from car_desktop.engine import device as dev
from car_desktop.engine.device import resolve_device, resolve_dtype, resolve_precision
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


def test_precision_choices_per_device(monkeypatch):
    cuda, cpu, mps = torch.device("cuda"), torch.device("cpu"), torch.device("mps")
    assert resolve_precision("auto", cuda).compute == torch.float16
    assert resolve_precision("bf16", cuda).weights == torch.bfloat16
    assert resolve_precision("fp32", cuda).compute == torch.float32
    forced = resolve_precision("bf16", cpu)
    assert forced.weights == torch.float32 and forced.compute == torch.bfloat16 and forced.autocast
    assert forced.name == "bf16"
    assert not resolve_precision("fp32", cpu).autocast
    assert resolve_precision("fp16", cpu).compute == torch.float32
    assert resolve_precision("bf16", mps).compute == torch.float32
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("int4", cpu)


@pytest.fixture
def fake_probe(monkeypatch, tmp_path):
    """A CPU with native bf16 whose timings the test chooses; the cache in a temporary folder."""
    calls = []
    timings = {False: 1.0, True: 0.4}

    def timed(autocast, repeats=3):
        calls.append(autocast)
        return timings[autocast]

    monkeypatch.setenv("CAR_DESKTOP_CACHE", str(tmp_path))
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(dev, "_time_matmuls", timed)
    monkeypatch.setattr(dev, "_probe_memo", {})
    return calls, timings, tmp_path


def test_auto_picks_bf16_when_timed_faster_and_remembers_it(fake_probe, monkeypatch):
    calls, _timings, folder = fake_probe
    got = resolve_precision("auto", torch.device("cpu"))
    assert got.compute == torch.bfloat16 and got.weights == torch.float32
    assert sorted(calls) == [False, True]
    assert (folder / "precision_probe.json").is_file()
    monkeypatch.setattr(dev, "_probe_memo", {})               # a new start of the app
    assert resolve_precision("auto", torch.device("cpu")).compute == torch.bfloat16
    assert len(calls) == 2                                     # read back, not timed again


def test_auto_keeps_fp32_when_bf16_is_not_faster(fake_probe):
    _calls, timings, _ = fake_probe
    timings[True] = 0.9                                        # only 1.1x: below the threshold
    assert resolve_precision("auto", torch.device("cpu")).compute == torch.float32
    assert resolve_precision("bf16", torch.device("cpu")).compute == torch.bfloat16   # forcing still works


def test_no_native_bf16_means_fp32_without_timing(fake_probe, monkeypatch):
    calls, _, _folder = fake_probe
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", torch.device("cpu")).compute == torch.float32
    assert calls == []


def test_corrupt_probe_cache_is_timed_again(fake_probe):
    calls, _, folder = fake_probe
    (folder / "precision_probe.json").write_text("{not json")
    assert resolve_precision("auto", torch.device("cpu")).compute == torch.bfloat16
    assert len(calls) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_pipeline_runs():
    import numpy as np

    from car_desktop.engine.config import preset
    from car_desktop.engine.pipeline import CaRPipeline

    img = np.zeros((96, 128, 3), np.uint8)
    img[:, 64:] = (240, 220, 40)
    pipe = CaRPipeline(preset("objects", sam_mode="off", device="cuda"), test_models=True)
    result = pipe.run(img, "cat, dog")
    assert pipe.device.startswith("cuda") and len(result.concepts) == 2
