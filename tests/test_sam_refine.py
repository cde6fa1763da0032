"""SAM refinement of CaR masks: prompt derivation, the acceptance rules of both modes, cached encodes."""

from __future__ import annotations

import numpy as np
import pytest

from car_desktop.engine.cancel import CancelToken
from car_desktop.engine.errors import Cancelled
from car_desktop.engine.results import PassCounter
from car_desktop.engine.sam_interactive import SamPrediction, SamSession
from car_desktop.engine.sam_models import load_sam
from car_desktop.engine.sam_refine import (
    automatic_sam_masks,
    mask_iou,
    match_sam_masks,
    prompts_from_mask,
    refine_automatic,
    refine_prompted,
)

H, W = 60, 80


@pytest.fixture(scope="module")
def handle():
    return load_sam("tiny", None, "cpu")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:, :] = (30, 60, 140)
    img[10:40, 10:35] = (220, 40, 40)
    img[20:50, 50:75] = (240, 230, 30)
    return img


def _rect(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


# --------------------------------------------------------------------------- prompts
def test_prompts_from_a_two_component_mask():
    left, right = _rect(10, 40, 10, 35), _rect(20, 50, 50, 75)
    speck = _rect(2, 4, 2, 4)  # 4 pixels: not sizeable, must not stretch the box
    prompts = prompts_from_mask(left | right | speck)
    assert prompts.box == (10, 10, 74, 49)  # x0, y0, x1, y1 inclusive
    assert len(prompts.points) == len(prompts.labels) >= 2 and set(prompts.labels) == {1}
    in_left = [p for p in prompts.points if left[int(p[1]), int(p[0])]]
    in_right = [p for p in prompts.points if right[int(p[1]), int(p[0])]]
    assert in_left and in_right and len(in_left) + len(in_right) == len(prompts.points)
    # The first point of a rectangle is at its centre (distance-transform maximum), well inside it.
    x, y = in_left[0]
    assert 18 <= x <= 27 and 20 <= y <= 30


def test_prompt_limits_and_empty_mask():
    long_bar = _rect(28, 34, 2, 78)  # elongated: two points along it, far apart
    prompts = prompts_from_mask(long_bar, max_points_per_component=2)
    assert len(prompts.points) == 2
    assert abs(prompts.points[0][0] - prompts.points[1][0]) > 6
    assert len(prompts_from_mask(long_bar, max_points_per_component=1).points) == 1
    empty = prompts_from_mask(np.zeros((H, W), bool))
    assert empty.empty and empty.box is None and empty.points == ()
    # A lone small component is still used (the largest always counts).
    assert len(prompts_from_mask(_rect(5, 8, 5, 8)).points) == 1
    many = np.zeros((H, W), bool)
    for i in range(6):
        many[5:15, 2 + 13 * i: 12 + 13 * i] = True
    assert len(prompts_from_mask(many, max_points_per_component=1, max_components=4).points) == 4


# --------------------------------------------------------------------------- prompted acceptance rule
class FakeSession:
    """Returns fixed candidates; records calls."""

    def __init__(self, candidates: list[np.ndarray], predicted_ious: list[float] | None = None):
        self.candidates = candidates
        self.predicted_ious = predicted_ious or [0.9] * len(candidates)
        self.set_calls = 0
        self.calls: list[dict] = []

    def set_image(self, image):
        self.set_calls += 1

    def predict_candidates(self, points=(), labels=(), box=None, mask_input=None, multimask=True):
        self.calls.append(dict(points=points, labels=labels, box=box, multimask=multimask))
        return [SamPrediction(mask=m, iou=i, low_res_logits=np.zeros((1, 256, 256), np.float32))
                for m, i in zip(self.candidates, self.predicted_ious)]


def test_prompted_accepts_the_best_candidate_above_phi_iou(image):
    car = _rect(10, 40, 10, 35)
    close = _rect(10, 40, 10, 38)  # IoU 750/840 = 0.893
    far = _rect(0, 60, 0, 80)
    # SAM's own predicted IoU prefers the wrong candidate: the rule must use IoU against the CaR mask.
    fake = FakeSession([far, close], predicted_ious=[0.99, 0.5])
    [out] = refine_prompted(fake, image, [car], phi_iou=0.7)
    assert out.accepted and out.mask is close
    assert out.iou == pytest.approx(mask_iou(close, car)) == pytest.approx(750 / 840)
    call = fake.calls[0]
    assert call["box"] == (10, 10, 34, 39) and call["multimask"] and set(call["labels"]) == {1}


def test_prompted_keeps_the_car_mask_below_phi_iou(image):
    car = _rect(10, 40, 10, 35)
    close = _rect(10, 40, 10, 38)
    [out] = refine_prompted(FakeSession([close]), image, [car], phi_iou=0.95)
    assert not out.accepted and np.array_equal(out.mask, car)
    assert out.iou == pytest.approx(750 / 840)  # recorded even when rejected
    [out] = refine_prompted(FakeSession([np.zeros((H, W), bool)]), image, [car], phi_iou=0.0)
    assert not out.accepted and out.iou == 0.0 and np.array_equal(out.mask, car)  # empty SAM mask


def test_prompted_empty_car_masks_are_left_alone(image):
    fake = FakeSession([_rect(0, 10, 0, 10)])
    fractions: list[float] = []
    outs = refine_prompted(fake, image, [np.zeros((H, W), bool)] * 2, phi_iou=0.5, progress=fractions.append)
    assert [(o.accepted, o.iou, int(o.mask.sum())) for o in outs] == [(False, 0.0, 0)] * 2
    assert fractions == [0.5, 1.0]
    assert fake.set_calls == 0 and fake.calls == []
    with pytest.raises(ValueError, match="does not match"):
        refine_prompted(fake, image, [np.zeros((10, 10), bool)], phi_iou=0.5)


def test_prompted_is_cancellable(image):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        refine_prompted(FakeSession([]), image, [_rect(1, 5, 1, 5)], phi_iou=0.5, cancel=token)


@pytest.mark.slow
def test_prompted_on_tiny_sam_encodes_once_for_masks_and_clicks(handle, image):
    counter = PassCounter()
    session = SamSession(handle, counter)
    masks = [_rect(10, 40, 10, 35), _rect(20, 50, 50, 75), np.zeros((H, W), bool), _rect(10, 40, 10, 35)
             | _rect(20, 50, 50, 75)]
    outs = refine_prompted(session, image, masks, phi_iou=0.7)
    assert len(outs) == 4 and outs[2].accepted is False and outs[2].iou == 0.0
    for out, car in zip(outs, masks):
        assert out.mask.shape == (H, W) and out.mask.dtype == bool and 0.0 <= out.iou <= 1.0
        assert type(out.accepted) is bool and type(out.iou) is float
        assert out.accepted == (out.iou > 0.7)
        if not out.accepted:
            assert np.array_equal(out.mask, car)
    session.predict([(20, 20)], [1])
    session.predict([(20, 20), (60, 30)], [1, 0])
    refine_prompted(session, image.copy(), masks[:2], phi_iou=0.7)
    assert counter.sam_image_encodes == 1
    assert counter.sam_decodes == 3 + 2 + 2


# --------------------------------------------------------------------------- automatic matching rule
def test_automatic_matching_rule_with_injected_sam_masks():
    car = _rect(10, 40, 10, 40)                 # 900 px
    left, right = _rect(10, 40, 10, 25), _rect(10, 41, 25, 40)   # inside: IoM 1
    speck = _rect(20, 22, 20, 22)               # IoM 1 but under 5% of the car mask: ignored
    straddling = _rect(30, 60, 30, 80)          # IoM 100 / min(1500, 900) = 0.11: not kept
    out = match_sam_masks(car, [left, right, speck, straddling], phi_iou=0.7, phi_iom=0.7)
    expected = left | right
    assert type(out.accepted) is bool and type(out.iou) is float
    assert out.accepted and np.array_equal(out.mask, expected)
    assert out.iou == pytest.approx(mask_iou(expected, car))
    # A SAM mask over the whole image has IoM 1 with anything: the union then fails phi_iou.
    out = match_sam_masks(car, [left, right, np.ones((H, W), bool)], phi_iou=0.7, phi_iom=0.7)
    assert not out.accepted and np.array_equal(out.mask, car) and out.iou == pytest.approx(900 / (H * W))
    # Only the speck matches (ignored): nothing kept, CaR mask stays.
    out = match_sam_masks(car, [speck, straddling], phi_iou=0.7, phi_iom=0.7)
    assert not out.accepted and out.iou == 0.0
    # Stricter phi_iou rejects a union that a looser one accepts.
    half = match_sam_masks(car, [left], phi_iou=0.7, phi_iom=0.7)
    assert not half.accepted and half.iou == pytest.approx(450 / 900)
    assert match_sam_masks(car, [left], phi_iou=0.4, phi_iom=0.7).accepted
    empty = match_sam_masks(np.zeros((H, W), bool), [left], phi_iou=0.1, phi_iom=0.1)
    assert not empty.accepted and empty.iou == 0.0


def test_automatic_matching_accepts_generator_records():
    car = _rect(10, 40, 10, 40)
    # SamAutomaticMaskGenerator's bbox is XYWH with w = x_max - x_min (one pixel short).
    record = {"segmentation": car.copy(), "area": 900, "bbox": [10, 10, 29, 29]}
    out = match_sam_masks(car, [record], phi_iou=0.9, phi_iom=0.7)
    assert out.accepted and out.iou == pytest.approx(1.0)


def test_refine_automatic_with_injected_sam_masks_runs_no_generator(image):
    counter = PassCounter()
    car = _rect(10, 40, 10, 40)
    outs = refine_automatic(None, image, [car, np.zeros((H, W), bool)], 0.7, 0.7,
                            sam_masks=[_rect(10, 40, 10, 25), _rect(10, 40, 25, 40)], counter=counter)
    assert outs[0].accepted and outs[0].iou == pytest.approx(1.0) and not outs[1].accepted
    assert counter.sam_image_encodes == 0


@pytest.mark.slow
def test_automatic_end_to_end_on_tiny_sam(handle, image):
    counter = PassCounter()
    # Lenient thresholds so the random tiny SAM yields masks and the matching path runs on them.
    options = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.7)
    records = automatic_sam_masks(handle, image, points_per_side=4, counter=counter, **options)
    assert counter.sam_image_encodes == 1 and counter.sam_decodes == 1  # 16 points, one batch
    assert records and all(r["segmentation"].shape == (H, W) for r in records)
    masks = [_rect(10, 40, 10, 35), np.zeros((H, W), bool)]
    outs = refine_automatic(handle, image, masks, phi_iou=0.0, phi_iom=0.0, points_per_side=4, **options)
    expected = [match_sam_masks(m, records, 0.0, 0.0) for m in masks]
    for out, exp in zip(outs, expected):
        assert out.accepted == exp.accepted and out.iou == pytest.approx(exp.iou)
        assert np.array_equal(out.mask, exp.mask)
    # SAM's default thresholds: whatever survives, the outcome is well-formed.
    [out] = refine_automatic(handle, image, masks[:1], 0.7, 0.7, points_per_side=4)
    assert out.mask.shape == (H, W) and (out.accepted or np.array_equal(out.mask, masks[0]))


def test_automatic_is_cancellable(handle, image):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        refine_automatic(handle, image, [_rect(1, 5, 1, 5)], 0.7, 0.7, points_per_side=2, cancel=token)
