"""The engine's configuration: every threshold, prompt, template and switch of CaR, and the presets.

Values and presets follow ../shared/car-algorithm.md (the paper and the authors' released code).
Deliberate deviations from the released code are named options here, documented where they are
defined, so a reader can switch each one back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import ConfigError

#: The 15 classifier templates of the released code, in order.
CLASSIFIER_TEMPLATES: tuple[str, ...] = (
    "a clean origami {}.",
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

#: Template of the proposal stage from step 2 on, and always for background words.
PROPOSAL_TEMPLATE = "a clean origami {}."

#: Background words that compete with the queries in the proposal softmax.
DEFAULT_BACKGROUND_WORDS: tuple[str, ...] = (
    "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
    "railway", "railroad", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock", "street",
    "valley", "bridge",
)

#: Concepts treated as "stuff" by presets that prompt stuff differently (scene preset).
STUFF_WORDS: frozenset[str] = frozenset(
    DEFAULT_BACKGROUND_WORDS
    + ("floor", "ceiling", "snow", "sand", "field", "grassland", "dirt", "mud", "fog", "ice", "carpet",
       "pavement", "sidewalk", "fence", "forest", "hill", "track", "window", "curtain", "light")
)

VISUAL_PROMPTS: tuple[str, ...] = ("blur", "gray", "black", "circle", "rectangle", "contour")
SAM_MODES: tuple[str, ...] = ("prompted", "automatic", "off")
#: Device and precision choices of ``CaRConfig``, resolved to torch objects by device.py (kept here so
#: that offering them, e.g. in a menu, does not import torch).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES: tuple[str, ...] = ("auto", "fp32", "fp16")


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF parameters (pydensecrf API) of the released code."""

    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0
    iterations: int = 10
    unary_floor: float = 1e-5


@dataclass(frozen=True)
class CaRConfig:
    """Everything that changes what the engine computes. Immutable: use ``replace(**changes)``."""

    preset: str = "objects"
    # Thresholds: eta binarises proposals, theta keeps a query, lam boxes the CAM for refinement.
    eta: float = 0.4
    theta: float = 0.6
    lam: float = 0.4
    prompts: tuple[str, ...] = ("circle", "blur")
    #: Prompts for concepts in STUFF_WORDS; None means "same as prompts".
    stuff_prompts: tuple[str, ...] | None = None
    #: Referring mode: one proposal softmax per phrase and a 2-label CRF per phrase.
    referring: bool = False
    templates: tuple[str, ...] = CLASSIFIER_TEMPLATES
    proposal_template: str = PROPOSAL_TEMPLATE
    background_words: tuple[str, ...] = DEFAULT_BACKGROUND_WORDS
    max_steps: int = 10
    #: Long side cap of the proposal input, so a 6000x4000 photo does not build a 40k-token attention.
    proposal_long_side: int = 640
    #: Long side of the working image for prompts, CRF and masks; final masks are resized back to full
    #: resolution. Bounds memory and CRF time on 24-megapixel photos (a deviation: the paper's images
    #: are about 500 px, so it never applies there).
    work_long_side: int = 1024
    #: Number of last blocks whose attention is averaged in the CAM refinement (CLIP-ES uses 8).
    refine_layers: int = 8
    blur_kernel: int = 15
    use_crf: bool = True
    #: Run the CRF in a helper process: pydensecrf holds the GIL for the whole inference, which would
    #: freeze a GUI thread for about a second.
    crf_in_subprocess: bool = True
    crf: CRFParams = field(default_factory=CRFParams)
    sam_mode: str = "prompted"
    sam_model: str = "vit_b"
    phi_iou: float = 0.7
    phi_iom: float = 0.7
    sam_points_per_side: int = 32
    device: str = "auto"
    precision: str = "auto"
    proposal_model: str = "ViT-B-16"
    proposal_pretrained: str | None = "openai"
    classifier_model: str = "ViT-L-14"
    classifier_pretrained: str | None = "openai"
    # --- Named deviations from the released code ---
    #: The released code converts RGB to grey as if it were BGR; True uses the correct luminance.
    gray_correct_luminance: bool = True
    #: Which block's CLS token the classifier embeds (-2: second-to-last, the released code's quirk
    #: that theta was tuned on; -1 would be standard CLIP).
    classifier_cls_block: int = -2
    #: The released code caps a CAM box's end at width-1/height-1 and then slices end-exclusive, so
    #: boxes never reach the last patch row/column. False (default) fixes that; True reproduces it.
    refine_box_edge_quirk: bool = False

    def __post_init__(self) -> None:
        # Prompts are always drawn in VISUAL_PROMPTS order, so their listed order carries no meaning:
        # normalise it so equal configs compare (and hash into resume keys) equal.
        for name in ("prompts", "stuff_prompts"):
            value = getattr(self, name)
            if value is not None:
                ordered = tuple(p for p in VISUAL_PROMPTS if p in value) + tuple(p for p in value if p not in VISUAL_PROMPTS)
                object.__setattr__(self, name, ordered)
        for name in ("eta", "theta", "lam", "phi_iou", "phi_iom"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must lie between 0 and 1 (got {value}).")
        for p in tuple(self.prompts) + tuple(self.stuff_prompts or ()):
            if p not in VISUAL_PROMPTS:
                raise ConfigError(f"Unknown visual prompt {p!r}; choose from {', '.join(VISUAL_PROMPTS)}.")
        if self.sam_mode not in SAM_MODES:
            raise ConfigError(f"Unknown SAM mode {self.sam_mode!r}; choose from {', '.join(SAM_MODES)}.")
        if self.max_steps < 2:
            raise ConfigError("max_steps must be at least 2 (the first step never stops the loop).")
        if self.proposal_long_side < 32 or self.work_long_side < 32:
            raise ConfigError("proposal_long_side and work_long_side must be at least 32 pixels.")
        if not self.templates:
            raise ConfigError("At least one classifier template is needed.")

    def replace(self, **changes) -> "CaRConfig":
        return dataclasses.replace(self, **changes)

    def prompts_for(self, concept_name: str) -> tuple[str, ...]:
        """Visual prompts for one concept (stuff concepts may use their own)."""
        if self.stuff_prompts is not None and concept_name.strip().lower() in STUFF_WORDS:
            return self.stuff_prompts
        return self.prompts

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict] = {
    "objects": dict(eta=0.4, theta=0.6, lam=0.4, prompts=("circle", "blur")),
    "objects-and-stuff": dict(eta=0.5, theta=0.3, lam=0.5, prompts=("blur", "gray")),
    "scene": dict(eta=0.6, theta=0.2, lam=0.4, prompts=("blur", "circle"), stuff_prompts=("blur", "gray")),
    "referring": dict(
        eta=0.5, theta=0.3, lam=0.5, prompts=("circle",), referring=True,
        classifier_model="ViT-B-16", templates=("a photo of a {}.",),
    ),
}
PRESET_DESCRIPTIONS: dict[str, str] = {
    "objects": "Things (VOC-like): countable objects",
    "objects-and-stuff": "Things and stuff (COCO-like)",
    "scene": "Whole scenes (Pascal-Context-like), stuff prompted with blur + grey",
    "referring": "Referring phrases (\"the man in the red vest\")",
}


def preset(name: str, **overrides) -> CaRConfig:
    """The config of a named preset, with optional field overrides."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}; choose from {', '.join(PRESETS)}.")
    return CaRConfig(preset=name, **{**PRESETS[name], **overrides})
