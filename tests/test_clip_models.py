"""Loading CLIP: seeded test models, open_clip state dicts, OpenAI archives, and user-facing errors."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import open_clip
import pytest
import torch
from torch import nn

from car_desktop.engine import clip_models as cm
from car_desktop.engine.errors import (
    ConfigError,
    WeightsCorruptError,
    WeightsMissingError,
)


def _outputs(model: nn.Module, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    image = torch.randn(2, 3, 224, 224, generator=g)
    with torch.no_grad():
        return model.encode_image(image), model.encode_text(tokenizer(["a dog", "a clean origami sky."]))


@contextlib.contextmanager
def _warnings_of(name: str):
    """Records a logger emits, whatever handlers or propagation other tests left configured."""
    import logging

    records: list = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _random_model(name: str, seed: int, quick_gelu: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    return open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu).eval()


def _torchscript_archive(state_dict: dict[str, torch.Tensor], path) -> None:
    """A TorchScript archive whose state dict has the given keys, like the OpenAI clip package's .pt."""
    root = nn.Module()
    for key, value in state_dict.items():
        *parents, leaf = key.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_buffer(leaf, value.clone())
    torch.jit.save(torch.jit.script(root), str(path))


def test_configs_registered_and_test_models_deterministic():
    assert {"car-tiny-b16", "car-tiny-l14"} <= set(open_clip.list_models())
    p1, c1 = cm.load_test_models(device="cpu")
    p2, c2 = cm.load_test_models(device="cpu")
    assert p1.key == p2.key and c1.key == c2.key and p1.key != c1.key
    assert p1.is_test and c1.is_test and p1.pretrained is None
    assert p1.patch_size == 16 and c1.patch_size == 14
    assert len(p1.model.visual.transformer.resblocks) == 9
    for a, b in zip(p1.model.parameters(), p2.model.parameters()):
        assert torch.equal(a, b)
    assert not p1.model.training
    assert not any(p.requires_grad for p in p1.model.parameters())
    assert p1.dtype == torch.float32 and p1.device.type == "cpu"


def test_test_models_leave_global_rng_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    cm.load_test_models(device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_random_weights_get_distinct_keys():
    a = cm.load_clip("car-tiny-l14", None, device="cpu")
    b = cm.load_clip("car-tiny-l14", None, device="cpu")
    assert a.key != b.key
    assert not a.is_test


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_open_clip_state_dict_roundtrip(tmp_path, suffix):
    ref = _random_model("car-tiny-l14", seed=11)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    else:
        torch.save(ref.state_dict(), path)
    loaded = cm.load_clip("car-tiny-l14", str(path), device="cpu")
    assert loaded.pretrained == str(path)
    for got, want in zip(_outputs(loaded.model, loaded.tokenizer), _outputs(ref, loaded.tokenizer)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_open_clip_checkpoint_dict_with_module_prefix(tmp_path):
    ref = _random_model("car-tiny-l14", seed=12)
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    loaded = cm.load_clip("car-tiny-l14", str(path), device="cpu")
    torch.testing.assert_close(_outputs(loaded.model, loaded.tokenizer)[0], _outputs(ref, loaded.tokenizer)[0])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, yet it is OpenAI's format
def test_openai_torchscript_archive(tmp_path):
    # OpenAI weights use QuickGELU: the loader must detect the format and build the model with it.
    ref = _random_model("car-tiny-b16", seed=13, quick_gelu=True)
    state = dict(ref.state_dict())
    state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77),
                 vocab_size=torch.tensor(49408))
    path = tmp_path / "ViT-tiny.pt"
    _torchscript_archive(state, path)
    loaded = cm.load_clip("car-tiny-b16", str(path), device="cpu")
    acts = {type(m).__name__ for m in loaded.model.modules()}
    assert "QuickGELU" in acts
    for got, want in zip(_outputs(loaded.model, loaded.tokenizer), _outputs(ref, loaded.tokenizer)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_openai_plain_state_dict(tmp_path):
    ref = _random_model("car-tiny-b16", seed=14, quick_gelu=True)
    state = {k: v.half() for k, v in ref.state_dict().items()}  # OpenAI files are partly fp16
    state["input_resolution"] = torch.tensor(224)
    path = tmp_path / "openai_sd.pt"
    torch.save(state, path)
    loaded = cm.load_clip("car-tiny-b16", str(path), device="cpu")
    ref.load_state_dict({k: v.float() for k, v in state.items() if k != "input_resolution"})
    torch.testing.assert_close(_outputs(loaded.model, loaded.tokenizer)[0], _outputs(ref, loaded.tokenizer)[0])


def test_missing_file_is_weights_missing(tmp_path):
    with pytest.raises(WeightsMissingError, match="does not exist"):
        cm.load_clip("car-tiny-b16", str(tmp_path / "nope.pt"), device="cpu")


def test_corrupt_and_mismatched_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsCorruptError):
        cm.load_clip("car-tiny-b16", str(bad), device="cpu")
    other = tmp_path / "other.bin"
    torch.save(_random_model("car-tiny-l14", seed=1).state_dict(), other)
    with pytest.raises(WeightsCorruptError, match="does not fit"):
        cm.load_clip("car-tiny-b16", str(other), device="cpu")


def test_unknown_names_and_tags():
    with pytest.raises(ConfigError, match="architecture"):
        cm.load_clip("ViT-Q-99", None, device="cpu")
    with pytest.raises(ConfigError, match="known tags"):
        cm.load_clip("ViT-B-16", "no-such-tag", device="cpu")


def test_pretrained_tag_offline_fails_fast():
    start = time.monotonic()
    with pytest.raises(WeightsMissingError):
        cm.load_clip("ViT-B-16", "openai", device="cpu")
    assert time.monotonic() - start < 20


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, yet it is OpenAI's format
def test_openai_weights_get_quickgelu_in_every_file_format(tmp_path):
    """The same OpenAI-format weights as a TorchScript archive, an OpenAI state dict, an open_clip file
    (Hugging Face layout, with its open_clip_config.json) and a plain state dict with the explicit
    option all load with QuickGELU and give identical features; a plain file that says nothing gets the
    architecture's GELU with a warning and a note, never silently."""
    import json

    from safetensors.torch import save_file

    ref = _random_model("car-tiny-b16", seed=21, quick_gelu=True)
    state = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    meta = dict(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    archive = tmp_path / "ViT-tiny.pt"
    _torchscript_archive({**state, **meta}, archive)
    openai_sd = tmp_path / "openai_state_dict.pt"
    torch.save({**state, **meta}, openai_sd)
    hf = tmp_path / "hf_copy"
    hf.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(hf / "open_clip_model.safetensors"))
    (hf / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"quick_gelu": True}}))
    plain = tmp_path / "plain.bin"
    torch.save(state, plain)

    want = _outputs(ref, open_clip.get_tokenizer("car-tiny-b16"))
    loaded = [cm.load_clip("car-tiny-b16", str(archive), device="cpu"),
              cm.load_clip("car-tiny-b16", str(openai_sd), device="cpu"),
              cm.load_clip("car-tiny-b16", str(hf / "open_clip_model.safetensors"), device="cpu"),
              cm.load_clip("car-tiny-b16", str(plain), device="cpu", quick_gelu=True)]
    for clip in loaded:
        assert clip.quick_gelu and not clip.notes
        for got, exp in zip(_outputs(clip.model, clip.tokenizer), want):
            torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-5)
    assert len({c.fingerprint for c in loaded}) == 1

    with _warnings_of("car_desktop.engine.clip_models") as records:
        guessed = cm.load_clip("car-tiny-b16", str(plain), device="cpu")
    assert not guessed.quick_gelu
    assert guessed.notes and "quick_gelu=True" in guessed.notes[0]
    assert any("quick_gelu=True" in r.getMessage() for r in records)
    image_features = _outputs(guessed.model, guessed.tokenizer)[0]
    assert (image_features - want[0]).abs().max() > 1e-3          # GELU really computes other features
    assert guessed.fingerprint != loaded[0].fingerprint           # so caches never mix the two


def test_activation_from_a_hash_the_manifest_knows(tmp_path, monkeypatch):
    import hashlib

    ref = _random_model("car-tiny-b16", seed=22, quick_gelu=True)
    plain = tmp_path / "weights.bin"
    torch.save(ref.state_dict(), plain)
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda model, tag: {"quick_gelu": tag == "openai"})
    monkeypatch.setattr(cm, "known_weight_hashes", lambda: {digest: (plain.stat().st_size, "car-tiny-b16", "openai")})
    choice = cm.decide_activation("car-tiny-b16", plain, openai_format=False)
    assert choice.quick_gelu and choice.certain and "SHA-256" in choice.reason
    # A size no known file has: nothing is hashed, nothing decided.
    monkeypatch.setattr(cm, "known_weight_hashes", lambda: {"0" * 64: (1, "car-tiny-b16", "openai")})
    assert not cm.decide_activation("car-tiny-b16", plain, openai_format=False).certain
    # The explicit option and the tag's config win over everything else.
    assert not cm.decide_activation("car-tiny-b16", plain, openai_format=True, explicit=False).quick_gelu
    assert cm.decide_activation("car-tiny-b16", plain, openai_format=False, tag_quick_gelu=True).quick_gelu


def test_model_logit_scale_is_exp_of_the_stored_value():
    clip = cm.load_clip("car-tiny-b16", None, device="cpu")
    with torch.no_grad():
        clip.model.logit_scale.fill_(np.log(100.0))
    assert clip.logit_scale == pytest.approx(100.0, rel=1e-6)
