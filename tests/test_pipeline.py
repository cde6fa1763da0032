"""End-to-end CaR pipeline on tiny random-weight models: results, caching, bad inputs, cancel."""

from __future__ import annotations

import numpy as np
import pytest

from car_desktop.engine.cancel import CancelToken
from car_desktop.engine.config import preset
from car_desktop.engine.errors import Cancelled, ConceptError, ImageLoadError
from car_desktop.engine.pipeline import CaRPipeline
from car_desktop.engine.results import ConceptStatus

CONFIG = preset("objects", sam_mode="off", device="cpu")


@pytest.fixture(scope="module")
def pipe() -> CaRPipeline:
    return CaRPipeline(CONFIG, test_models=True)


def check_result(result, concepts_n, shape):
    assert len(result.concepts) == concepts_n
    assert result.image_size == shape
    assert result.test_models and "TEST MODELS" in result.warnings[0]
    kept = [c for c in result.concepts if c.status is not ConceptStatus.REMOVED]
    assert kept, "at least one concept always survives"
    for c in result.concepts:
        assert c.mask.shape == shape and c.mask.dtype == bool
        if c.status is ConceptStatus.REMOVED:
            assert not c.mask.any() and c.score == 0 and c.removed_at_step >= 1
        else:
            assert 0 <= c.score <= 1
    # the label map agrees with the masks: every labelled pixel belongs to that concept's mask
    for c in kept:
        assert not (result.label_map == c.index + 1)[~c.mask].any()
    assert len(result.steps) >= 2 or len(kept) == 0
    if len(kept) == 1:
        assert kept[0].status is ConceptStatus.KEPT_ALONE


@pytest.mark.parametrize("name", ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"])
def test_end_to_end_on_real_photos(pipe, data_dir, name):
    from car_desktop.engine.image_io import load_image

    image = load_image(data_dir / name)
    result = pipe.run(image, "person, cat, cup, sky")
    check_result(result, 4, image.shape[:2])
    assert {"proposals", "classifier", "crf"} <= set(result.timings)
    assert result.passes["classifier_image_passes"] == sum(len(s.surviving) for s in result.steps)
    assert result.passes["last_block_passes"] == len(result.steps)


@pytest.mark.slow
def test_second_run_reuses_image_features_and_matches_cold_run(data_dir):
    from car_desktop.engine.image_io import load_image

    image = load_image(data_dir / "chelsea.jpg")
    warm_pipe = CaRPipeline(CONFIG, test_models=True)
    first = warm_pipe.run(image, "cat, dog")
    assert first.passes["proposal_image_passes"] == 1
    warm = warm_pipe.run(image, "cat, dog, sofa")
    assert warm.passes["proposal_image_passes"] == 0
    cold = CaRPipeline(CONFIG, test_models=True).run(image, "cat, dog, sofa")
    assert cold.passes["proposal_image_passes"] == 1
    for a, b in zip(warm.concepts, cold.concepts):
        assert a.status == b.status and a.score == pytest.approx(b.score, abs=1e-5)
        assert (a.mask == b.mask).mean() > 0.999
    # texts already encoded are not encoded again
    assert warm.passes["text_encodes"] < cold.passes["text_encodes"]


def test_trace_and_soft_maps(pipe, two_colour_image):
    result = pipe.run(two_colour_image, ["red square", "yellow"], keep_soft_maps=True)
    assert result.steps[0].surviving == [0, 1]
    assert result.steps[0].soft_maps.shape == (2, 96, 128)
    assert set(result.steps[0].scores) == {0, 1}


def test_progress_reports_stages(pipe, two_colour_image):
    seen = []
    pipe.run(two_colour_image, "a, b", progress=lambda p: seen.append((p.stage, p.step)))
    stages = [s for s, _ in seen]
    assert "proposals" in stages and "classifier" in stages and stages[-1] == "done"
    assert ("proposals", 2) in seen


def test_cancel_mid_run_raises_and_pipeline_stays_usable(pipe, two_colour_image):
    token = CancelToken()

    def progress(p):
        if p.stage == "classifier":
            token.cancel()

    with pytest.raises(Cancelled):
        pipe.run(two_colour_image, "a, b, c", progress=progress, cancel=token)
    again = pipe.run(two_colour_image, "a, b, c")
    assert len(again.concepts) == 3


def test_single_concept_is_kept_without_competition(pipe, two_colour_image):
    result = pipe.run(two_colour_image, "dog")
    (c,) = result.concepts
    assert c.status is ConceptStatus.KEPT_ALONE and c.status_text == "kept without competition"


@pytest.mark.parametrize("concepts", ["", " , ,", "|"])
def test_empty_concepts(pipe, two_colour_image, concepts):
    with pytest.raises(ConceptError):
        pipe.run(two_colour_image, concepts)


def test_duplicates_long_and_background_concepts_warn(pipe, two_colour_image):
    result = pipe.run(two_colour_image, ["sky", "Sky", "dog", " ".join(["very"] * 100) + " long"])
    assert [c.name for c in result.concepts][:2] == ["sky", "dog"] and len(result.concepts) == 3
    text = " ".join(result.warnings)
    assert "more than once" in text and "shortened" in text and "sky" in text


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 7, 3), (5, 1, 3), (40, 30)])
def test_tiny_and_grey_arrays(pipe, shape):
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    result = pipe.run(image, "a, b")
    assert result.label_map.shape == shape[:2]


def test_rgba_array(pipe):
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 4), dtype=np.uint8)
    assert pipe.run(image, "a").image_size == (30, 40)


_MEMORY_PROBE = """
import json, resource, tracemalloc
import numpy as np
from car_desktop.engine.config import preset
from car_desktop.engine.pipeline import CaRPipeline
pipe = CaRPipeline(preset("objects", sam_mode="off", device="cpu"), test_models=True)
pipe.run(np.zeros((64, 80, 3), np.uint8), "bright, dark")        # models loaded, caches warm
image = np.zeros((8000, 10000, 3), np.uint8)
image[:, 5000:] = 200
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
tracemalloc.start()
result = pipe.run(image, "bright, dark")
_, traced = tracemalloc.get_traced_memory()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"size": list(result.image_size), "traced": traced, "rss_growth": after - before}))
"""


@pytest.mark.slow
def test_huge_image_memory_bounded():
    """10000x8000: the work resolution and proposal cap bound memory (masks are full size, bool).

    Run in a fresh process so its peak resident size counts torch's allocations too (tracemalloc sees
    only Python's): the input is 240 MB; two full-size bool masks and the int32 label map add 480 MB;
    one full-size float map would add 320 MB per concept, a full-resolution CLIP pass gigabytes."""
    import json
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", _MEMORY_PROBE], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["size"] == [8000, 10000]
    assert got["traced"] < 900e6, f"Python peak {got['traced'] / 1e6:.0f} MB"
    assert got["rss_growth"] < 1.0e9, f"process peak grew by {got['rss_growth'] / 1e6:.0f} MB"


def test_image_paths_and_bad_files(pipe, tmp_path, data_dir):
    assert pipe.run(data_dir / "coffee.jpg", "cup").image_size[0] > 0
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageLoadError):
        pipe.run(bad, "cup")
    with pytest.raises(ImageLoadError):
        pipe.run(tmp_path / "missing.png", "cup")


def test_exif_rotated_jpeg_masks_follow_display(pipe, tmp_path):
    """A photo stored sideways with an EXIF rotation: the engine segments it as displayed, so its masks
    are, pixel for pixel, those of the stored pixels turned the way a viewer turns them."""
    from PIL import Image

    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:, :30] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    stored = np.asarray(Image.open(path).convert("RGB"))       # the pixels as stored, not turned
    displayed = np.ascontiguousarray(np.rot90(stored, k=-1))   # turned clockwise, as a viewer shows it
    assert displayed[:30].mean() > 200 and displayed[30:].mean() < 50   # white on top once displayed
    result = pipe.run(path, "white, black")
    expected = pipe.run(displayed, "white, black")
    assert result.image_size == (60, 40)
    for got, want in zip(result.concepts, expected.concepts, strict=True):
        assert got.status == want.status and np.array_equal(got.mask, want.mask)
    assert np.array_equal(result.label_map, expected.label_map)


def _final_maps(result):
    """The last step's soft proposals by concept index (the maps the masks are cut from)."""
    last = result.steps[-1]
    return dict(zip(last.surviving, last.soft_maps, strict=True))


def test_referring_mode(two_colour_image):
    """Each phrase is its own phrase-against-background problem: without the CRF its mask is its own
    map above eta, whatever the other phrases' maps say (so phrases may overlap)."""
    config = preset("referring", sam_mode="off", device="cpu", use_crf=False)
    pipe = CaRPipeline(config, test_models=True)
    result = pipe.run(two_colour_image, "the red square on the left, the yellow half", keep_soft_maps=True)
    assert len(result.concepts) == 2 and result.label_map.shape == (96, 128)
    maps = _final_maps(result)
    kept = [c for c in result.concepts if c.status is not ConceptStatus.REMOVED]
    assert kept and all(i in maps for i in (c.index for c in kept))
    for c in kept:
        assert np.array_equal(c.mask, maps[c.index] > config.eta)
        assert maps[c.index].min() >= 0.0 and maps[c.index].max() <= 1.0


def test_without_crf(pipe, two_colour_image, monkeypatch):
    """use_crf=False: the CRF never runs, and each pixel goes to the concept with the highest proposal
    (background where none beats one minus the highest). With the CRF on, the spy sees it run."""
    from car_desktop.engine import crf

    calls = []
    for name in ("dense_crf", "dense_crf_isolated"):
        real = getattr(crf, name)
        monkeypatch.setattr(crf, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    result = pipe.run(two_colour_image, "a, b", config=CONFIG.replace(use_crf=False), keep_soft_maps=True)
    assert calls == []
    maps = _final_maps(result)
    order = sorted(maps)
    stacked = np.stack([maps[i] for i in order])
    labels = np.concatenate([1.0 - stacked.max(axis=0, keepdims=True), stacked]).argmax(axis=0)
    for r, i in enumerate(order):
        assert np.array_equal(result.concepts[i].mask, labels == r + 1)
    pipe.run(two_colour_image, "a, b", config=CONFIG.replace(crf_in_subprocess=False))
    assert calls == ["dense_crf"]   # the control: the spy does see the CRF when it is on


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["prompted", "automatic"])
def test_sam_refinement_in_the_pipeline(two_colour_image, mode):
    """SAM runs after the CRF on the tiny SAM; each kept concept records whether SAM's mask was taken."""
    config = preset("objects", sam_mode=mode, sam_points_per_side=4, device="cpu")
    pipe = CaRPipeline(config, test_models=True)
    result = pipe.run(two_colour_image, "red square, yellow")
    kept = [c for c in result.concepts if c.status is not ConceptStatus.REMOVED]
    assert "sam" in result.timings
    for c in kept:
        assert c.sam_accepted in (True, False) and (c.sam_iou is None or 0 <= c.sam_iou <= 1)
    assert result.passes["sam_image_encodes"] == 1
    if mode == "prompted":
        # the cached embedding serves a second run and the annotator's clicks on the same image
        again = pipe.run(two_colour_image, "red square, yellow, blue")
        assert again.passes["sam_image_encodes"] == 0
        session = pipe.sam_session()
        session.set_image(two_colour_image)
        click = session.predict(points=[(30, 45)], labels=[1])
        assert click.mask.shape == (96, 128)
        assert pipe.counter.sam_image_encodes == 1


@pytest.mark.slow
def test_cli_segment_with_sam(tmp_path, data_dir):
    import json

    from PIL import Image

    from car_desktop.cli import main

    assert main(["--test-models", "segment", str(data_dir / "coffee.jpg"), "--concepts", "cup, table",
                 "--sam", "prompted", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "coffee_summary.json").read_text())
    assert "sam" in summary["timings"] and summary["config"]["sam_mode"] == "prompted"
    kept = [c for c in summary["concepts"] if c["status"] != "removed"]
    assert kept and all(c["sam_accepted"] in (True, False) for c in kept)
    for i, c in enumerate(summary["concepts"]):
        mask = np.asarray(Image.open(tmp_path / f"coffee_{i:02d}_{c['name']}.png")) > 0
        assert int(mask.sum()) == c["pixels"]
