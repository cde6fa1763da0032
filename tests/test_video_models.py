"""SAM 2 weights like every other model (manifest, hash, offline message, kind check) and the tiny test SAM 2."""

from __future__ import annotations

import socket

import pytest
import torch

from car_desktop.engine.errors import WeightsCorruptError, WeightsMissingError
from car_desktop.engine.manifest import load_manifest
from car_desktop.engine.model_manager import ModelManager, resolve_sam2_checkpoint
from car_desktop.engine.sam2_models import build_sam2, build_test_sam2, load_sam2

SAM2 = ("tiny", "small", "base_plus", "large")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAR_DESKTOP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CAR_DESKTOP_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("CAR_DESKTOP_NO_DOWNLOAD", "1")
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return tmp_path / "cache", attempts


def test_the_manifest_lists_the_sam2_checkpoints_with_size_and_hash():
    specs = load_manifest()
    for name in SAM2:
        s = specs[f"sam2.1_hiera_{name}"]
        assert s.kind == "sam2" and s.optional and s.filename == f"sam2.1_hiera_{name}.pt"
        assert s.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{name}.pt"
        assert len(s.sha256 or "") == 64 and s.size and s.size > 100_000_000
        assert s.extra["sam2_config"].startswith("configs/sam2.1/")
    assert specs["sam2.1_hiera_tiny"].size < specs["sam2.1_hiera_large"].size


def test_missing_sam2_weights_offline_are_one_clear_message_without_network(cache):
    folder, attempts = cache
    with pytest.raises(WeightsMissingError) as info:
        load_sam2("small", "cpu")
    message = str(info.value)
    assert "sam2.1_hiera_small.pt" in message and str(folder / "models" / "sam2.1_hiera_small") in message
    assert "dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_small.pt" in message
    assert attempts == []


def test_a_truncated_checkpoint_in_the_cache_is_corrupt_not_loaded(cache):
    folder, _ = cache
    manager = ModelManager(folder)
    target = manager.download_target("sam2.1_hiera_tiny")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"PK\x03\x04" + b"\x00" * 1000)
    status = manager.status("sam2.1_hiera_tiny")
    assert status.state == "corrupt" and "bytes instead of 156008466" in status.detail
    with pytest.raises(WeightsMissingError):   # offline: it cannot be downloaded again now
        resolve_sam2_checkpoint("sam2.1_hiera_tiny", manager=manager)


def test_a_local_file_must_be_a_sam2_checkpoint_and_fit_the_architecture(cache, tmp_path):
    from car_desktop.engine.sam_models import build_tiny_sam

    manager = ModelManager(cache[0])
    sam1 = tmp_path / "sam1.pth"
    torch.save(build_tiny_sam().state_dict(), sam1)
    with pytest.raises(WeightsCorruptError, match="not of a SAM2 model"):
        manager.set_local_file("sam2.1_hiera_tiny", sam1)
    wrong = tmp_path / "test_sam2.pt"
    torch.save({"model": build_test_sam2().predictor.state_dict()}, wrong)
    manager.set_local_file("sam2.1_hiera_tiny", wrong)        # the right kind of file ...
    assert resolve_sam2_checkpoint("sam2.1_hiera_tiny", manager=manager) == wrong
    with pytest.raises(WeightsCorruptError, match=r"do not fit SAM 2\.1 tiny"):   # ... of another architecture
        build_sam2("tiny", wrong, "cpu")


def test_the_tiny_test_sam2_is_the_same_every_time_and_leaves_the_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = build_test_sam2()
    assert torch.rand(1) == expected
    b = build_test_sam2()
    assert a.is_test and a.image_size == 128 and a.key == b.key
    for (name, p), (_, q) in zip(a.predictor.state_dict().items(), b.predictor.state_dict().items()):
        assert torch.equal(p, q), name


def test_without_the_sam2_package_video_propagation_says_how_to_install_it(monkeypatch):
    from car_desktop.engine import sam2_models
    from car_desktop.engine.errors import ConfigError

    monkeypatch.setattr(sam2_models, "sam2_available", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'car-desktop\[video\]'"):
        sam2_models.build_test_sam2()
