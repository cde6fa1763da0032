"""SAM refinement of CaR's masks, the two modes of docs/engine.md ("Post-processing").

* prompted (the app's default, cheap): one cached image embedding (``SamSession``), then per CaR mask
  one decoder run prompted with the mask's box and a few positive points inside each sizeable
  component (distance-transform maxima), multimask output. The candidate with the best IoU against
  the CaR mask replaces it only if that IoU exceeds ``phi_iou``; otherwise the CaR mask stays.
* automatic (the paper's): SAM's automatic mask generator over the whole image; for each CaR mask the
  union of the SAM masks whose intersection-over-minimum with it exceeds ``phi_iom`` (SAM masks that
  cover under 5% of the CaR mask are ignored) replaces it only if its IoU with the CaR mask exceeds
  ``phi_iou``.

Every outcome records whether SAM's mask was accepted and the IoU that decided it. An empty CaR mask is
returned unchanged and not accepted; SAM producing nothing usable is a normal outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from ..arrays import check_mask
from .cancel import CancelToken, check
from .image_io import as_rgb_uint8
from .results import PassCounter
from .sam_interactive import SamPrediction
from .sam_models import SamHandle

log = logging.getLogger(__name__)

#: SAM masks covering less than this fraction of a CaR mask are ignored in automatic matching.
MIN_COVER_FRACTION = 0.05


@dataclass
class RefineOutcome:
    """One CaR mask after refinement.

    ``mask`` is SAM's mask when ``accepted``, else the CaR mask itself; ``iou`` is the IoU between the
    best SAM proposal and the CaR mask (0 when SAM proposed nothing or the CaR mask was empty).
    """

    mask: np.ndarray
    accepted: bool
    iou: float


@dataclass(frozen=True)
class MaskPrompts:
    """SAM prompts derived from one mask: an (x0, y0, x1, y1) box and positive (x, y) points."""

    box: tuple[int, int, int, int] | None
    points: tuple[tuple[float, float], ...]
    labels: tuple[int, ...]

    @property
    def empty(self) -> bool:
        return self.box is None and not self.points


class PromptedSession(Protocol):
    """What ``refine_prompted`` needs of a session (``SamSession`` provides it; tests inject fakes)."""

    def set_image(self, image: np.ndarray) -> Any: ...

    def predict_candidates(self, points: Sequence[tuple[float, float]] = (), labels: Sequence[int] = (),
                           box: Any = None, mask_input: np.ndarray | None = None,
                           multimask: bool = True) -> list[SamPrediction]: ...


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (0 when both are empty)."""
    union = int(np.count_nonzero(a | b))
    return int(np.count_nonzero(a & b)) / union if union else 0.0


def prompts_from_mask(
    mask: np.ndarray,
    max_points_per_component: int = 2,
    min_component_area: int | None = None,
    max_components: int = 4,
) -> MaskPrompts:
    """Box and positive points for SAM from a boolean mask (pure function).

    Components are 8-connected. A component is *sizeable* when its area is at least
    ``min_component_area`` (default: the larger of 16 pixels and 5% of the mask's area); the largest
    component always counts, and at most ``max_components`` (largest first) are used. Each sizeable
    component gets up to ``max_points_per_component`` points at maxima of its distance transform (the
    centre of its largest inscribed disc, then of the largest disc centred farther than twice the radius
    from the points already taken, as long as it is at least half as deep as the first). The box is the
    tight box (inclusive pixel coordinates, like SAM's) of the sizeable components, so far-away specks do
    not inflate it. An empty mask gives empty prompts.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"A mask must be 2-D, got shape {mask.shape}.")
    total = int(np.count_nonzero(mask))
    if total == 0:
        return MaskPrompts(box=None, points=(), labels=())
    if min_component_area is None:
        min_component_area = max(16, int(round(0.05 * total)))
    n, cc, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    order = sorted(range(1, n), key=lambda i: -int(stats[i, cv2.CC_STAT_AREA]))
    chosen = [i for rank, i in enumerate(order)
              if rank == 0 or stats[i, cv2.CC_STAT_AREA] >= min_component_area][:max(1, max_components)]
    points: list[tuple[float, float]] = []
    boxes: list[tuple[int, int, int, int]] = []
    for i in chosen:
        x, y, w, h = (int(stats[i, k]) for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP,
                                                  cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
        boxes.append((x, y, x + w - 1, y + h - 1))
        comp = np.zeros((h + 2, w + 2), np.uint8)  # zero border: the crop edge counts as boundary
        comp[1:-1, 1:-1] = cc[y:y + h, x:x + w] == i
        points.extend((float(x + c - 1), float(y + r - 1))
                      for r, c in _distance_maxima(comp, max_points_per_component))
    x0s, y0s, x1s, y1s = zip(*boxes)
    box = (min(x0s), min(y0s), max(x1s), max(y1s))
    return MaskPrompts(box=box, points=tuple(points), labels=(1,) * len(points))


def _distance_maxima(comp: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Up to ``count`` (row, col) maxima of the distance transform of a uint8 component, spread apart."""
    dist = cv2.distanceTransform(comp, cv2.DIST_L2, 5)
    rows, cols = np.ogrid[: dist.shape[0], : dist.shape[1]]
    found: list[tuple[int, int]] = []
    first = 0.0
    for _ in range(max(1, count)):
        r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
        depth = float(dist[r, c])
        if depth <= 0 or (found and depth < 0.5 * first):
            break
        if not found:
            first = depth
        found.append((int(r), int(c)))
        radius = max(depth, 1.0) * 2.0  # suppress the inscribed disc and its neighbourhood
        dist[(rows - r) ** 2 + (cols - c) ** 2 <= radius * radius] = 0
    return found


def refine_prompted(
    session: PromptedSession,
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    phi_iou: float,
    *,
    multimask: bool = True,
    cancel: CancelToken | None = None,
    progress: Callable[[float], None] | None = None,
    **prompt_options: Any,
) -> list[RefineOutcome]:
    """Prompted SAM refinement of each CaR mask (see the module docstring); one outcome per mask.

    The image is embedded at most once (none at all when every mask is empty, and not again when the
    session already holds its embedding); each non-empty mask costs one decoder run.
    ``prompt_options`` go to ``prompts_from_mask``.
    """
    image = as_rgb_uint8(image)
    shape = image.shape[:2]
    masks = [check_mask(m, shape, "CaR mask") for m in masks]
    outcomes: list[RefineOutcome] = []
    image_set = False
    for n, car in enumerate(masks):
        check(cancel)
        prompts = prompts_from_mask(car, **prompt_options)
        if prompts.empty:
            outcomes.append(RefineOutcome(mask=car, accepted=False, iou=0.0))
            if progress is not None:
                progress((n + 1) / len(masks))
            continue
        if not image_set:
            session.set_image(image)
            image_set = True
        candidates = session.predict_candidates(
            points=list(prompts.points), labels=list(prompts.labels), box=prompts.box, multimask=multimask,
        )
        best_mask, best_iou = None, 0.0
        for cand in candidates:
            iou = mask_iou(cand.mask, car)
            if best_mask is None or iou > best_iou:
                best_mask, best_iou = cand.mask, iou
        accepted = best_mask is not None and best_iou > phi_iou
        outcomes.append(RefineOutcome(mask=best_mask if best_mask is not None and accepted else car,
                                      accepted=accepted, iou=best_iou))
        if progress is not None:
            progress((n + 1) / len(masks))
    log.debug("Prompted SAM: %d of %d masks accepted", sum(o.accepted for o in outcomes), len(outcomes))
    return outcomes


# --------------------------------------------------------------------------- automatic mode
@dataclass
class _Region:
    mask: np.ndarray
    area: int
    bbox: tuple[int, int, int, int]  # x, y, w, h


def _as_region(item: Any) -> _Region | None:
    """A SAM mask (bool array, or a SamAutomaticMaskGenerator record) with its area and box."""
    if isinstance(item, dict):
        seg = np.asarray(item["segmentation"], bool)
        area = item.get("area")
        bbox = item.get("bbox")
    else:
        seg, area, bbox = np.asarray(item, bool), None, None
    area = int(np.count_nonzero(seg)) if area is None else int(area)
    if area == 0:
        return None
    if bbox is None:
        ys = np.flatnonzero(seg.any(axis=1))
        xs = np.flatnonzero(seg.any(axis=0))
        bbox = (int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1))
    x, y, w, h = (int(round(v)) for v in bbox)
    # SAM's records give XYWH with w, h = max - min (one short); take one more pixel to be safe.
    return _Region(mask=seg, area=area, bbox=(x, y, w + 1, h + 1))


def match_sam_masks(
    car_mask: np.ndarray,
    sam_masks: Sequence[Any],
    phi_iou: float,
    phi_iom: float,
    min_cover: float = MIN_COVER_FRACTION,
) -> RefineOutcome:
    """The automatic mode's rule for one CaR mask over SAM's masks (bool arrays or generator records).

    Keep each SAM mask S with |S & C| / |C| >= ``min_cover`` and |S & C| / min(|S|, |C|) > ``phi_iom``;
    accept their union U only if IoU(U, C) > ``phi_iou``.
    """
    car = np.asarray(car_mask, bool)
    car_area = int(np.count_nonzero(car))
    if car_area == 0:
        return RefineOutcome(mask=car, accepted=False, iou=0.0)
    union = np.zeros_like(car)
    kept = 0
    for item in sam_masks:
        region = _as_region(item)
        if region is None:
            continue
        if region.mask.shape != car.shape:
            raise ValueError(f"A SAM mask of shape {region.mask.shape} does not match {car.shape}.")
        x, y, w, h = region.bbox
        sl = (slice(max(y, 0), y + h), slice(max(x, 0), x + w))
        inter = int(np.count_nonzero(region.mask[sl] & car[sl]))
        if inter < min_cover * car_area:
            continue
        if inter / min(region.area, car_area) > phi_iom:
            union[sl] |= region.mask[sl]
            kept += 1
    iou = mask_iou(union, car) if kept else 0.0
    accepted = bool(kept > 0 and iou > phi_iou)
    return RefineOutcome(mask=union if accepted else car, accepted=accepted, iou=iou)


def automatic_sam_masks(
    handle: SamHandle,
    image: np.ndarray,
    points_per_side: int = 32,
    counter: PassCounter | None = None,
    cancel: CancelToken | None = None,
    **generator_options: Any,
) -> list[dict[str, Any]]:
    """SAM's automatic mask generator over ``image``: its records (``segmentation``, ``area``, ``bbox``...).

    ``generator_options`` go to ``SamAutomaticMaskGenerator`` (its thresholds, crops, batch size).
    The counter counts the generator's encoder runs and decoder batches; ``cancel`` is checked between
    decoder batches.
    """
    if points_per_side < 1:
        raise ValueError("points_per_side must be at least 1.")
    image = as_rgb_uint8(image)
    generator = handle.new_mask_generator(points_per_side=int(points_per_side), **generator_options)
    predictor = generator.predictor
    set_image, predict_torch = predictor.set_image, predictor.predict_torch

    def counted_set_image(*args, **kwargs):
        check(cancel)
        if counter is not None:
            counter.sam_image_encodes += 1
        handle.encode(set_image, predictor, *args, **kwargs)  # bf16 encoder where the handle has it

    def counted_predict_torch(*args, **kwargs):
        check(cancel)
        if counter is not None:
            counter.sam_decodes += 1
        return predict_torch(*args, **kwargs)

    predictor.set_image = counted_set_image            # instance attributes shadow the methods
    predictor.predict_torch = counted_predict_torch
    records = generator.generate(image)
    log.debug("Automatic SAM (%d points per side): %d masks", points_per_side, len(records))
    return records


def refine_automatic(
    handle: SamHandle,
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    phi_iou: float,
    phi_iom: float,
    points_per_side: int = 32,
    *,
    counter: PassCounter | None = None,
    cancel: CancelToken | None = None,
    sam_masks: Sequence[Any] | None = None,
    **generator_options: Any,
) -> list[RefineOutcome]:
    """Automatic SAM refinement of each CaR mask (see the module docstring); one outcome per mask.

    The generator runs once per call, and not at all when every mask is empty or when ``sam_masks``
    (its earlier records, or plain bool masks) are given.
    """
    image = as_rgb_uint8(image)
    shape = image.shape[:2]
    masks = [check_mask(m, shape, "CaR mask") for m in masks]
    if sam_masks is None and any(m.any() for m in masks):
        sam_masks = automatic_sam_masks(handle, image, points_per_side, counter, cancel, **generator_options)
    outcomes = []
    for car in masks:
        check(cancel)
        outcomes.append(match_sam_masks(car, sam_masks or (), phi_iou, phi_iom))
    return outcomes
