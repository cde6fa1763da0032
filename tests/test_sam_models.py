"""Loading SAM models: the tiny test SAM, .pth round trips, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from car_desktop.engine.errors import ConfigError, WeightsCorruptError, WeightsMissingError
from car_desktop.engine.sam_models import (
    SamHandle,
    build_tiny_sam,
    clear_sam_cache,
    get_sam,
    load_sam,
    mobile_sam_available,
)


def _outputs(handle: SamHandle, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predictor = handle.new_predictor()
    predictor.set_image(image)
    _, ious, logits = predictor.predict(np.array([[30.0, 40.0]]), np.array([1]), multimask_output=True)
    return ious, logits


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)


def test_tiny_sam_is_seeded_and_marked_as_test():
    a, b = load_sam("tiny", None, "cpu"), load_sam("tiny", None, "cpu")
    assert a.is_test and a.model_type == "tiny" and a.device == torch.device("cpu")
    assert a.key == b.key and a.checkpoint is None
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert all(not p.requires_grad for p in a.model.parameters())


def test_building_tiny_sam_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_sam()
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.slow
def test_pth_round_trip_gives_the_same_outputs(tmp_path, image):
    source = load_sam("tiny", None, "cpu")
    with torch.no_grad():  # weights unlike the seeded tiny SAM, so loading must really happen
        gen = torch.Generator().manual_seed(7)
        for p in source.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    path = tmp_path / "sam_tiny_test.pth"
    torch.save(source.model.state_dict(), path)

    loaded = load_sam("tiny", path, "cpu")
    assert not loaded.is_test and loaded.checkpoint == path and str(path.name) in loaded.key
    assert loaded.key != load_sam("tiny", None, "cpu").key
    ious_a, logits_a = _outputs(source, image)
    ious_b, logits_b = _outputs(loaded, image)
    np.testing.assert_allclose(ious_a, ious_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits_a, logits_b, rtol=1e-5, atol=1e-5)
    _, logits_fresh = _outputs(load_sam("tiny", None, "cpu"), image)
    assert not np.allclose(logits_a, logits_fresh)


def test_checkpoint_nested_under_model_key_loads(tmp_path):
    source = load_sam("tiny", None, "cpu")
    path = tmp_path / "nested.pth"
    torch.save({"model": source.model.state_dict(), "epoch": 3}, path)
    assert load_sam("tiny", path, "cpu").checkpoint == path


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint" * 10, "truncated"])
def test_corrupt_pth_is_a_clear_error(tmp_path, content):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    if content == "truncated":
        good = tmp_path / "good.pth"
        torch.save(load_sam("tiny", None, "cpu").model.state_dict(), good)
        content = good.read_bytes()[: good.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(WeightsCorruptError) as info:
        load_sam("tiny", path, "cpu")
    message = str(info.value)
    assert str(path) in message and "download it again" in message


def test_a_pytorch_file_that_is_not_a_state_dict_is_corrupt(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsCorruptError, match="not a SAM state dict"):
        load_sam("tiny", path, "cpu")


def test_mismatched_weights_name_the_likely_model_type(tmp_path):
    state = load_sam("tiny", None, "cpu").model.state_dict()
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    with pytest.raises(WeightsCorruptError, match="looks like a tiny checkpoint"):
        load_sam("vit_b", path, "cpu")
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, path)
    with pytest.raises(WeightsCorruptError, match="do not fit SAM tiny"):
        load_sam("tiny", path, "cpu")


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(WeightsMissingError, match="does not exist"):
        load_sam("tiny", tmp_path / "absent.pth", "cpu")
    with pytest.raises(ConfigError, match="Unknown SAM model"):
        load_sam("vit_x", None, "cpu")


@pytest.mark.skipif(mobile_sam_available(), reason="mobile_sam is installed")
def test_mobile_sam_without_its_package_is_a_config_error():
    with pytest.raises(ConfigError, match="mobile_sam"):
        load_sam("vit_t", None, "cpu")


def test_get_sam_loads_once(tmp_path):
    clear_sam_cache()
    path = tmp_path / "tiny.pth"
    torch.save(load_sam("tiny", None, "cpu").model.state_dict(), path)
    a = get_sam("tiny", path, "cpu")
    assert get_sam("tiny", path, "cpu") is a
    assert get_sam("tiny", None, "cpu") is not a
    clear_sam_cache()
    assert get_sam("tiny", path, "cpu") is not a
    clear_sam_cache()
