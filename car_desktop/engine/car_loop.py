"""The recurrent loop of CLIP as RNN: propose, classify, drop the concepts that are not there, repeat.

Pure control flow over two injected callables, so the stop rule and the removals can be tested with
a deterministic scorer and no model. The state is the list of surviving concept indices; it only
shrinks. Scores are compared with theta in float32, as the released code compares a float32 tensor
with a Python float. See docs/engine.md, "The recurrent loop".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .cancel import CancelToken, check
from .results import StepTrace

#: propose(surviving indices, step) -> (k, H, W) soft maps in [0, 1], one per surviving index.
ProposeFn = Callable[[list[int], int], np.ndarray]
#: classify(surviving indices, soft maps) -> (k,) scores P[i, i] of the surviving concepts.
ClassifyFn = Callable[[list[int], np.ndarray], np.ndarray]


@dataclass
class LoopOutcome:
    survivors: list[int]                 # concept indices alive at the end, ascending
    soft_maps: np.ndarray                # (len(survivors), H, W) proposals of the last step
    scores: dict[int, float]             # last classifier score of each survivor
    removed: dict[int, tuple[int, float]] = field(default_factory=dict)  # index -> (step, score)
    steps: list[StepTrace] = field(default_factory=list)
    converged: bool = True               # False when the step cap stopped the loop
    #: Maps for post-processing: ``soft_maps``, or with ``reuse_empty_proposals`` an earlier step's
    #: when every map of a step was all zero (then they belong to that step's survivors, by position).
    crf_maps: np.ndarray | None = None


def run_car_loop(
    n_concepts: int,
    propose: ProposeFn,
    classify: ClassifyFn,
    theta: float,
    max_steps: int | None = 10,
    *,
    cancel: CancelToken | None = None,
    keep_soft_maps: bool = False,
    reuse_empty_proposals: bool = False,
) -> LoopOutcome:
    """Run the loop until the surviving set stops changing (never after step 1) or the cap is hit.

    ``max_steps=None``: no cap (the set only shrinks, so at most ``n_concepts + 1`` steps).
    ``reuse_empty_proposals``: the released code's rule for ``crf_maps`` (see LoopOutcome).
    """
    surviving = list(range(n_concepts))
    outcome = LoopOutcome(survivors=surviving, soft_maps=np.zeros((0, 0, 0), np.float32), scores={})
    theta32 = np.float32(theta)
    previous_maps: np.ndarray | None = None
    last_step = (n_concepts + 1) if max_steps is None else max_steps
    for step in range(1, last_step + 1):
        check(cancel)
        maps = propose(surviving, step)
        check(cancel)
        scores = np.asarray(classify(surviving, maps), dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(surviving):
            raise ValueError(f"classifier returned {scores.shape[0]} scores for {len(surviving)} concepts")
        keep_mask = scores.astype(np.float32) > theta32  # strict, as in the paper
        if not keep_mask.any():
            keep_mask[int(np.argmax(scores))] = True  # at least one concept always survives
        kept = [idx for idx, k in zip(surviving, keep_mask) if k]
        by_index = {idx: float(s) for idx, s in zip(surviving, scores)}
        outcome.steps.append(StepTrace(step=step, surviving=list(surviving), scores=by_index, kept=kept,
                                       soft_maps=maps.copy() if keep_soft_maps else None))
        for idx in surviving:
            if idx not in kept:
                outcome.removed[idx] = (step, by_index[idx])
        crf_maps = maps
        if reuse_empty_proposals and previous_maps is not None and (maps.size == 0 or float(maps.max()) == 0.0):
            crf_maps = previous_maps
        previous_maps = crf_maps
        if kept == surviving and step > 1:
            outcome.survivors, outcome.soft_maps, outcome.crf_maps = kept, maps, crf_maps
            outcome.scores = {i: by_index[i] for i in kept}
            return outcome
        outcome.survivors, outcome.soft_maps = surviving, maps
        outcome.scores = by_index
        surviving = kept
    # Step cap: the last step's removals stand; survivors' maps come from a step they took part in.
    rows = [outcome.survivors.index(i) for i in surviving]
    outcome.soft_maps = outcome.soft_maps[rows]
    outcome.scores = {i: outcome.scores[i] for i in surviving}
    outcome.survivors = surviving
    outcome.crf_maps = outcome.soft_maps
    outcome.converged = False
    return outcome


def proposal_texts(names: Sequence[str], step: int, template: str) -> list[str]:
    """Raw concept text in step 1, the origami template from step 2 on."""
    return list(names) if step == 1 else [template.format(n) for n in names]
