"""The recurrent loop's stop rule, removals and step cap, driven by a deterministic scorer."""

from __future__ import annotations

import numpy as np
import pytest

from car_desktop.engine.cancel import CancelToken
from car_desktop.engine.car_loop import proposal_texts, run_car_loop
from car_desktop.engine.errors import Cancelled


def fake_propose(calls):
    def propose(surviving, step):
        calls.append((list(surviving), step))
        # each concept's map carries its index, so we can check which maps come back
        return np.stack([np.full((4, 5), i / 10, np.float32) for i in surviving])
    return propose


def table_scorer(table):
    """scores[step][concept] from a dict; concepts not listed score 0."""
    def classify(surviving, maps):
        step = len(seen) + 1
        seen.append(step)
        return np.array([table.get(step, table[max(table)]).get(i, 0.0) for i in surviving])
    seen: list[int] = []
    return classify


def test_all_kept_stops_after_two_steps():
    calls = []
    out = run_car_loop(3, fake_propose(calls), table_scorer({1: {0: .9, 1: .8, 2: .7}}), theta=0.5)
    assert [c[1] for c in calls] == [1, 2]          # the first step never stops the loop
    assert out.survivors == [0, 1, 2] and out.removed == {} and out.converged
    assert [s.step for s in out.steps] == [1, 2]


def test_removal_then_convergence():
    calls = []
    table = {1: {0: .9, 1: .2, 2: .7}, 2: {0: .8, 2: .1}, 3: {0: 1.0}, 4: {0: 1.0}}
    out = run_car_loop(3, fake_propose(calls), table_scorer(table), theta=0.5)
    assert list(calls) == [([0, 1, 2], 1), ([0, 2], 2), ([0], 3)]
    assert out.survivors == [0]
    assert out.removed == {1: (1, .2), 2: (2, .1)}
    assert out.scores == {0: 1.0}
    np.testing.assert_allclose(out.soft_maps[0], 0.0)  # concept 0's map from the last step
    assert out.steps[1].surviving == [0, 2] and out.steps[1].kept == [0]


def test_none_above_theta_keeps_best_only():
    out = run_car_loop(3, fake_propose([]), table_scorer({1: {0: .1, 1: .3, 2: .2}, 2: {1: 1.0}}), theta=0.5)
    assert out.survivors == [1]
    assert out.removed == {0: (1, .1), 2: (1, .2)}


def test_threshold_is_strict():
    out = run_car_loop(2, fake_propose([]), table_scorer({1: {0: .5, 1: .9}, 2: {1: 1.0}}), theta=0.5)
    assert out.survivors == [1] and out.removed[0] == (1, .5)


def test_step_cap_keeps_last_removals_and_matching_maps():
    # the set shrinks at every step; cap at 2 steps
    calls = []
    table = {1: {0: .9, 1: .9, 2: .1}, 2: {0: .9, 1: .1}}
    out = run_car_loop(3, fake_propose(calls), table_scorer(table), theta=0.5, max_steps=2)
    assert not out.converged
    assert out.survivors == [0]
    assert out.soft_maps.shape[0] == 1
    np.testing.assert_allclose(out.soft_maps[0], 0.0)
    assert out.removed == {2: (1, .1), 1: (2, .1)}


def test_cancel_between_steps():
    token = CancelToken()

    def classify(surviving, maps):
        token.cancel()
        return np.ones(len(surviving))

    with pytest.raises(Cancelled):
        run_car_loop(2, fake_propose([]), classify, theta=0.5, cancel=token)


def test_soft_maps_kept_in_trace_on_request():
    out = run_car_loop(2, fake_propose([]), table_scorer({1: {0: .9, 1: .9}}), theta=.5, keep_soft_maps=True)
    assert out.steps[0].soft_maps.shape == (2, 4, 5)


def test_proposal_texts_switch_template_after_step_one():
    assert proposal_texts(["dog"], 1, "a clean origami {}.") == ["dog"]
    assert proposal_texts(["dog"], 2, "a clean origami {}.") == ["a clean origami dog."]


def test_theta_is_compared_in_float32():
    """float32(0.6) is 0.6000000238 in float64: the released code compares in float32, so it is not above 0.6."""
    at_theta = float(np.float32(0.6))
    assert at_theta > 0.6
    table = {1: {0: at_theta, 1: 0.7}}
    out = run_car_loop(2, fake_propose([]), table_scorer(table), theta=0.6)
    assert out.survivors == [1] and out.removed[0][0] == 1


def test_no_step_cap_runs_until_convergence():
    # One concept removed per step: 6 concepts need 6 steps to end, more than a cap of 3 allows.
    table = {s: {i: (0.9 if i >= s else 0.1) for i in range(6)} for s in range(1, 8)}
    capped = run_car_loop(6, fake_propose([]), table_scorer(table), theta=0.5, max_steps=3)
    assert not capped.converged and len(capped.steps) == 3
    free = run_car_loop(6, fake_propose([]), table_scorer(table), theta=0.5, max_steps=None)
    assert free.converged and free.survivors == [5] and len(free.steps) == 6


def test_all_zero_proposals_reuse_the_previous_steps_maps():
    """Released rule: when every map of a step is zero the CRF gets the previous step's maps."""
    def propose(surviving, step):
        if step == 1:
            return np.stack([np.full((4, 5), (i + 1) / 10, np.float32) for i in surviving])
        return np.zeros((len(surviving), 4, 5), np.float32)

    table = {1: {0: 0.2, 1: 0.9, 2: 0.8}, 2: {1: 0.9, 2: 0.8}}
    out = run_car_loop(3, propose, table_scorer(table), theta=0.5, reuse_empty_proposals=True)
    assert out.survivors == [1, 2] and out.soft_maps.max() == 0
    assert out.crf_maps.shape[0] == 3 and out.crf_maps[0, 0, 0] == pytest.approx(0.1)  # step 1's rows
    plain = run_car_loop(3, propose, table_scorer(table), theta=0.5)
    assert plain.crf_maps is plain.soft_maps
