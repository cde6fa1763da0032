"""The pipeline's released-code switches and its bf16 path, on the tiny random-weight models."""

from __future__ import annotations

import numpy as np
import pytest

from car_desktop.engine.config import preset
from car_desktop.engine.pipeline import CaRPipeline
from car_desktop.engine.results import ConceptStatus

CONFIG = preset("objects", sam_mode="off", device="cpu", crf_in_subprocess=False)


@pytest.fixture(scope="module")
def pipe() -> CaRPipeline:
    return CaRPipeline(CONFIG, test_models=True)


def _three_maps(h: int = 48, w: int = 64) -> np.ndarray:
    maps = np.zeros((3, h, w), np.float32)
    maps[0, :, : w // 2] = 0.9          # left half
    maps[1, :, w // 2:] = 0.9           # right half
    maps[2] = 0.05                      # everywhere weak: the CRF never labels it
    return maps


def test_label_quirk_drops_survivors_above_the_highest_label(pipe):
    image = np.full((48, 64, 3), 128, np.uint8)
    maps = _three_maps()
    rows = pipe._masks_from_maps(image, maps, CONFIG)
    assert len(rows) == 3 and not rows[2].any() and rows[0][:, :20].all()
    quirk = pipe._masks_from_maps(image, maps, CONFIG.replace(crf_label_quirk=True))
    assert len(quirk) == 2                                    # label 3 absent: no row for it
    np.testing.assert_array_equal(quirk[1], rows[1])
    swapped = pipe._masks_from_maps(image, maps[[2, 0, 1]], CONFIG.replace(crf_label_quirk=True))
    assert len(swapped) == 3 and not swapped[0].any()         # absent below the highest label: empty row


def test_label_quirk_in_referring_mode_moves_masks_up(pipe):
    image = np.full((48, 64, 3), 128, np.uint8)
    maps = _three_maps()[[2, 0, 1]]                           # the first phrase gets nothing
    config = preset("referring", sam_mode="off", device="cpu", crf_in_subprocess=False)
    rows = pipe._masks_from_maps(image, maps, config)
    quirk = pipe._masks_from_maps(image, maps, config.replace(crf_label_quirk=True))
    assert len(rows) == 3 and not rows[0].any()
    assert len(quirk) == 2
    np.testing.assert_array_equal(quirk[0], rows[1])          # phrase 2's mask now sits first


def test_survivor_without_a_row_gets_score_zero_and_a_warning(pipe, two_colour_image, monkeypatch):
    baseline = pipe.run(two_colour_image, "cat, dog", config=CONFIG.replace(theta=0.0))
    kept = [c.index for c in baseline.concepts if c.status is not ConceptStatus.REMOVED]
    assert kept == [0, 1]
    original = CaRPipeline._masks_from_maps
    monkeypatch.setattr(CaRPipeline, "_masks_from_maps",
                        lambda self, work, maps, config, cancel=None: original(self, work, maps, config, cancel)[:1])
    result = pipe.run(two_colour_image, "cat, dog", config=CONFIG.replace(theta=0.0))
    assert result.concepts[0].score == pytest.approx(baseline.concepts[0].score)
    assert result.concepts[1].score == 0.0 and not result.concepts[1].mask.any()
    assert any("no CRF label left for dog" in w for w in result.warnings)


def test_released_run_keeps_asked_background_and_is_deterministic(pipe, two_colour_image):
    released = CONFIG.released().replace(crf_in_subprocess=False)
    first = pipe.run(two_colour_image, "sky, grass, a red square", config=released)
    assert not any("not used as background" in w for w in first.warnings)
    again = pipe.run(two_colour_image, "sky, grass, a red square", config=released)
    for a, b in zip(first.concepts, again.concepts):
        assert a.score == b.score and np.array_equal(a.mask, b.mask)
    plain = pipe.run(two_colour_image, "sky, grass, a red square", config=CONFIG)
    assert any("not used as background" in w for w in plain.warnings)
    # The background competes in the proposal softmax: keeping "sky" and "grass" changes step 1's scores.
    assert first.steps[0].scores != plain.steps[0].scores


def test_bf16_run_agrees_with_fp32(two_colour_image, data_dir):
    """The bf16 path (autocast on the CPU) gives the fp32 survivors and close scores. On these tiny
    models within 3e-2; the engine benchmark holds the real architectures to 1e-2."""
    from car_desktop.engine.image_io import load_image

    image = load_image(data_dir / "chelsea.jpg")
    fp32 = CaRPipeline(CONFIG.replace(precision="fp32"), test_models=True).run(image, "cat, dog, grass")
    bf16_pipe = CaRPipeline(CONFIG.replace(precision="bf16"), test_models=True)
    bf16 = bf16_pipe.run(image, "cat, dog, grass")
    gen = next(iter(bf16_pipe._generators.values()))
    assert gen.clip.precision.name == "bf16" and gen.clip.dtype.is_floating_point
    assert [s.surviving for s in fp32.steps] == [s.surviving for s in bf16.steps]
    for a, b in zip(fp32.steps, bf16.steps):
        for i in a.scores:
            assert abs(a.scores[i] - b.scores[i]) < 3e-2


def test_clip_loading_notes_reach_the_result(pipe, two_colour_image):
    clip = next(iter(pipe._generators.values())).clip
    clip.notes.append("CLIP car-tiny-b16: a note about its activation.")
    try:
        result = pipe.run(two_colour_image, "cat, dog")
    finally:
        clip.notes.clear()
    assert "CLIP car-tiny-b16: a note about its activation." in result.warnings
