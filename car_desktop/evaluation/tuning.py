"""Calibrating CaR's thresholds on the user's own labelled images: a sweep of theta (keep a concept), eta
(binarise a proposal for the visual prompts) and optionally the visual prompts, scored by mIoU or by
presence F1, that reruns only what depends on the swept values. Also the tuned defaults a project keeps.

What depends on what (docs/engine.md, "Stages" and "Caches and the cost model"): the per-image proposal
pass and its refinement matrix depend on the image only; a step's proposals depend on the surviving
concepts and on whether it is the first step (raw text then, the origami template after), not on theta
or eta; a step's classifier scores depend on those proposals, eta and the prompts, not on theta; the
final masks (CRF, SAM) depend on the final proposals alone. So for each image the sweep keeps three
caches keyed by exactly those inputs and drives the ordinary loop (car_loop.run_car_loop) once per
setting through them: every setting costs a table look-up except the stage calls whose inputs are new.
``PassCounts`` tallies the stage calls made and those a naive sweep (one full CaR run per setting) would
make.

The model side is injected (``ImageStages``: engine/tuning.py wraps the pipeline; tests script it), so
this module is torch-free. Images are processed one at a time and their caches dropped after, so memory
stays at one image's proposals whatever the dataset size.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..cancel import CancelToken, check
from ..engine.car_loop import run_car_loop
from ..engine.config import CaRConfig, preset
from ..engine.errors import Cancelled, ConfigError
from . import metrics
from .labels import IGNORE
from .metrics import PresenceCounts

OBJECTIVES = ("miou", "presence-f1")
#: Project setting holding the tuned thresholds (a JSON object), read by batch runs and the window.
TUNED_SETTING = "tune.defaults"
TUNABLE = ("theta", "eta", "prompts")


class ImageStages(Protocol):
    """CaR's stages on one prepared image (the per-image pass is done when this object exists)."""

    def propose(self, surviving: tuple[int, ...], first_step: bool) -> np.ndarray:
        """(k, H, W) soft maps of the surviving concepts."""

    def classify(self, surviving: tuple[int, ...], maps: np.ndarray, eta: float,
                 prompts: tuple[str, ...] | None) -> np.ndarray:
        """(k,) scores P[i, i] of the surviving concepts."""

    def masks(self, survivors: tuple[int, ...], maps: np.ndarray) -> list[np.ndarray]:
        """Final (H, W) bool masks of the survivors at GT resolution (CRF, SAM)."""


class SkipImage(Exception):
    """Raised by ``TuneImage.prepare`` for an image that cannot take part (unreadable, wrong size)."""


@dataclass
class TuneImage:
    """One labelled image, loaded only when its turn comes: ``prepare()`` gives its GT map (0 background,
    i + 1 for concept i, -1 not scored) and its prepared stages."""

    name: str
    prepare: Callable[[], tuple[np.ndarray, ImageStages]]


@dataclass(frozen=True)
class Setting:
    theta: float
    eta: float
    prompts: tuple[str, ...] | None = None    # None: the config's own

    @property
    def label(self) -> str:
        text = f"theta {self.theta:.2f}, eta {self.eta:.2f}"
        return text + (f", prompts {'+'.join(self.prompts)}" if self.prompts is not None else "")


@dataclass
class PassCounts:
    """Stage calls: prepared images, proposal steps (one batched last-block pass each), prompted images
    scored by the classifier, final-mask runs (CRF and SAM)."""

    images: int = 0
    proposal_steps: int = 0
    classifier_images: int = 0
    mask_runs: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class SettingScore:
    setting: Setting
    confusion: np.ndarray
    presence: PresenceCounts = field(default_factory=PresenceCounts)

    @property
    def miou(self) -> float:
        return metrics.mean_iou(metrics.iou_per_class(self.confusion))

    @property
    def presence_f1(self) -> float:
        return self.presence.f1

    def value(self, objective: str) -> float:
        return self.miou if objective == "miou" else self.presence_f1


@dataclass
class SweepResult:
    scores: list[SettingScore]
    objective: str
    done: PassCounts
    naive: PassCounts
    images_done: int = 0
    cancelled: bool = False
    skipped: list[str] = field(default_factory=list)

    def best(self, reference: Setting | None = None) -> SettingScore:
        """The highest objective; ties go to the setting closest to ``reference`` (no needless change)."""
        def key(s: SettingScore) -> tuple[float, float]:
            v = s.value(self.objective)
            dist = (0.0 if reference is None
                    else abs(s.setting.theta - reference.theta) + abs(s.setting.eta - reference.eta))
            return (-math.inf if math.isnan(v) else v, -dist)
        return max(self.scores, key=key)


def parse_values(text: str, name: str) -> list[float]:
    """'0.2,0.4,0.6' or 'start:stop:step' (stop included) -> sorted values in [0, 1]."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0:
                raise ValueError
            count = math.floor((stop - start) / step + 1e-9) + 1
            if count > 1000:
                raise ConfigError(f"--{name} {text} would give {count} values; at most 1000")
            values = [round(start + k * step, 6) for k in range(max(0, count))]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--{name} must be a list like 0.2,0.4,0.6 or a range like 0.1:0.9:0.1 "
                          f"(got {text!r})") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise ConfigError(f"--{name} values must lie between 0 and 1 (got {text!r})")
    return sorted(set(values))


def grid(thetas: Sequence[float], etas: Sequence[float],
         prompt_sets: Sequence[tuple[str, ...] | None] = (None,)) -> list[Setting]:
    return [Setting(t, e, p) for p in prompt_sets for e in etas for t in thetas]


def _paint(survivors: Sequence[int], scores: dict[int, float], masks: Sequence[np.ndarray],
           shape: tuple[int, int]) -> tuple[np.ndarray, set[int]]:
    label = np.zeros(shape, np.int32)
    present: set[int] = set()
    for i, mask in sorted(zip(survivors, masks), key=lambda im: scores.get(im[0], 0.0)):
        if mask.any():
            label[mask] = i + 1          # ascending score: the higher score wins, as in the pipeline
            present.add(i + 1)
    return label, present


def sweep(images: Sequence[TuneImage], n_concepts: int, settings: Sequence[Setting], *, objective: str = "miou",
          max_steps: int = 10, progress: Callable[[int, int, str], Any] | None = None,
          cancel: CancelToken | None = None, stop: CancelToken | None = None) -> SweepResult:
    """Score every setting on every image; see the module docstring for what is computed once.

    ``progress(done, total, image name)`` counts (image, setting) pairs. ``stop`` ends the sweep after
    the current image, ``cancel`` at once (the current image is dropped); either way the result covers
    the images finished and says ``cancelled``.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; choose from {', '.join(OBJECTIVES)}")
    if not settings:
        raise ConfigError("nothing to sweep: no setting")
    n_classes = n_concepts + 1
    result = SweepResult([SettingScore(s, np.zeros((n_classes, n_classes), np.int64)) for s in settings],
                         objective, PassCounts(), PassCounts())
    total = len(images) * len(settings)
    for index, item in enumerate(images):
        if (stop is not None and stop.cancelled) or (cancel is not None and cancel.cancelled):
            result.cancelled = True
            break
        base = index * len(settings)
        report = None if progress is None else (lambda k, name, base=base: progress(base + k, total, name))
        try:
            _sweep_image(item, n_concepts, settings, result, max_steps, report, cancel)
        except Cancelled:
            result.cancelled = True
            break
        except SkipImage as exc:
            result.skipped.append(f"{item.name}: {exc}")
            continue
        result.images_done += 1
    return result


def _sweep_image(item: TuneImage, n_concepts: int, settings: Sequence[Setting], result: SweepResult,
                 max_steps: int, progress, cancel: CancelToken | None) -> None:
    done, naive = PassCounts(), PassCounts()
    gt, stages = item.prepare()
    done.images += 1
    proposals: dict[tuple, np.ndarray] = {}
    scores: dict[tuple, np.ndarray] = {}
    finals: dict[tuple, list[np.ndarray]] = {}
    n_classes = n_concepts + 1
    gt_present = {int(v) for v in np.unique(gt) if 0 < v < n_classes}
    confusions, presences = [], []
    state: dict[str, Any] = {}   # the setting being run and the cache key of the maps last proposed

    def propose(surviving: list[int], step: int) -> np.ndarray:
        key = (tuple(surviving), step == 1)
        state["maps"] = key
        naive.proposal_steps += 1
        if key not in proposals:
            proposals[key] = stages.propose(*key)
            done.proposal_steps += 1
        return proposals[key]

    def classify(surviving: list[int], maps: np.ndarray) -> np.ndarray:
        setting = state["setting"]
        key = (state["maps"], setting.eta, setting.prompts)
        naive.classifier_images += len(surviving)
        if key not in scores:
            scores[key] = np.asarray(stages.classify(tuple(surviving), maps, setting.eta, setting.prompts))
            done.classifier_images += len(surviving)
        return scores[key]

    for k, setting in enumerate(settings):
        check(cancel)
        state["setting"] = setting
        outcome = run_car_loop(n_concepts, propose, classify, setting.theta, max_steps, cancel=cancel)
        survivors = tuple(outcome.survivors)
        key = (state["maps"], survivors)
        naive.images += 1
        naive.mask_runs += 1
        if key not in finals:
            finals[key] = stages.masks(survivors, outcome.soft_maps)
            done.mask_runs += 1
        label, present = _paint(survivors, outcome.scores, finals[key], gt.shape)
        confusions.append(metrics.confusion_matrix(gt, label, n_classes, ignore_index=IGNORE))
        counts = PresenceCounts()
        for c in range(1, n_classes):
            counts.add(c in present, c in gt_present)
        presences.append(counts)
        if progress is not None:
            progress(k + 1, item.name)
    # Only a finished image counts: a cancelled one leaves the totals as they were.
    for score, conf, pres in zip(result.scores, confusions, presences):
        score.confusion += conf
        score.presence += pres
    for total, part in ((result.done, done), (result.naive, naive)):
        for name in total.__dict__:
            setattr(total, name, getattr(total, name) + getattr(part, name))


# ------------------------------------------------------------------------------------------ output
def format_curve(result: SweepResult, reference: Setting | None = None, width: int = 30) -> str:
    """The objective over the grid (theta rows, eta columns, one block per prompt set) and the theta curve
    at the best eta as bars; the best cell is starred."""
    best = result.best(reference)
    lines: list[str] = []
    by_prompts: dict[Any, list[SettingScore]] = {}
    for s in result.scores:
        by_prompts.setdefault(s.setting.prompts, []).append(s)
    for prompts, group in by_prompts.items():
        etas = sorted({s.setting.eta for s in group})
        thetas = sorted({s.setting.theta for s in group})
        table = {(s.setting.theta, s.setting.eta): s for s in group}
        if prompts is not None:
            lines.append(f"prompts {'+'.join(prompts)}:")
        lines.append(f"{result.objective:>12} | " + " ".join(f"eta {e:4.2f}" for e in etas))
        lines.append("-" * 13 + "+" + "-" * (9 * len(etas)))
        for t in thetas:
            cells = []
            for e in etas:
                cell = table.get((t, e))
                v = cell.value(result.objective) if cell is not None else math.nan
                mark = "*" if cell is best else " "
                cells.append(f"{metrics.fmt(v):>7}{mark} ")
            lines.append(f"theta {t:6.2f} | " + "".join(cells).rstrip())
        lines.append("")
    curve = [s for s in result.scores
             if s.setting.eta == best.setting.eta and s.setting.prompts == best.setting.prompts]
    lines.append(f"{result.objective} against theta at eta {best.setting.eta:.2f}:")
    for s in sorted(curve, key=lambda s: s.setting.theta):
        v = s.value(result.objective)
        bar = "#" * (0 if math.isnan(v) else round(width * max(0.0, v)))
        lines.append(f"  theta {s.setting.theta:4.2f} {metrics.fmt(v)} {bar}{' <- best' if s is best else ''}")
    return "\n".join(lines)


def format_passes(result: SweepResult) -> str:
    d, n = result.done, result.naive
    parts = []
    for label, a, b in (("image passes", d.images, n.images), ("proposal steps", d.proposal_steps, n.proposal_steps),
                        ("classifier images", d.classifier_images, n.classifier_images),
                        ("CRF/SAM runs", d.mask_runs, n.mask_runs)):
        ratio = f"{b / a:.1f}x fewer" if a else "none needed"
        parts.append(f"  {label:18} {a:6d}  (naive sweep: {b}; {ratio})")
    return "model work done against a naive sweep (one full CaR run per setting and image):\n" + "\n".join(parts)


# ------------------------------------------------------------------------------------------ tuned defaults
def tuned_record(best: SettingScore, config: CaRConfig, objective: str, images: int,
                 concepts: Sequence[str]) -> dict[str, Any]:
    """What ``tune --save`` stores in the project (TUNED_SETTING)."""
    return {"preset": config.preset, "theta": best.setting.theta, "eta": best.setting.eta,
            "prompts": list(best.setting.prompts) if best.setting.prompts is not None else None,
            "objective": objective, "value": metrics.nan_to_none(best.value(objective)), "images": images,
            "concepts": list(concepts), "saved_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}


def read_tuned(project) -> dict[str, Any] | None:
    """The project's tuned thresholds, or None when absent or not usable (checked, never trusted)."""
    value = project.get_setting(TUNED_SETTING)
    if not isinstance(value, dict) or not isinstance(value.get("preset"), str):
        return None
    try:
        theta, eta = float(value["theta"]), float(value["eta"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (0.0 <= theta <= 1.0 and 0.0 <= eta <= 1.0):
        return None
    prompts = value.get("prompts")
    if prompts is not None and not (isinstance(prompts, list) and all(isinstance(p, str) for p in prompts)):
        return None
    return {**value, "theta": theta, "eta": eta, "prompts": tuple(prompts) if prompts else None}


def with_tuned_defaults(config: CaRConfig, project, overridden: Iterable[str] | None = None
                        ) -> tuple[CaRConfig, dict[str, Any] | None]:
    """``config`` with the project's tuned theta / eta / prompts in place of the preset's, for the same
    preset only, and never over a value the user set: ``overridden`` names those fields; None infers
    them (a field differing from the preset's default was set by the user). Returns (config, the tuned
    record applied or None)."""
    tuned = read_tuned(project)
    if tuned is None or tuned["preset"] != config.preset:
        return config, None
    if overridden is None:
        base = preset(config.preset)
        overridden = {f for f in TUNABLE if getattr(config, f) != getattr(base, f)}
    changes = {f: tuned[f] for f in TUNABLE if f not in set(overridden) and tuned.get(f) is not None}
    if not changes:
        return config, None
    try:
        return config.replace(**changes), tuned
    except ConfigError:
        return config, None
