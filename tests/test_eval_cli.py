"""``car-desktop eval``: the table, --json and the HTML report (pages and non-blank pictures), and outputs
that must not land on an input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from car_desktop.cli import main
from eval_fixtures import GT_IMAGES, PRED_IMAGES, H, W, coco, write


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in GT_IMAGES:
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(images / name)
    return {"gt": write(tmp_path / "gt.json", coco(GT_IMAGES)),
            "pred": write(tmp_path / "pred.json", coco(PRED_IMAGES)), "images": images}


def test_eval_prints_table_and_writes_json(files, tmp_path, capsys):
    out = tmp_path / "out" / "metrics.json"
    assert main(["eval", str(files["pred"]), str(files["gt"]), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "presence" in text and "mask AP" in text and "worst images" in text
    data = json.loads(out.read_text())
    assert data["images"] == 2
    assert 0 < data["miou"] < 1
    assert [c["class"] for c in data["classes"]] == ["background", "cat", "dog"]
    assert data["mask_ap"]["ap"] is not None
    assert len(data["per_image"]) == 2 and data["worst"]


def test_eval_report_exists_and_its_pictures_are_not_blank(files, tmp_path):
    report = tmp_path / "report"
    assert main(["eval", str(files["pred"]), str(files["gt"]), "--images", str(files["images"]),
                 "--report", str(report)]) == 0
    page = (report / "index.html").read_text(encoding="utf-8")
    pictures = sorted((report / "figures").glob("*.png"))
    names = {p.name for p in pictures}
    assert {"per_class_iou.png", "confusion.png", "presence.png", "worst_01.png", "worst_02.png"} <= names
    for p in pictures:
        assert f"figures/{p.name}" in page
        pixels = np.asarray(Image.open(p).convert("L"), dtype=np.float64)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.var() > 50, f"{p.name} looks blank"
    assert not list(report.rglob("*.part"))        # no temporary file left behind
    assert json.loads((report / "metrics.json").read_text())["images"] == 2


def test_json_output_never_overwrites_an_input(files, capsys):
    before = files["gt"].read_bytes()
    assert main(["eval", str(files["pred"]), str(files["gt"]), "--json", str(files["gt"])]) == 2
    out, err = capsys.readouterr()
    assert "refusing to write the --json file" in err and "nothing was written" in err
    assert "mIoU" not in out                      # refused before any work
    assert files["gt"].read_bytes() == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_unwritable_report_folder_is_a_clear_error(files, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["eval", str(files["pred"]), str(files["gt"]), "--report", str(locked / "r")]) == 2
    finally:
        locked.chmod(0o700)
    assert "cannot write the report" in capsys.readouterr().err


def test_missing_input_is_a_clear_error(files, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope.json"), str(files["gt"])]) == 2
    assert "does not exist" in capsys.readouterr().err
