"""``car-desktop tune`` end to end with the tiny test models on a project with reviewed images: it prints the
best setting, its curve and the saving, ``--save`` stores it, and a later ``batch`` run uses it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from car_desktop.annotations import Project
from car_desktop.autolabel import LAST_RUN_SETTING, run_key
from car_desktop.cli import main
from car_desktop.engine.config import preset
from car_desktop.evaluation.tuning import TUNED_SETTING

H, W = 40, 56


@pytest.fixture
def reviewed_project(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / name)
    path = tmp_path / "p.cardb"
    with Project.create(path, folder) as p:
        recs = {r.rel_path: r.id for r in p.add_images(folder)}
        cat, sky = p.get_or_create_category("cat"), p.get_or_create_category("sky | heaven")
        for name in ("a.png", "b.png"):
            m = np.zeros((H, W), bool)
            m[10:30, 10:40] = True
            p.add_annotation(recs[name], cat.id, m)
            s = np.zeros((H, W), bool)
            s[:8] = True
            p.add_annotation(recs[name], sky.id, s)
            p.set_image_status(recs[name], "reviewed")
    return path, folder


@pytest.mark.slow
def test_tune_prints_the_best_setting_saves_it_and_batch_uses_it(reviewed_project, capsys):
    path, folder = reviewed_project
    assert main(["--test-models", "tune", str(path), "--thetas", "0.3,0.9", "--etas", "0.5", "--save"]) == 0
    out = capsys.readouterr().out
    assert "2 labelled image(s)" in out and "concepts: cat, sky" in out
    assert "best: theta" in out and "<- best" in out and "fewer" in out
    assert "engine passes measured" in out
    with Project.open(path) as p:
        tuned = p.get_setting(TUNED_SETTING)
    assert tuned["preset"] == "objects" and tuned["images"] == 2 and tuned["objective"] == "miou"
    assert tuned["theta"] in (0.3, 0.6, 0.9) and tuned["eta"] in (0.4, 0.5)   # the grid plus the preset's own
    assert f"best: theta {tuned['theta']:.2f}, eta {tuned['eta']:.2f}" in out

    assert main(["--test-models", "batch", str(folder), "--concepts", "cat, sky | heaven", "--project", str(path),
                 "--sam", "off"]) in (0, 1)
    out = capsys.readouterr().out
    assert "using the project's tuned thresholds" in out
    with Project.open(path) as p:
        last = p.get_setting(LAST_RUN_SETTING)
    expected = preset("objects", sam_mode="off", crf_in_subprocess=False).replace(theta=tuned["theta"],
                                                                                  eta=tuned["eta"])
    assert last["run_key"] == run_key(["cat", "sky | heaven"], expected, test_models=True)


def test_tune_without_reviewed_images_says_what_to_do(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(folder / "a.png")
    path = tmp_path / "p.cardb"
    with Project.create(path, folder) as p:
        p.add_images(folder)
    assert main(["--test-models", "tune", str(path)]) == 2
    assert "no reviewed image" in capsys.readouterr().err


def test_tune_save_needs_a_project_with_a_coco_source(tmp_path, capsys):
    coco = tmp_path / "gt.json"
    coco.write_text('{"images": [], "annotations": [], "categories": []}')
    assert main(["--test-models", "tune", str(coco), "--images", str(tmp_path), "--save"]) == 2
    assert "--save needs a project" in capsys.readouterr().err


def test_tune_rejects_a_bad_range(reviewed_project, capsys):
    path, _ = reviewed_project
    assert main(["--test-models", "tune", str(path), "--thetas", "0.2:0.1"]) == 2
    assert "--thetas" in capsys.readouterr().err
