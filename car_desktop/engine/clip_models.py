"""Loading the frozen CLIP models CaR runs on: open_clip architectures with random weights, a local
checkpoint file (an open_clip state dict or an OpenAI ``clip``-package archive), or an open_clip
pretrained tag resolved to a local file by the model manager; plus the tiny seeded test models built
from the JSON configs shipped in ``model_configs/``. A ``ClipModel`` bundles the frozen network with
its tokenizer, device, precision, logit scale and a stable cache key; every other stage takes one.

The activation matters: OpenAI's weights were trained with QuickGELU, open_clip's ``ViT-B-16`` name
builds GELU, and the parameters of the two are indistinguishable. ``decide_activation`` therefore
decides from what the file is (an explicit option; a ``-quickgelu`` name; the OpenAI archive format;
open_clip's pretrained config of the tag; an ``open_clip_config.json`` beside the file; a hash the
manifest knows) and, when nothing tells, keeps the architecture's own activation with a warning that
says how to choose (never silently).
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch

from .cancel import CancelToken, check
from .clip_tower import OpenClipModule
from .device import FP32, Precision, resolve_device, resolve_precision
from .errors import ConfigError, WeightsCorruptError, WeightsMissingError

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).with_name("model_configs")
TEST_PROPOSAL_MODEL = "car-tiny-b16"
TEST_CLASSIFIER_MODEL = "car-tiny-l14"
#: Seeds of the test models, so two processes build the very same random weights.
TEST_SEEDS = {TEST_PROPOSAL_MODEL: 1234, TEST_CLASSIFIER_MODEL: 5678}

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
#: Non-weight entries of OpenAI ``clip`` archives (model hyper-parameters stored as tensors).
_OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")

# Register our tiny configs once, at import, so open_clip.create_model knows their names.
if TEST_PROPOSAL_MODEL not in open_clip.list_models():
    open_clip.add_model_config(MODEL_CONFIG_DIR)


@dataclass(eq=False)
class ClipModel:
    """A frozen open_clip model with what the stages need to use it."""

    model: Any                     # open_clip CLIP (eval mode, no grad on parameters)
    tokenizer: Callable
    name: str                      # open_clip architecture name ("ViT-B-16", "car-tiny-b16")
    pretrained: str | None         # tag, file path, or None for random weights
    device: torch.device
    dtype: torch.dtype             # the weights' dtype
    is_test: bool = False
    #: The dtype of the heavy passes (bf16 autocast on a CPU that has it); see device.Precision.
    precision: Precision = FP32
    #: Why the activation is what it is, and anything else a user should know about these weights.
    notes: list[str] = field(default_factory=list)
    #: Weight fingerprint covering both towers (the text-embedding disk cache is keyed by it).
    fingerprint: str = field(init=False)
    #: Stable identity for in-memory caches: architecture, weights, device, precision, fingerprint.
    key: str = field(init=False)

    def __post_init__(self) -> None:
        weights = "random" if self.pretrained is None else os.path.basename(str(self.pretrained))
        self.fingerprint = _fingerprint(self.model)
        self.key = (f"{self.name}|{weights}|{self.device}|{str(self.dtype).replace('torch.', '')}"
                    f"|{self.precision.name}|{self.fingerprint}")

    @property
    def logit_scale(self) -> float:
        """The model's own exp(logit_scale) (100 for the OpenAI weights), as the released code uses it."""
        scale = getattr(self.model, "logit_scale", None)
        if not isinstance(scale, torch.Tensor):
            return 100.0
        return float(scale.detach().float().exp().reshape(-1)[0])

    @property
    def quick_gelu(self) -> bool:
        return any(type(m).__name__ == "QuickGELU" for m in self.model.modules())

    @property
    def visual(self) -> Any:
        return self.model.visual

    @property
    def patch_size(self) -> int:
        return int(self.model.visual.conv1.kernel_size[0])


def _fingerprint(model: OpenClipModule) -> str:
    """A short hash of a few small weight tensors of both towers: tells two sets of weights apart cheaply.

    The activation is part of it: the same weights with GELU and QuickGELU give other features.
    """
    h = hashlib.blake2b(digest_size=8)
    visual = model.visual
    text_blocks = getattr(getattr(model, "transformer", None), "resblocks", None)
    last_text = text_blocks[-1].mlp.c_proj.weight if text_blocks is not None and len(text_blocks) else None
    for t in (visual.positional_embedding, visual.class_embedding, getattr(visual, "proj", None),
              getattr(model, "text_projection", None), getattr(model, "positional_embedding", None), last_text):
        if isinstance(t, torch.Tensor):
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(b"quickgelu" if any(type(m).__name__ == "QuickGELU" for m in model.modules()) else b"gelu")
    return h.hexdigest()


class _DropRandomInitWarning(logging.Filter):
    """open_clip warns on the root logger that a model built without weights is random, even when we
    load the weights ourselves right after; our own log says what the weights are."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


def _create(name: str, quick_gelu: bool = False) -> OpenClipModule:
    """The bare architecture (random weights, fp32, CPU)."""
    drop = _DropRandomInitWarning()
    root = logging.getLogger()
    root.addFilter(drop)
    try:
        return open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
    finally:
        root.removeFilter(drop)


def _freeze(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    # Plain .to(dtype): every weight in one dtype; the stages upcast what must stay fp32
    # (LayerNorm statistics, the Grad-CAM pass, the scores).
    model = model.to(device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives (the OpenAI ``clip`` package's .pt files) are zips with a code/ folder."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.split("/", 2)[1:2] == ["code"] or n.endswith("constants.pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, IndexError):
        return False


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict in ``path`` and whether it is in OpenAI ``clip`` format (QuickGELU weights)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu")), False
        if _is_torchscript(path):
            with warnings.catch_warnings():
                # torch.jit is deprecated for new code, but it is the only reader of these archives.
                warnings.simplefilter("ignore", FutureWarning)
                archive = torch.jit.load(str(path), map_location="cpu")
            return dict(archive.state_dict()), True
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsCorruptError(
            f"Could not read the CLIP checkpoint {path}: {exc}. Re-download it or choose another file."
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise WeightsCorruptError(f"{path} does not contain a CLIP state dict.")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    is_openai = any(k in obj for k in _OPENAI_META_KEYS)
    return obj, is_openai


@dataclass(frozen=True)
class ActivationChoice:
    """Which activation a checkpoint gets, why, and whether anything actually said so."""

    quick_gelu: bool
    reason: str
    certain: bool = True


#: Largest open_clip_config.json read beside a checkpoint (bounded before reading).
_SIDECAR_MAX_BYTES = 1 << 20


def _sidecar_quick_gelu(path: Path) -> bool | None:
    """``model_cfg.quick_gelu`` of an ``open_clip_config.json`` beside ``path`` (Hugging Face layout)."""
    import json

    sidecar = path.with_name("open_clip_config.json")
    try:
        if not sidecar.is_file() or sidecar.stat().st_size > _SIDECAR_MAX_BYTES:
            return None
        cfg = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model_cfg = cfg.get("model_cfg") if isinstance(cfg, dict) else None
    if isinstance(model_cfg, dict):
        return bool(model_cfg.get("quick_gelu", False))
    return None


def known_weight_hashes() -> dict[str, tuple[int | None, str, str]]:
    """SHA-256 -> (file size or None, open_clip model, tag) of every CLIP file the manifest knows."""
    try:
        from .manifest import load_manifest

        manifest = load_manifest()
    except Exception as exc:  # noqa: BLE001 - a broken manifest must not stop loading weights
        log.debug("No manifest for weight hashes: %s", exc)
        return {}
    known: dict[str, tuple[int | None, str, str]] = {}
    for spec in manifest.values():
        if spec.kind != "clip" or not spec.open_clip_model or not spec.open_clip_tag:
            continue
        if spec.sha256:
            known[spec.sha256.lower()] = (spec.size, spec.open_clip_model, spec.open_clip_tag)
        if spec.openai_file is not None and spec.openai_file.sha256:
            known[spec.openai_file.sha256.lower()] = (None, spec.open_clip_model, spec.open_clip_tag)
    return known


def _hash_activation(path: Path) -> ActivationChoice | None:
    """The activation of a file whose SHA-256 the manifest knows (hashed only if a size could match)."""
    known = known_weight_hashes()
    size = path.stat().st_size
    if not any(s is None or s == size for s, _, _ in known.values()):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    hit = known.get(h.hexdigest())
    if hit is None:
        return None
    _, model, tag = hit
    cfg = open_clip.get_pretrained_cfg(model, tag) or {}
    return ActivationChoice(bool(cfg.get("quick_gelu", False)), f"known file ({model} {tag}, by its SHA-256)")


def decide_activation(
    name: str, path: Path, *, openai_format: bool, explicit: bool | None = None, tag_quick_gelu: bool | None = None,
) -> ActivationChoice:
    """QuickGELU or GELU for checkpoint ``path`` loaded as architecture ``name`` (see the module docstring)."""
    if explicit is not None:
        return ActivationChoice(bool(explicit), "chosen by the quick_gelu option")
    if name.lower().endswith("-quickgelu"):
        return ActivationChoice(True, f"the architecture name {name}")
    if openai_format:
        return ActivationChoice(True, "OpenAI clip-package format (trained with QuickGELU)")
    if tag_quick_gelu is not None:
        return ActivationChoice(bool(tag_quick_gelu), "open_clip's pretrained config for the tag")
    sidecar = _sidecar_quick_gelu(path)
    if sidecar is not None:
        return ActivationChoice(sidecar, "open_clip_config.json beside the file")
    by_hash = _hash_activation(path)
    if by_hash is not None:
        return by_hash
    return ActivationChoice(
        False,
        f"nothing in {path.name} says which activation its weights were trained with, so {name}'s own "
        f"(GELU) is used; OpenAI weights need QuickGELU: set quick_gelu=True (or use the name "
        f"{name}-quickgelu) if these are OpenAI weights",
        certain=False,
    )


def _build_from_file(
    name: str, path: Path, quick_gelu: bool | None = None, tag_quick_gelu: bool | None = None,
) -> tuple[torch.nn.Module, ActivationChoice]:
    """Build architecture ``name`` and load ``path`` into it (strictly), with the activation decided."""
    state_dict, is_openai = _read_checkpoint(path)
    for k in _OPENAI_META_KEYS:
        state_dict.pop(k, None)
    choice = decide_activation(name, path, openai_format=is_openai, explicit=quick_gelu, tag_quick_gelu=tag_quick_gelu)
    if not choice.certain:
        log.warning("CLIP %s from %s: %s.", name, path, choice.reason)
    use_quick_gelu = choice.quick_gelu
    model = _create(name, quick_gelu=use_quick_gelu)
    if "logit_scale" in state_dict and state_dict["logit_scale"].ndim != model.logit_scale.ndim:
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(model.logit_scale.shape)
    try:
        from open_clip.model import resize_pos_embed

        resize_pos_embed(state_dict, model)
        model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise WeightsCorruptError(
            f"The checkpoint {path} does not fit the CLIP architecture {name!r}: {str(exc)[:300]}. "
            "Choose the architecture the checkpoint was trained with."
        ) from exc
    log.info("Loaded %s weights from %s (%s format, %s: %s).", name, path, "OpenAI" if is_openai else "open_clip",
             "QuickGELU" if use_quick_gelu else "GELU", choice.reason)
    return model, choice


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(_CHECKPOINT_SUFFIXES)


def load_clip(
    name: str,
    pretrained: str | None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    progress: Callable | None = None,
    cancel: CancelToken | None = None,
    quick_gelu: bool | None = None,
) -> ClipModel:
    """Load CLIP ``name`` with ``pretrained`` weights: None (random), a checkpoint path, or a tag.

    Tags ("openai", "laion2b_s34b_b88k", ...) are resolved to a local file by the model manager,
    which raises ``WeightsMissingError`` at once when the file is absent and the hub unreachable.
    ``quick_gelu`` forces the activation of a checkpoint (None: decided from the file, see
    ``decide_activation``; the decision and its reason are in the returned model's ``notes``).
    """
    if name not in open_clip.list_models():
        raise ConfigError(f"Unknown CLIP architecture {name!r} (for example 'ViT-B-16' or 'ViT-L-14').")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    prec = resolve_precision(precision, dev)
    check(cancel)
    notes: list[str] = []
    if pretrained is None:
        model = _create(name, quick_gelu=bool(quick_gelu))
        log.warning("CLIP %s has random weights: its masks and scores are meaningless.", name)
    else:
        path = Path(pretrained).expanduser()
        choice: ActivationChoice | None = None
        if path.is_file():
            model, choice = _build_from_file(name, path, quick_gelu=quick_gelu)
        elif _looks_like_path(pretrained):
            raise WeightsMissingError(
                f"The CLIP checkpoint file {path} does not exist. Put the weights there or choose another file."
            )
        else:
            tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
            if not tag_cfg:
                tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
                raise ConfigError(f"Unknown weights {pretrained!r} for CLIP {name}; known tags: {tags}.")
            try:
                from .model_manager import resolve_clip_pretrained
            except ImportError as exc:
                raise WeightsMissingError(
                    f"Cannot fetch the {name} ({pretrained}) weights: the model manager is not available "
                    f"({exc}). Choose a local checkpoint file instead."
                ) from exc
            file = resolve_clip_pretrained(name, pretrained, progress=progress, cancel=cancel)
            check(cancel)
            model, choice = _build_from_file(name, Path(file), quick_gelu=quick_gelu,
                                             tag_quick_gelu=bool(tag_cfg.get("quick_gelu", False)))
        if choice is not None and not choice.certain:
            notes.append(f"CLIP {name}: {choice.reason}.")
    model = _freeze(model, dev, prec.weights)
    tokenizer = open_clip.get_tokenizer(name)
    return ClipModel(model=model, tokenizer=tokenizer, name=name, pretrained=pretrained, device=dev,
                     dtype=prec.weights, is_test=False, precision=prec, notes=notes)


def _seeded_random(name: str, device: torch.device, precision: Precision) -> ClipModel:
    # fork_rng keeps the caller's global RNG untouched while making the weights reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TEST_SEEDS[name])
        model = _create(name)
    model = _freeze(model, device, precision.weights)
    return ClipModel(model=model, tokenizer=open_clip.get_tokenizer(name), name=name, pretrained=None,
                     device=device, dtype=precision.weights, is_test=True, precision=precision)


def load_test_models(device: str | torch.device = "auto", precision: str = "auto") -> tuple[ClipModel, ClipModel]:
    """The tiny seeded (proposal, classifier) models for tests and demos: fast, deterministic, meaningless.

    ``auto`` means fp32 off CUDA (no bf16 probe): tests compare their numbers exactly, and the models
    are too small for bf16 to pay. bf16 can still be forced.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if (precision or "auto").lower() == "auto" and dev.type != "cuda":
        precision = "fp32"
    prec = resolve_precision(precision, dev)
    log.warning(
        "Using tiny random-weight TEST CLIP models (%s, %s): the masks and scores they produce are "
        "MEANINGLESS. Install real weights for actual segmentation.", TEST_PROPOSAL_MODEL, TEST_CLASSIFIER_MODEL,
    )
    return _seeded_random(TEST_PROPOSAL_MODEL, dev, prec), _seeded_random(TEST_CLASSIFIER_MODEL, dev, prec)
