"""Loading SAM 2 (Segment Anything 2) video predictors: the SAM 2.1 ``tiny`` ... ``large`` models, and a
tiny random-weight SAM 2 for tests.

SAM 2 comes from the optional ``sam2`` package (the ``video`` extra; installed without its CUDA
extension on CPU machines: nothing here needs it). Without it, ``load_sam2`` raises a ``ConfigError``
that says how to install it; the rest of the app works without video propagation.

The real models are built from the SAM 2.1 configs shipped inside ``sam2`` (named in the model
manifest, ``resources/models.json``, beside each checkpoint's URL, size and hash) with the options
SAM 2's own video builder sets, except hole filling (``fill_hole_area``), which needs the CUDA
extension. The checkpoint is read here (on the CPU, ``weights_only=True``), so a missing, truncated or
mismatched file is a ``WeightsMissingError`` / ``WeightsCorruptError`` naming the file; where it
comes from (download, hash, the user's cache) is the model manager's business.

The test model (``TEST_MODEL``) is built from ``model_configs/car-tiny-sam2.yaml`` with seeded random
weights: the SAM 2.1 layout at a 128-pixel input and 64-wide features. Its object-presence head is
biased to "present", so it never drops an object: tests check which frames and objects get masks,
never what the masks look like. The benchmark's ``build_sam2(name, None)`` gives a real architecture
with random weights.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .device import resolve_device
from .errors import ConfigError, WeightsCorruptError
from .sam_models import read_state_dict

log = logging.getLogger(__name__)

TEST_MODEL = "test"
SAM2_MODELS: tuple[str, ...] = ("tiny", "small", "base_plus", "large")
TEST_SEED = 0
TEST_CONFIG = "car-tiny-sam2.yaml"
#: What SAM 2's ``build_sam2_video_predictor`` sets for video, minus ``fill_hole_area`` (CUDA only).
VIDEO_OVERRIDES: tuple[str, ...] = (
    "model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor",
    "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "model.binarize_mask_from_pts_for_mem_enc=true",
    "model.fill_hole_area=0",
)
_BUILD_LOCK = threading.Lock()  # hydra's config store is global


@dataclass
class Sam2Handle:
    """A loaded SAM 2 video predictor and what the propagation needs to know about it.

    ``key`` names the weights (model, file size and time, or the test seed): stored propagation
    results record it, so results of other weights are never mistaken for these.
    """

    predictor: Any                 # sam2.sam2_video_predictor.SAM2VideoPredictor
    name: str                      # "test", "tiny", "small", "base_plus" or "large"
    device: torch.device
    key: str
    is_test: bool

    @property
    def image_size(self) -> int:
        """The square input size the model resizes every frame to."""
        return int(self.predictor.image_size)

    @property
    def title(self) -> str:
        return "tiny SAM 2 (random test weights)" if self.is_test else f"SAM 2.1 {self.name}"


def sam2_available() -> bool:
    """True when the optional ``sam2`` package can be imported."""
    try:
        import sam2  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a broken install (hydra missing)
        return False
    return True


def require_sam2() -> None:
    """ConfigError with the install command unless ``sam2`` is importable."""
    if not sam2_available():
        raise ConfigError("Video propagation needs SAM 2, which is not installed: "
                          "pip install 'car-desktop[video]' (on a CPU machine: SAM2_BUILD_CUDA=0 pip install ...).")


def _instantiate(cfg: Any) -> Any:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def _finish(model: Any, device: torch.device) -> Any:
    model = model.to(device).float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_test_sam2(device: str | torch.device = "cpu", seed: int = TEST_SEED) -> Sam2Handle:
    """The tiny random-weight SAM 2 of the tests (see the module docstring); the caller's random state
    is left alone."""
    require_sam2()
    from omegaconf import OmegaConf

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    config = Path(__file__).with_name("model_configs") / TEST_CONFIG  # beside the tiny CLIP configs
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg = OmegaConf.merge(OmegaConf.load(config), OmegaConf.from_dotlist(list(VIDEO_OVERRIDES)))
        model = _instantiate(cfg)
        head = model.sam_mask_decoder.pred_obj_score_head
        last = head.layers[-1] if hasattr(head, "layers") else head
        with torch.no_grad():
            last.bias.fill_(10.0)  # always "present": propagated masks are never dropped
    return Sam2Handle(_finish(model, dev), TEST_MODEL, dev, f"sam2-test:{seed}", True)


def build_sam2(name: str, checkpoint: Path | None, device: str | torch.device = "auto") -> Sam2Handle:
    """SAM 2.1 ``name`` (tiny, small, base_plus, large) with ``checkpoint`` loaded, or with random
    weights when it is None (benchmarks only; logged as a warning)."""
    require_sam2()
    if name not in SAM2_MODELS:
        raise ConfigError(f"Unknown SAM 2 model {name!r}; choose one of {', '.join(SAM2_MODELS)}.")
    from hydra import compose

    from .manifest import load_manifest

    spec = load_manifest()[f"sam2.1_hiera_{name}"]
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    state = read_state_dict(checkpoint, name, "SAM 2") if checkpoint is not None else None
    with _BUILD_LOCK:
        cfg = compose(config_name=spec.extra["sam2_config"], overrides=[f"++{o}" for o in VIDEO_OVERRIDES])
        model = _instantiate(cfg)
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsCorruptError(
                f"The weights in {checkpoint} do not fit SAM 2.1 {name} (missing, unexpected or mis-shaped "
                "tensors): choose the SAM 2 model the file was made for, or delete it and download it again."
            ) from exc
        st = checkpoint.stat()  # type: ignore[union-attr]
        key = f"sam2.1-{name}:{st.st_size}:{st.st_mtime_ns}"
    else:
        log.warning("SAM 2.1 %s has random weights (no checkpoint): its masks are meaningless.", name)
        key = f"sam2.1-{name}:random:{id(model):x}"
    return Sam2Handle(_finish(model, dev), name, dev, key, checkpoint is None)


_loaded: dict[tuple[str, str], Sam2Handle] = {}
_loaded_lock = threading.Lock()


def load_sam2(name: str, device: str | torch.device = "auto", *, progress: Any = None,
              cancel: Any = None) -> Sam2Handle:
    """The SAM 2 model ``name`` ("test" or tiny ... large), loaded once per process and device. Real
    weights come from the model manager (downloaded when allowed; WeightsMissingError offline)."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    key = (name, str(dev))
    with _loaded_lock:
        handle = _loaded.get(key)
        if handle is not None:
            return handle
    if name == TEST_MODEL:
        handle = build_test_sam2(dev)
    else:
        require_sam2()
        from .model_manager import resolve_sam2_checkpoint

        if name not in SAM2_MODELS:
            raise ConfigError(f"Unknown SAM 2 model {name!r}; choose one of {', '.join(SAM2_MODELS)}.")
        handle = build_sam2(name, resolve_sam2_checkpoint(f"sam2.1_hiera_{name}", progress, cancel), dev)
    with _loaded_lock:
        return _loaded.setdefault(key, handle)
