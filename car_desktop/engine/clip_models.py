"""Loading the frozen CLIP models CaR runs on: open_clip architectures with random weights, a local
checkpoint file (an open_clip state dict or an OpenAI ``clip``-package archive), or an open_clip
pretrained tag resolved to a local file by the model manager; plus the tiny seeded test models built
from the JSON configs shipped in ``model_configs/``. A ``ClipModel`` bundles the frozen network with
its tokenizer, device, dtype and a stable cache key; every other stage takes one of these.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch

from .cancel import CancelToken, check
from .device import resolve_device, resolve_dtype
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
    dtype: torch.dtype
    is_test: bool = False
    #: Stable identity for caches: architecture, weights, device, dtype and a weight fingerprint.
    key: str = field(init=False)

    def __post_init__(self) -> None:
        weights = "random" if self.pretrained is None else os.path.basename(str(self.pretrained))
        self.key = f"{self.name}|{weights}|{self.device}|{str(self.dtype).replace('torch.', '')}|{_fingerprint(self.model)}"

    @property
    def visual(self) -> Any:
        return self.model.visual

    @property
    def patch_size(self) -> int:
        return int(self.model.visual.conv1.kernel_size[0])


def _fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a few small weight tensors: distinguishes two random inits cheaply."""
    h = hashlib.blake2b(digest_size=6)
    visual = model.visual
    for t in (visual.positional_embedding, visual.class_embedding, getattr(visual, "proj", None)):
        if isinstance(t, torch.Tensor):
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _DropRandomInitWarning(logging.Filter):
    """open_clip warns on the root logger that a model built without weights is random, even when we
    load the weights ourselves right after; our own log says what the weights are."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


def _create(name: str, quick_gelu: bool = False) -> torch.nn.Module:
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
    except Exception as exc:  # noqa: BLE001 - any parse failure means the file is not usable
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


def _build_from_file(name: str, path: Path, quick_gelu: bool | None) -> torch.nn.Module:
    """Build architecture ``name`` and load ``path`` into it (strictly)."""
    state_dict, is_openai = _read_checkpoint(path)
    for k in _OPENAI_META_KEYS:
        state_dict.pop(k, None)
    # OpenAI weights were trained with QuickGELU; a tag's metadata says so for open_clip tags.
    use_quick_gelu = bool(quick_gelu) or is_openai
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
    log.info("Loaded %s weights from %s (%s format%s).", name, path, "OpenAI" if is_openai else "open_clip",
             ", QuickGELU" if use_quick_gelu else "")
    return model


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(_CHECKPOINT_SUFFIXES)


def load_clip(
    name: str,
    pretrained: str | None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    progress: Callable | None = None,
    cancel: CancelToken | None = None,
) -> ClipModel:
    """Load CLIP ``name`` with ``pretrained`` weights: None (random), a checkpoint path, or a tag.

    Tags ("openai", "laion2b_s34b_b88k", ...) are resolved to a local file by the model manager,
    which raises ``WeightsMissingError`` at once when the file is absent and the hub unreachable.
    """
    if name not in open_clip.list_models():
        raise ConfigError(f"Unknown CLIP architecture {name!r} (for example 'ViT-B-16' or 'ViT-L-14').")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = resolve_dtype(precision, dev)
    check(cancel)
    if pretrained is None:
        model = _create(name)
        log.warning("CLIP %s has random weights: its masks and scores are meaningless.", name)
    else:
        path = Path(pretrained).expanduser()
        if path.is_file():
            model = _build_from_file(name, path, quick_gelu=None)
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
            model = _build_from_file(name, Path(file), quick_gelu=bool(tag_cfg.get("quick_gelu", False)))
    model = _freeze(model, dev, dtype)
    tokenizer = open_clip.get_tokenizer(name)
    return ClipModel(model=model, tokenizer=tokenizer, name=name, pretrained=pretrained, device=dev,
                     dtype=dtype, is_test=False)


def _seeded_random(name: str, device: torch.device, dtype: torch.dtype) -> ClipModel:
    # fork_rng keeps the caller's global RNG untouched while making the weights reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TEST_SEEDS[name])
        model = _create(name)
    model = _freeze(model, device, dtype)
    return ClipModel(model=model, tokenizer=open_clip.get_tokenizer(name), name=name, pretrained=None,
                     device=device, dtype=dtype, is_test=True)


def load_test_models(device: str | torch.device = "auto", precision: str = "auto") -> tuple[ClipModel, ClipModel]:
    """The tiny seeded (proposal, classifier) models for tests and demos: fast, deterministic, meaningless."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = resolve_dtype(precision, dev)
    log.warning(
        "Using tiny random-weight TEST CLIP models (%s, %s): the masks and scores they produce are "
        "MEANINGLESS. Install real weights for actual segmentation.", TEST_PROPOSAL_MODEL, TEST_CLASSIFIER_MODEL,
    )
    return _seeded_random(TEST_PROPOSAL_MODEL, dev, dtype), _seeded_random(TEST_CLASSIFIER_MODEL, dev, dtype)
