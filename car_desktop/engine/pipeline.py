"""The CaR pipeline: models loaded once, then ``run(image, concepts)`` for as many images as needed.

It glues the stages together — proposals (proposals.py), visual prompts (visual_prompts.py), the
classifier (classifier.py), the recurrent loop (car_loop.py), the dense CRF (crf.py) and SAM
refinement (sam_refine.py) — reports progress, honours cancellation between stages, times each stage
and counts model passes. Work that depends on the image alone (the proposal image pass and its
attention matrix, the SAM embedding) and text embeddings are cached inside the stages, so a second
run on the same image with other concepts only pays for what is new.

Very large images are processed at a working resolution (long side ``config.work_long_side``) and the
final masks are resized back to full resolution, so memory and CRF time stay bounded. docs/engine.md
walks through the whole run; ``CaRConfig.released()`` makes it behave as the authors' released code.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .cancel import CancelToken, check
from .car_loop import proposal_texts, run_car_loop
from .concepts import Concept, ConceptList, parse_concepts
from .config import CaRConfig
from .image_io import as_rgb_uint8
from .results import CaRResult, ConceptResult, ConceptStatus, PassCounter, Progress

if TYPE_CHECKING:  # the engine's torch modules load on first use, not on import
    from .classifier import MaskClassifier
    from .clip_models import ClipModel
    from .proposals import ProposalGenerator
    from .sam_interactive import SamSession
    from .text_encoder import TextEncoder

log = logging.getLogger(__name__)

ProgressFn = Callable[[Progress], None]
TEST_MODELS_WARNING = "TEST MODELS: tiny random-weight models are in use; the masks mean nothing."


def resize_long_side(image: np.ndarray, long_side: int | None) -> np.ndarray:
    """``image`` shrunk (area interpolation) so its long side is at most ``long_side`` (None: unchanged)."""
    h, w = image.shape[:2]
    if long_side is None or max(h, w) <= long_side:
        return image
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == tuple(shape):
        return mask.astype(bool)
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)


def effective_background(config: CaRConfig, concepts: Sequence[Concept], warnings: list[str]) -> list[str]:
    """Background words minus any that the user asked for (otherwise "sky" would suppress "sky").

    With ``config.drop_asked_background`` off (the released code) the list is used as it is.
    """
    if not config.drop_asked_background:
        return list(config.background_words)
    asked = {s.strip().casefold() for c in concepts for s in c.synonyms}
    kept = [b for b in config.background_words if b.strip().casefold() not in asked]
    dropped = [b for b in config.background_words if b.strip().casefold() in asked]
    if dropped:
        warnings.append(f"Background word(s) {', '.join(dropped)} not used as background: you asked for them.")
    return kept


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


class CaRPipeline:
    """CaR with its models. Create once, reuse for many images; thread-safe (one run at a time)."""

    def __init__(self, config: CaRConfig | None = None, *, test_models: bool = False,
                 text_disk_cache: bool | None = None) -> None:
        self.config = config or CaRConfig()
        self.test_models = test_models
        #: Keep text embeddings on disk too (user cache folder), so a new start does not re-encode them.
        #: None: on for real models, off for the tiny test models (instant to encode).
        self.text_disk_cache = (not test_models) if text_disk_cache is None else text_disk_cache
        self.counter = PassCounter()
        self._lock = threading.RLock()
        self._clips: dict[tuple, ClipModel] = {}
        self._text_encoder: TextEncoder | None = None
        self._generators: dict[str, ProposalGenerator] = {}
        self._classifiers: dict[str, MaskClassifier] = {}
        self._sam_session: SamSession | None = None
        self._warned_test_models = False

    # ----- models -------------------------------------------------------------------------------
    def _clip(self, name: str, pretrained: str | None, role: str, config: CaRConfig):
        from . import clip_models

        key: tuple
        if self.test_models:
            key = ("test", role if not (role == "classifier" and config.referring) else "proposal",
                   config.precision)
            if key not in self._clips:
                proposal, classifier = clip_models.load_test_models(device=config.device, precision=config.precision)
                self._clips[("test", "proposal", config.precision)] = proposal
                self._clips[("test", "classifier", config.precision)] = classifier
            return self._clips[key]
        key = (name, pretrained, config.device, config.precision, config.quick_gelu)
        if key not in self._clips:
            self._clips[key] = clip_models.load_clip(name, pretrained, device=config.device,
                                                     precision=config.precision, quick_gelu=config.quick_gelu)
        return self._clips[key]

    def stages(self, config: CaRConfig):
        """The (proposal generator, classifier) pair for ``config``'s models, built once and shared."""
        from .classifier import MaskClassifier
        from .proposals import ProposalGenerator
        from .text_encoder import TextEncoder

        if self._text_encoder is None:
            self._text_encoder = TextEncoder(self.counter, disk_cache=self.text_disk_cache)
        p_clip = self._clip(config.proposal_model, config.proposal_pretrained, "proposal", config)
        c_clip = self._clip(config.classifier_model, config.classifier_pretrained, "classifier", config)
        # Stages cache per-image work; they are kept per model and refreshed only for a new config.
        gen_key = (f"{p_clip.key}|{config.proposal_long_side}|{config.refine_layers}|{config.refine_box_edge_quirk}"
                   f"|{config.pos_embed_fp16}|{config.logit_scale}")
        if gen_key not in self._generators:
            self._generators[gen_key] = ProposalGenerator(p_clip, config, self._text_encoder, self.counter)
        cls_key = (f"{c_clip.key}|{config.classifier_cls_block}|{config.pos_embed_fp16}|{config.logit_scale}"
                   f"|{config.double_softmax}")
        if cls_key not in self._classifiers:
            self._classifiers[cls_key] = MaskClassifier(c_clip, config, self._text_encoder, self.counter)
        return self._generators[gen_key], self._classifiers[cls_key]

    def load_models(self, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> None:
        """Load the CLIP models (and SAM when enabled) now instead of at the first run."""
        with self._lock:
            if progress:
                progress(Progress("loading models", message="CLIP"))
            self.stages(self.config)
            check(cancel)
            if self.config.sam_mode != "off":
                if progress:
                    progress(Progress("loading models", message="SAM"))
                self.sam_session(self.config)

    @property
    def device(self) -> str:
        """The device actually used ("cpu", "cuda", ...): the loaded models', else what auto resolves to."""
        for clip in self._clips.values():
            return str(clip.device)
        from .device import resolve_device

        return str(resolve_device(self.config.device))

    @property
    def model_names(self) -> dict[str, str]:
        c = self.config
        if self.test_models:
            return {"proposal": "car-tiny-b16 (random test weights)",
                    "classifier": "car-tiny-l14 (random test weights)", "sam": "tiny SAM (random test weights)"}
        return {"proposal": f"{c.proposal_model} ({c.proposal_pretrained})",
                "classifier": f"{c.classifier_model} ({c.classifier_pretrained})",
                "sam": "off" if c.sam_mode == "off" else c.sam_model}

    def sam_session(self, config: CaRConfig | None = None):
        """The shared SAM session (embedding cache) used both by refinement and by the GUI's clicks."""
        from .sam_interactive import SamSession
        from .sam_models import load_sam

        config = config or self.config
        with self._lock:
            wanted = "tiny" if self.test_models else config.sam_model
            # The tiny test SAM is too small for bf16 to pay: "auto" means fp32 there (as for test CLIP).
            precision = "fp32" if self.test_models and config.precision == "auto" else config.precision
            if self._sam_session is not None and (self._sam_session.handle.model_type != wanted
                                                  or self._sam_session.handle.precision_choice != precision):
                self._sam_session = None  # another SAM model or precision was chosen
            if self._sam_session is None:
                if self.test_models:
                    handle = load_sam("tiny", None, device=config.device, precision=precision)
                else:
                    from .model_manager import resolve_sam_checkpoint

                    handle = load_sam(config.sam_model, resolve_sam_checkpoint(config.sam_model),
                                      device=config.device, precision=precision)
                self._sam_session = SamSession(handle, self.counter)
            return self._sam_session

    # ----- running ------------------------------------------------------------------------------
    def run(
        self,
        image: np.ndarray | str | Path,
        concepts: str | Sequence[str] | ConceptList,
        *,
        config: CaRConfig | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
        keep_soft_maps: bool = False,
    ) -> CaRResult:
        """Segment ``concepts`` in ``image``; see results.py for what comes back."""
        config = config or self.config
        warnings: list[str] = []
        if isinstance(image, (str, Path)):
            from .image_io import load_image

            image = load_image(image)
        full = as_rgb_uint8(image)
        concept_list = parse_concepts(concepts, warnings)
        if self.test_models:
            warnings.insert(0, TEST_MODELS_WARNING)  # in every result; logged once per pipeline
            if not self._warned_test_models:
                self._warned_test_models = True
                log.warning(TEST_MODELS_WARNING)

        def report(stage: str, step: int | None = None, message: str = "") -> None:
            if progress is not None:
                progress(Progress(stage, step=step, message=message))

        with self._lock:
            before = self.counter.snapshot()
            timer = _Timer()
            with timer("load models"):
                report("loading models")
                if config.use_crf and config.crf_in_subprocess:
                    from .crf import start_helper

                    start_helper()  # starts while the proposals run
                generator, classifier = self.stages(config)
            for clip in {id(c): c for c in (generator.clip, classifier.clip)}.values():
                warnings.extend(n for n in clip.notes if n not in warnings)
            check(cancel)
            work = resize_long_side(full, config.work_long_side)
            background = [config.proposal_template.format(b)
                          for b in effective_background(config, concept_list, warnings)]
            with timer("proposals"):
                report("proposals", 1, "image features")
                feats = generator.prepare(work)
            check(cancel)

            current_step = 1

            def propose(surviving: list[int], step: int) -> np.ndarray:
                nonlocal current_step
                current_step = step  # classify() always follows the propose() of the same step
                report("proposals", step)
                texts = proposal_texts([concept_list[i].text for i in surviving], step, config.proposal_template)
                with timer("proposals"):
                    return generator.propose(feats, texts, background, referring=config.referring, lam=config.lam)

            def classify(surviving: list[int], maps: np.ndarray) -> np.ndarray:
                from .visual_prompts import apply_visual_prompts

                report("classifier", current_step)
                with timer("classifier"):
                    images = [
                        apply_visual_prompts(work, maps[r] > config.eta, config.prompts_for(concept_list[i].name),
                                             soft_map=maps[r], blur_kernel=config.blur_kernel,
                                             correct_gray=config.gray_correct_luminance,
                                             rectangle_on_bbox=config.rectangle_on_bbox)
                        for r, i in enumerate(surviving)
                    ]
                    check(cancel)
                    scores = classifier.score(images, [concept_list[i].text for i in surviving], config.templates)
                return np.diag(scores)

            outcome = run_car_loop(len(concept_list), propose, classify, config.theta, config.max_steps,
                                   cancel=cancel, keep_soft_maps=keep_soft_maps,
                                   reuse_empty_proposals=config.reuse_empty_proposals)
            if not outcome.converged:
                warnings.append(f"The loop stopped at the step cap ({config.max_steps}) before converging.")
            check(cancel)

            with timer("crf"):
                report("crf")
                crf_maps = outcome.crf_maps if outcome.crf_maps is not None else outcome.soft_maps
                rows = self._masks_from_maps(work, crf_maps, config, cancel)
            check(cancel)
            # Row r goes to the r-th survivor (more rows than survivors only when an earlier step's
            # maps were reused). Fewer rows only with crf_label_quirk: the rest get no mask, score 0.
            empty = np.zeros(full.shape[:2], bool)
            masks = {i: resize_mask(rows[r], full.shape[:2]) if r < len(rows) else empty
                     for r, i in enumerate(outcome.survivors)}
            zeroed = set(outcome.survivors[len(rows):])
            if zeroed:
                names = ", ".join(concept_list[i].name for i in sorted(zeroed))
                warnings.append(f"Released behaviour: no CRF label left for {names}, so score 0 and no mask.")

            sam_info: dict[int, tuple[bool, float]] = {}
            if config.sam_mode != "off" and masks:
                with timer("sam"):
                    report("sam")
                    masks, sam_info = self._refine_with_sam(full, masks, config, cancel)
            check(cancel)

            result = self._assemble(full, concept_list, outcome, masks, sam_info, warnings, config, zeroed)
            result.timings = dict(timer.timings)
            result.passes = self.counter.since(before)
            report("done")
            return result

    def _masks_from_maps(self, work: np.ndarray, maps: np.ndarray, config: CaRConfig,
                         cancel: CancelToken | None = None) -> list[np.ndarray]:
        """One mask row per map (the r-th survivor's), from the CRF or, without it, the argmax.

        With ``config.crf_label_quirk`` the rows are the released code's: one per label up to the
        highest label present (so trailing survivors may get none), and in referring mode only the
        phrases whose CRF kept pixels, moved up in order.
        """
        from .crf import dense_crf, dense_crf_isolated

        def crf(probs: np.ndarray) -> np.ndarray:
            if config.crf_in_subprocess:
                return dense_crf_isolated(work, probs, config.crf, cancel, colour=config.crf_colour)
            return dense_crf(work, probs, config.crf, colour=config.crf_colour)

        k = maps.shape[0]
        if k == 0:
            return []
        quirk = config.crf_label_quirk and config.use_crf
        if config.referring:
            # Each phrase is its own 2-label problem: phrases may overlap.
            if not config.use_crf:
                return [maps[r] > config.eta for r in range(k)]
            per_phrase = [crf(maps[r:r + 1]) == 1 for r in range(k)]
            return [m for m in per_phrase if m.any()] if quirk else per_phrase
        if config.use_crf:
            labels = crf(maps)
        else:
            stacked = np.concatenate([1.0 - maps.max(axis=0, keepdims=True), maps], axis=0)
            labels = stacked.argmax(axis=0)
        present = int(labels.max()) if quirk else k
        return [labels == r + 1 for r in range(present)]

    def _refine_with_sam(self, image, masks, config, cancel):
        from . import sam_refine

        order = sorted(masks)
        mask_list = [masks[i] for i in order]
        if config.sam_mode == "automatic":
            session = self.sam_session(config)
            outcomes = sam_refine.refine_automatic(session.handle, image, mask_list, config.phi_iou,
                                                   config.phi_iom, config.sam_points_per_side,
                                                   counter=self.counter, cancel=cancel)
        else:
            outcomes = sam_refine.refine_prompted(self.sam_session(config), image, mask_list, config.phi_iou,
                                                  cancel=cancel)
        check(cancel)
        refined = {i: o.mask.astype(bool) for i, o in zip(order, outcomes)}
        info = {i: (bool(o.accepted), float(o.iou)) for i, o in zip(order, outcomes)}
        return refined, info

    def _assemble(self, full, concept_list, outcome, masks, sam_info, warnings, config,
                  zeroed=frozenset()) -> CaRResult:
        h, w = full.shape[:2]
        alone = len(outcome.survivors) == 1
        results: list[ConceptResult] = []
        for idx, concept in enumerate(concept_list):
            if idx in outcome.removed and idx not in outcome.survivors:
                step, score = outcome.removed[idx]
                results.append(ConceptResult(idx, concept, np.zeros((h, w), bool), 0.0,
                                             ConceptStatus.REMOVED, removed_at_step=step, removed_score=score))
                continue
            accepted, iou = sam_info.get(idx, (None, None))
            results.append(ConceptResult(
                idx, concept, masks[idx], 0.0 if idx in zeroed else outcome.scores[idx],
                ConceptStatus.KEPT_ALONE if alone else ConceptStatus.KEPT, sam_accepted=accepted, sam_iou=iou))
        label_map = np.zeros((h, w), np.int32)
        for c in sorted((c for c in results if c.status is not ConceptStatus.REMOVED), key=lambda c: c.score):
            label_map[c.mask] = c.index + 1  # ascending score: the higher score wins overlaps
        return CaRResult(concepts=results, steps=outcome.steps, label_map=label_map, image_size=(h, w),
                         warnings=warnings, test_models=self.test_models, config=config.to_dict(),
                         model_names=self.model_names)


_shared: dict[bool, CaRPipeline] = {}
_shared_lock = threading.Lock()


def shared_pipeline(test_models: bool = False, config: CaRConfig | None = None) -> CaRPipeline:
    """One pipeline (and so one set of models) per process, created lazily."""
    with _shared_lock:
        if test_models not in _shared:
            _shared[test_models] = CaRPipeline(config, test_models=test_models)
        elif config is not None:
            _shared[test_models].config = config
        return _shared[test_models]
