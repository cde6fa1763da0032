"""The engine's configuration: every threshold, prompt, template and switch of CaR, and the presets.

Values and presets follow the paper and the authors' released code (google-research, clip_as_rnn);
docs/engine.md describes the loop they drive. Every difference from the released code is a named field
here, documented where it is defined with its reason and its measured effect, and ``released()`` turns
them all to the released behaviour at once (``--released`` on the command line).
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
    (*DEFAULT_BACKGROUND_WORDS, "floor", "ceiling", "snow", "sand", "field", "grassland", "dirt", "mud", "fog",
     "ice", "carpet", "pavement", "sidewalk", "fence", "forest", "hill", "track", "window", "curtain", "light")
)

VISUAL_PROMPTS: tuple[str, ...] = ("blur", "gray", "black", "circle", "rectangle", "contour")
SAM_MODES: tuple[str, ...] = ("prompted", "automatic", "off")
#: Colour image given to the CRF's bilateral term: the true RGB image, or the released code's
#: BGR-minus-mean image cast to uint8 with negative values wrapping around (see crf.crf_colour_image).
CRF_COLOURS: tuple[str, ...] = ("rgb", "released")
#: Device and precision choices of ``CaRConfig``, resolved to torch objects by device.py (kept here so
#: that offering them, e.g. in a menu, does not import torch). The GUI's settings store the precision
#: under its own key and pass it as ``CaRConfig.precision``.
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")

#: The released code's class template for the proposal stage and, without semantic templates, the
#: classifier (its referring configs have none).
RELEASED_REFERRING_TEMPLATES: tuple[str, ...] = (PROPOSAL_TEMPLATE,)


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


class _ReleasedMethod:
    """``CaRConfig.released()`` (the objects preset) or ``config.released()`` (that config), released behaviour."""

    def __get__(self, obj: CaRConfig | None, objtype: type | None = None):
        if obj is None:
            return lambda name="objects", **overrides: preset(name, released=True, **overrides)
        return lambda: obj.replace(**obj.released_changes())


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
    #: Safety cap on loop steps; None = no cap, as the released code (the set only shrinks, so the loop
    #: ends within len(concepts) + 1 steps anyway). Effect of the cap: none unless it is reached.
    max_steps: int | None = 10
    #: Long side cap of the proposal input, so a 6000x4000 photo does not build a 40k-token attention.
    #: None = no cap (released). Effect: none for images whose long side is within the cap.
    proposal_long_side: int | None = 640
    #: Long side of the working image for prompts, CRF and masks; final masks are resized back to full
    #: resolution. Bounds memory and CRF time on 24-megapixel photos. None = no cap (released; the
    #: paper's images are about 500 px, so the default cap never applies there).
    work_long_side: int | None = 1024
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
    #: auto: fp16 on CUDA; on a CPU, bfloat16 where the CPU has it and a timing confirms it is faster
    #: (device.resolve_precision), else fp32. bf16 applies to the classifier tower, the proposal image
    #: pass and SAM's image encoder; softmaxes, Grad-CAM, the refinement and theta stay fp32.
    precision: str = "auto"
    proposal_model: str = "ViT-B-16"
    proposal_pretrained: str | None = "openai"
    classifier_model: str = "ViT-L-14"
    classifier_pretrained: str | None = "openai"
    #: Activation of CLIP loaded from a checkpoint file: None decides from the file (OpenAI archive,
    #: open_clip config beside it, known hash, tag); True/False forces QuickGELU/GELU.
    quick_gelu: bool | None = None
    #: Whether the classifier sums per-template softmaxes and takes a second softmax (True, the released
    #: semantic configs) or takes one softmax over a single template (the released referring config).
    double_softmax: bool = True

    # --- Named deviations from the released code (released() sets the released value) ---
    # Effects: final-mask IoU against released() with only that field at its default, measured by
    # benchmarks/bench_released_switches.py (ViT-B/16 + ViT-L/14, seeded random OpenAI-format weights;
    # chelsea 512x384 at theta 0.6 / 0.1, coffee 600x400, coffee with blur + grey); docs/engine.md.
    #: The released code converts RGB to grey as if it were BGR; True uses the correct luminance.
    #: Effect: only with the gray prompt (objects-and-stuff, scene's stuff concepts); final masks
    #: unchanged on coffee with blur + grey (the same single survivor).
    gray_correct_luminance: bool = True
    #: Which block's CLS token the classifier embeds (-2: second-to-last, the released code's quirk
    #: that theta was tuned on; -1 would be standard CLIP). Same value in both modes.
    classifier_cls_block: int = -2
    #: The released code caps a CAM box's end at width-1/height-1 and then slices end-exclusive, so
    #: boxes never reach the last patch row/column. False (default) fixes that; True reproduces it.
    #: Effect: IoU min 0.994 / 0.814 / 1.0 / 1.0, up to 3.4 % of labels.
    refine_box_edge_quirk: bool = False
    #: Drop a background word that is also a concept (True), or keep the background list whatever the
    #: concepts are (False, released: "sky" as a concept then competes with the background "sky" in the
    #: proposal softmax). Effect with "sky" asked on chelsea: IoU 0.999 at theta 0.6, min 0.768 (mean
    #: 0.887) at theta 0.1; none when no background word is asked.
    drop_asked_background: bool = True
    #: The CRF's bilateral colour image: "rgb" (the true image) or "released" (BGR minus the mean
    #: (104.008, 116.669, 122.675), cast to uint8 so negative values wrap modulo 256). Effect: IoU min
    #: 0.990 / 0.927 / 0.995 / 0.995, 0.14-1.8 % of labels.
    crf_colour: str = "rgb"
    #: Logit scale of the proposal softmax and the classifier's softmaxes: None = the model's own
    #: exp(logit_scale) (as the released code; 100 for the OpenAI weights, other CLIPs differ), or a
    #: fixed number (100.0 reproduces the engine before this field existed). Fixing 100 on random
    #: weights whose own scale is 14.3 changes the result entirely; with OpenAI's weights it is a no-op.
    logit_scale: float | None = None
    #: The released code rounds the interpolated positional embedding (CLS included, and also at the
    #: native grid, so the classifier too) to fp16; False keeps fp32. Effect: IoU min 1.0 / 0.993 / 1.0
    #: / 1.0, at most 0.13 % of labels.
    pos_embed_fp16: bool = False
    #: The rectangle prompt on the mask's true bounding box (True), or the released code's box of the
    #: bounding box's size centred on the centroid (False; shifted for lopsided masks). No preset draws it.
    rectangle_on_bbox: bool = True
    #: Released: a survivor whose CRF label is above the highest label present in the label map gets
    #: score 0 and no mask (one_hot without num_classes, then zip), and in referring mode the masks of
    #: the phrases that kept pixels move up to the first phrases. False: every survivor keeps its score
    #: and gets its own (possibly empty) mask. Not triggered on the benchmark photos.
    crf_label_quirk: bool = False
    #: Released: when every proposal of a step is all zero, the CRF uses the previous step's proposals
    #: (matched to the survivors by position). False: the step's own (empty) proposals. Not triggered
    #: on the benchmark photos.
    reuse_empty_proposals: bool = False

    def __post_init__(self) -> None:
        # Prompts are always drawn in VISUAL_PROMPTS order, so their listed order carries no meaning:
        # normalise it so equal configs compare (and hash into resume keys) equal.
        for name in ("prompts", "stuff_prompts"):
            value = getattr(self, name)
            if value is not None:
                ordered = (*(p for p in VISUAL_PROMPTS if p in value), *(p for p in value if p not in VISUAL_PROMPTS))
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
        if self.crf_colour not in CRF_COLOURS:
            raise ConfigError(f"Unknown CRF colour image {self.crf_colour!r}; choose from {', '.join(CRF_COLOURS)}.")
        if str(self.precision).lower() not in PRECISION_CHOICES:
            raise ConfigError(f"Unknown precision {self.precision!r}; choose from {', '.join(PRECISION_CHOICES)}.")
        if self.max_steps is not None and self.max_steps < 2:
            raise ConfigError("max_steps must be at least 2 (the first step never stops the loop), or None.")
        for name in ("proposal_long_side", "work_long_side"):
            value = getattr(self, name)
            if value is not None and value < 32:
                raise ConfigError(f"{name} must be at least 32 pixels, or None for no cap.")
        if self.logit_scale is not None and not 0.0 < float(self.logit_scale) <= 1000.0:
            raise ConfigError(f"logit_scale must lie in (0, 1000] or be None (got {self.logit_scale}).")
        if not self.templates:
            raise ConfigError("At least one classifier template is needed.")

    def replace(self, **changes) -> CaRConfig:
        return dataclasses.replace(self, **changes)

    released = _ReleasedMethod()

    def released_changes(self) -> dict:
        """The field values that make this config behave as the released code (for its preset)."""
        changes = dict(RELEASED_SWITCHES)
        if self.referring:
            # The released referring config has no semantic templates: one softmax over the
            # origami-templated phrases (its later steps index those strings as lists: not mirrored).
            changes.update(templates=RELEASED_REFERRING_TEMPLATES, double_softmax=False)
        return changes

    @property
    def is_released(self) -> bool:
        """True when every named deviation is at its released value."""
        return all(getattr(self, k) == v for k, v in self.released_changes().items())

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


#: The released code's value of every named deviation (semantic presets; referring adds its own).
#: Fields not listed (thresholds, prompts, models, SAM, device, precision) are the same in both.
RELEASED_SWITCHES: dict = dict(
    gray_correct_luminance=False,
    refine_box_edge_quirk=True,
    drop_asked_background=False,
    crf_colour="released",
    logit_scale=None,
    pos_embed_fp16=True,
    rectangle_on_bbox=False,
    crf_label_quirk=True,
    reuse_empty_proposals=True,
    stuff_prompts=None,          # the released CaR model prompts every concept alike
    max_steps=None,
    proposal_long_side=None,
    work_long_side=None,
    classifier_cls_block=-2,
    refine_layers=8,
    blur_kernel=15,
)


def preset(name: str, *, released: bool = False, **overrides) -> CaRConfig:
    """The config of a named preset, with optional field overrides.

    ``released=True`` turns every named deviation to the released code's behaviour first; explicit
    ``overrides`` still win.
    """
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}; choose from {', '.join(PRESETS)}.")
    config = CaRConfig(preset=name, **PRESETS[name])
    if released:
        config = config.released()
    return config.replace(**overrides) if overrides else config
