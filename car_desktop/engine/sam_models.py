"""Loading Segment Anything (SAM) models: the official vit_b / vit_l / vit_h, a tiny test SAM, MobileSAM.

``load_sam`` builds the architecture with segment_anything's own builders and loads a ``.pth`` state
dict itself (on the CPU first, ``weights_only=True``), so that a truncated, corrupt or mismatched file
becomes a ``WeightsCorruptError`` that names the file and says what to do, never a raw traceback.
``checkpoint=None`` gives random weights (``is_test=True``): for tests and benchmarks only.

Where the checkpoint comes from (download, hash check, the user's cache folder) is the model manager's
business (``model_manager.resolve_sam_checkpoint``); this module takes a path.

SAM's weights stay float32: segment_anything's predictor mixes float32 prompt coordinates with the
model's parameters, so a half-precision model fails in the prompt encoder. On a CPU with bfloat16
(``device.resolve_precision``) the image encoder -- seconds per image, the only heavy part -- runs
under bf16 autocast (``SamHandle.set_image``) and its embedding is turned back into float32, so the
prompt decoder is untouched.

MobileSAM (``vit_t``) is an optional branch: used only when the ``mobile_sam`` package is importable.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import first_line
from .device import FP32, Precision, resolve_device, resolve_precision
from .errors import ConfigError, WeightsCorruptError, WeightsMissingError

log = logging.getLogger(__name__)

SamModelType = Literal["vit_b", "vit_l", "vit_h", "vit_t", "tiny"]
SAM_MODEL_TYPES: tuple[str, ...] = ("vit_b", "vit_l", "vit_h", "vit_t", "tiny")

#: The tiny test SAM: a small image encoder (the prompt encoder and mask decoder are SAM's own).
TINY_SAM_ENCODER: dict[str, Any] = dict(
    encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,)
)
TINY_SAM_SEED = 0

#: Image-encoder width of each official architecture, to name the type a mismatched file really is.
_ENCODER_WIDTH_TO_TYPE = {768: "vit_b", 1024: "vit_l", 1280: "vit_h", 64: "tiny"}


@dataclass
class SamHandle:
    """A loaded SAM model plus what callers need to use and cache it.

    ``key`` identifies the weights (type, file, size and modification time, or the random seed): image
    embeddings are cached under it, so two different models never share an embedding.
    """

    model: torch.nn.Module
    model_type: str
    device: torch.device
    key: str
    is_test: bool
    checkpoint: Path | None = None
    #: segment_anything's (or mobile_sam's) SamPredictor / SamAutomaticMaskGenerator classes.
    predictor_cls: Any = field(default=None, repr=False)
    generator_cls: Any = field(default=None, repr=False)
    #: The image encoder's precision (bf16 autocast on a CPU that has it, else fp32).
    precision: Precision = FP32
    #: The user's precision choice this handle was loaded for ("auto", "fp32", "bf16", "fp16").
    precision_choice: str = "auto"

    def encode(self, set_image: Callable, predictor: Any, *args: Any, **kwargs: Any) -> None:
        """Run a predictor's ``set_image`` in this handle's precision, leaving its features in fp32."""
        with self.precision.context():
            set_image(*args, **kwargs)
        if predictor.features is not None and predictor.features.dtype != torch.float32:
            predictor.features = predictor.features.float()

    def new_predictor(self):
        """A fresh ``SamPredictor`` over this model (cheap: it only holds a reference)."""
        return self.predictor_cls(self.model)

    def new_mask_generator(self, **kwargs):
        """A ``SamAutomaticMaskGenerator`` over this model with the given options."""
        return self.generator_cls(self.model, **kwargs)


def _segment_anything_classes() -> tuple[dict[str, Callable], Callable, Any, Any]:
    from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
    from segment_anything.build_sam import _build_sam

    return sam_model_registry, _build_sam, SamPredictor, SamAutomaticMaskGenerator


def mobile_sam_available() -> bool:
    """True when the optional MobileSAM package (module ``mobile_sam``) can be imported."""
    try:
        import mobile_sam  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a broken install
        return False
    return True


def build_tiny_sam(seed: int = TINY_SAM_SEED) -> torch.nn.Module:
    """A tiny SAM with random, seeded weights (about 0.2 s per set_image on a CPU). Tests only.

    Seeding happens in a forked RNG, so building it does not disturb the caller's random state.
    """
    _, build, _, _ = _segment_anything_classes()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(
            encoder_embed_dim=TINY_SAM_ENCODER["encoder_embed_dim"],
            encoder_depth=TINY_SAM_ENCODER["encoder_depth"],
            encoder_num_heads=TINY_SAM_ENCODER["encoder_num_heads"],
            encoder_global_attn_indexes=list(TINY_SAM_ENCODER["encoder_global_attn_indexes"]),
            checkpoint=None,
        )
    return model.eval()


def _build_architecture(model_type: str) -> tuple[torch.nn.Module, Any, Any]:
    """Random-weight model of ``model_type`` plus its predictor and generator classes."""
    if model_type == "vit_t":
        if not mobile_sam_available():
            raise ConfigError(
                "MobileSAM (vit_t) needs the optional 'mobile_sam' package (pip install 'car-desktop[mobilesam]'); "
                "choose vit_b, vit_l or vit_h instead."
            )
        import mobile_sam

        model = mobile_sam.sam_model_registry["vit_t"](checkpoint=None)
        return model.eval(), mobile_sam.SamPredictor, mobile_sam.SamAutomaticMaskGenerator
    registry, _, predictor_cls, generator_cls = _segment_anything_classes()
    if model_type == "tiny":
        return build_tiny_sam(), predictor_cls, generator_cls
    if model_type not in registry:
        raise ConfigError(f"Unknown SAM model {model_type!r}; choose from {', '.join(SAM_MODEL_TYPES)}.")
    return registry[model_type](checkpoint=None).eval(), predictor_cls, generator_cls


def read_state_dict(path: Path, model_type: str, what: str = "SAM") -> dict[str, torch.Tensor]:
    """The state dict in a SAM (or SAM 2: ``what``) checkpoint, or a ``WeightsCorruptError`` /
    ``WeightsMissingError``. A dict nesting it under "model" or "state_dict" is unwrapped."""
    if not path.is_file():
        raise WeightsMissingError(
            f"The {what} {model_type} weights file {path} does not exist. Download it again "
            f"(car-desktop models download) or point the app to a local copy."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError,
            AttributeError, IndexError, KeyError, TypeError) as exc:
        raise WeightsCorruptError(
            f"The {what} {model_type} weights file {path} cannot be read: it is truncated, corrupt or not a "
            f"PyTorch checkpoint ({type(exc).__name__}: {first_line(exc)}). Delete it and download it again."
        ) from exc
    if isinstance(obj, dict):
        for nested in ("model", "state_dict"):
            if isinstance(obj.get(nested), dict):
                obj = obj[nested]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsCorruptError(
            f"The file {path} is a PyTorch file but not a {what} state dict (got {type(obj).__name__}). "
            f"Point the app to the official checkpoint for {what} {model_type}."
        )
    return obj


def _guess_type(state_dict: dict[str, torch.Tensor]) -> str | None:
    weight = state_dict.get("image_encoder.patch_embed.proj.weight")
    if weight is None:
        return "vit_t" if any(k.startswith("image_encoder.layers.") for k in state_dict) else None
    return _ENCODER_WIDTH_TO_TYPE.get(int(weight.shape[0]))


def _model_key(model_type: str, checkpoint: Path | None, model: torch.nn.Module | None = None) -> str:
    if checkpoint is None:
        if model_type == "tiny":
            return f"tiny:random:{TINY_SAM_SEED}"
        return f"{model_type}:random:{id(model):x}"  # unseeded: each build is a different model
    st = checkpoint.stat()
    return f"{model_type}:{checkpoint.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def sam_precision(choice: str, device: torch.device) -> Precision:
    """SAM's image-encoder precision: bf16 autocast where CLIP would get it on a CPU, fp32 elsewhere."""
    if device.type != "cpu":
        return FP32
    prec = resolve_precision(choice, device)
    return prec if prec.autocast else FP32


def load_sam(
    model_type: SamModelType | str,
    checkpoint: Path | str | os.PathLike | None,
    device: str | torch.device = "auto",
    precision: str = "fp32",
) -> SamHandle:
    """Build SAM ``model_type`` on ``device`` and load ``checkpoint`` (a SAM ``.pth`` state dict).

    ``checkpoint=None`` keeps random weights and marks the handle ``is_test`` (logged as a warning for
    real architectures). Raises ``WeightsMissingError`` for a missing file, ``WeightsCorruptError`` for
    an unreadable file or one whose tensors do not fit ``model_type``, ``ConfigError`` for an unknown
    type, an unavailable device or MobileSAM without its package. ``precision`` is the user's choice
    (see ``sam_precision``; fp32 by default).
    """
    model_type = str(model_type)
    if model_type not in SAM_MODEL_TYPES:
        raise ConfigError(f"Unknown SAM model {model_type!r}; choose from {', '.join(SAM_MODEL_TYPES)}.")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    path = Path(checkpoint) if checkpoint is not None else None
    state_dict = read_state_dict(path, model_type) if path is not None else None
    model, predictor_cls, generator_cls = _build_architecture(model_type)
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            guessed = _guess_type(state_dict)
            hint = (
                f" It looks like a {guessed} checkpoint: choose SAM model {guessed}."
                if guessed and guessed != model_type else ""
            )
            raise WeightsCorruptError(
                f"The weights in {path} do not fit SAM {model_type} (missing, unexpected or mis-shaped "
                f"tensors).{hint} Otherwise delete the file and download it again."
            ) from exc
        log.info("Loaded SAM %s from %s", model_type, path)
    elif model_type != "tiny":
        log.warning("SAM %s has random weights (no checkpoint): its masks are meaningless.", model_type)
    model = model.to(dev).float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    prec = sam_precision(precision, dev)
    return SamHandle(
        model=model, model_type=model_type, device=dev, key=f"{_model_key(model_type, path, model)}:{prec.name}",
        is_test=path is None, checkpoint=path, predictor_cls=predictor_cls, generator_cls=generator_cls,
        precision=prec, precision_choice=precision,
    )


_loaded: dict[tuple, SamHandle] = {}
_loaded_lock = threading.Lock()


def get_sam(
    model_type: SamModelType | str,
    checkpoint: Path | str | os.PathLike | None,
    device: str | torch.device = "auto",
    precision: str = "fp32",
) -> SamHandle:
    """``load_sam`` once per process per (type, file, device, precision): later calls return the same handle.

    Thread-safe; a file replaced on disk (new size or modification time) is loaded again.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.is_file():
        key = (str(model_type), _model_key(str(model_type), path), str(dev), precision)
    else:
        key = (str(model_type), str(path), str(dev), precision)
    with _loaded_lock:
        handle = _loaded.get(key)
        if handle is None:
            handle = load_sam(model_type, path, dev, precision)
            _loaded[key] = handle
        return handle


def clear_sam_cache() -> None:
    """Forget the handles ``get_sam`` holds (frees their memory once nothing else refers to them)."""
    with _loaded_lock:
        _loaded.clear()
