"""The threshold sweep on a synthetic dataset driven by scripted stages (as the loop tests script the
classifier): it finds the theta known to be best for either objective, reuses every stage whose inputs
did not change (the counts of real stage calls against a naive sweep), stops cleanly, and the tuned
defaults a project stores are applied only where the user did not set a value."""

from __future__ import annotations

import numpy as np
import pytest

from car_desktop.annotations import Project
from car_desktop.engine.cancel import CancelToken
from car_desktop.engine.config import preset
from car_desktop.evaluation.tuning import (
    TUNED_SETTING,
    Setting,
    TuneImage,
    format_curve,
    format_passes,
    grid,
    parse_values,
    sweep,
    with_tuned_defaults,
)

H, W = 12, 18
N = 3  # concepts


def region(i: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[:, 6 * i: 6 * i + 6] = True   # concept i owns a vertical band
    return m


class ScriptedStages:
    """Present concepts score 0.45, absent ones 0.35 (so only 0.35 < theta < 0.45 keeps exactly the
    present ones); a lone survivor scores 1 as in CaR. Masks are each concept's band; an absent concept's
    band is background in GT, so keeping it costs IoU. Counts every call."""

    def __init__(self, present: set[int], calls: dict[str, int]) -> None:
        self.present = present
        self.calls = calls

    def propose(self, surviving, first_step):
        self.calls["propose"] += 1
        return np.stack([region(i).astype(np.float32) for i in surviving])

    def classify(self, surviving, maps, eta, prompts):
        self.calls["classify"] += len(surviving)
        if len(surviving) == 1:
            return np.ones(1)
        return np.array([0.45 if i in self.present else 0.35 for i in surviving])

    def masks(self, survivors, maps):
        self.calls["masks"] += 1
        return [region(i) for i in survivors]


def dataset(calls):
    presents = [{0, 1}, {1, 2}, {0, 2}]

    def image(k: int) -> TuneImage:
        def prepare():
            calls["prepare"] += 1
            gt = np.zeros((H, W), np.int32)
            for i in presents[k]:
                gt[region(i)] = i + 1
            gt[0, 0] = -1   # an unscored pixel
            return gt, ScriptedStages(presents[k], calls)
        return TuneImage(f"im{k}", prepare)

    return [image(k) for k in range(len(presents))]


def new_calls() -> dict[str, int]:
    return {"prepare": 0, "propose": 0, "classify": 0, "masks": 0}


THETAS = parse_values("0.1:0.9:0.1", "thetas")


@pytest.mark.parametrize("objective", ["miou", "presence-f1"])
def test_sweep_finds_the_known_best_theta(objective):
    calls = new_calls()
    result = sweep(dataset(calls), N, grid(THETAS, [0.4]), objective=objective)
    best = result.best()
    assert best.setting.theta == pytest.approx(0.4)
    assert best.value(objective) == pytest.approx(1.0)
    others = [s.value(objective) for s in result.scores if s is not best]
    assert max(others) < 1.0
    text = format_curve(result)
    assert "<- best" in text and "theta 0.40" in text


def test_sweep_reuses_stages_and_counts_the_saving():
    calls = new_calls()
    result = sweep(dataset(calls), N, grid(THETAS, [0.4]))
    # Per image: distinct proposal steps are (all, step 1), (all, later), (present pair, later), (best
    # alone, later); a naive sweep runs two steps for each of the 9 thetas.
    assert result.done.proposal_steps == calls["propose"] == 3 * 4
    assert result.naive.proposal_steps == 3 * 9 * 2
    # Classifier images: 3 + 3 + 2 + 1 once per image against 3 x (3+3) + (3+2) + 5 x (3+1) naively.
    assert result.done.classifier_images == calls["classify"] == 3 * 9
    assert result.naive.classifier_images == 3 * 43
    assert result.done.mask_runs == calls["masks"] == 3 * 3 and result.naive.mask_runs == 3 * 9
    assert result.done.images == calls["prepare"] == 3 and result.naive.images == 27
    assert "fewer" in format_passes(result)


def test_eta_and_prompts_reuse_proposals_and_only_rerun_the_classifier():
    calls = new_calls()
    result = sweep(dataset(calls), N, grid(THETAS, [0.4, 0.6], [("circle",), ("blur", "gray")]))
    assert len(result.scores) == 9 * 2 * 2
    assert result.done.proposal_steps == 3 * 4            # proposals do not depend on eta or prompts
    assert result.done.classifier_images == 3 * 9 * 4     # scored again per (eta, prompts)
    assert result.done.mask_runs == 3 * 3                 # final masks depend on the proposals only


def test_stop_after_the_current_image_keeps_what_is_finished():
    calls = new_calls()
    stop = CancelToken()
    seen = []

    def progress(done, total, name):
        seen.append((done, total, name))
        if name == "im0":
            stop.cancel()

    result = sweep(dataset(calls), N, grid(THETAS, [0.4]), progress=progress, stop=stop)
    assert result.cancelled and result.images_done == 1 and calls["prepare"] == 1
    assert seen[-1] == (9, 27, "im0")
    alone = sweep(dataset(new_calls())[:1], N, grid(THETAS, [0.4]))
    for a, b in zip(result.scores, alone.scores):
        np.testing.assert_array_equal(a.confusion, b.confusion)


def test_cancel_drops_the_image_in_progress():
    calls = new_calls()
    cancel = CancelToken()

    def progress(done, total, name):
        if done == 12:      # in the middle of the second image
            cancel.cancel()

    result = sweep(dataset(calls), N, grid(THETAS, [0.4]), progress=progress, cancel=cancel)
    assert result.cancelled and result.images_done == 1
    assert sum(int(s.confusion.sum()) for s in result.scores) == 9 * (H * W - 1)


def test_parse_values_ranges_and_errors():
    assert parse_values("0.2,0.4", "x") == [0.2, 0.4]
    assert parse_values("0.1:0.3:0.1", "x") == pytest.approx([0.1, 0.2, 0.3])
    from car_desktop.engine.errors import ConfigError

    for bad in ("abc", "0.5:0.1:-1", "1.5", "0:1:0.0001"):
        with pytest.raises(ConfigError):
            parse_values(bad, "x")


def test_tuned_defaults_apply_to_the_same_preset_and_never_over_user_values(tmp_path):
    with Project.create(tmp_path / "p.cardb", tmp_path) as project:
        base = preset("objects")
        assert with_tuned_defaults(base, project) == (base, None)
        project.set_setting(TUNED_SETTING, {"preset": "objects", "theta": 0.35, "eta": 0.55,
                                            "prompts": ["blur"], "objective": "miou"})
        tuned, record = with_tuned_defaults(base, project)
        assert (tuned.theta, tuned.eta, tuned.prompts) == (0.35, 0.55, ("blur",)) and record is not None
        user = base.replace(theta=0.7)
        kept, _ = with_tuned_defaults(user, project)          # the user's theta stays, eta is tuned
        assert (kept.theta, kept.eta) == (0.7, 0.55)
        explicit, _ = with_tuned_defaults(base, project, overridden={"eta"})
        assert (explicit.theta, explicit.eta) == (0.35, 0.4)
        other = preset("scene")
        assert with_tuned_defaults(other, project) == (other, None)
        project.set_setting(TUNED_SETTING, {"preset": "objects", "theta": 7, "eta": 0.5})   # corrupt: ignored
        assert with_tuned_defaults(base, project) == (base, None)


def test_setting_label():
    assert Setting(0.3, 0.5, ("circle", "blur")).label == "theta 0.30, eta 0.50, prompts circle+blur"
