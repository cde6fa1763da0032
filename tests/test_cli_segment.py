"""``car-desktop segment``: outputs on disk, the status table, and clear errors with non-zero exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from car_desktop.cli import main


def test_segment_writes_outputs(tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    code = main(["--test-models", "segment", str(data_dir / "chelsea.jpg"), "--concepts", "cat, dog | puppy, sky",
                 "--sam", "off", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr()
    assert "concept" in printed.out and "cat" in printed.out and "test models" in printed.err.lower()
    summary = json.loads((out / "chelsea_summary.json").read_text())
    assert [c["name"] for c in summary["concepts"]] == ["cat", "dog", "sky"]
    assert summary["test_models"] is True and summary["steps"]
    labels = np.asarray(Image.open(out / "chelsea_labels.png"))
    assert labels.shape[2] == 3
    masks = sorted(p.name for p in out.glob("chelsea_0*_*.png"))
    assert masks == ["chelsea_00_cat.png", "chelsea_01_dog.png", "chelsea_02_sky.png"]


def test_test_models_flag_after_subcommand(tmp_path, data_dir, capsys):
    code = main(["segment", str(data_dir / "coffee.jpg"), "--concepts", "cup", "--sam", "off",
                 "--out", str(tmp_path), "--test-models"])
    assert code == 0
    assert "test models" in capsys.readouterr().err.lower()     # the flag took effect after the subcommand
    summary = json.loads((tmp_path / "coffee_summary.json").read_text())
    assert summary["test_models"] is True and [c["name"] for c in summary["concepts"]] == ["cup"]
    mask = np.asarray(Image.open(tmp_path / "coffee_00_cup.png")) > 0
    assert summary["concepts"][0]["status"] == "kept_without_competition"
    assert int(mask.sum()) == summary["concepts"][0]["pixels"]


@pytest.mark.parametrize("args, message", [
    (["segment", "nope.jpg", "--concepts", "cat"], "nope.jpg"),
    (["segment", "{corrupt}", "--concepts", "cat"], "corrupt"),
    (["segment", "{good}", "--concepts", " , "], "No concepts"),
])
def test_segment_errors(tmp_path, data_dir, capsys, args, message):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    args = [a.replace("{corrupt}", str(corrupt)).replace("{good}", str(data_dir / "coffee.jpg")) for a in args]
    code = main(["--test-models", *args, "--out", str(tmp_path / "o")])
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_missing_weights_offline_fails_fast_and_clearly(tmp_path, data_dir):
    env = dict(os.environ, HF_HUB_OFFLINE="1", CAR_DESKTOP_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "car_desktop", "segment", str(data_dir / "coffee.jpg"),
                           "--concepts", "cup", "--sam", "off", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    # It names the file and the folder that picks up a copy.
    assert "open_clip_model.safetensors" in proc.stderr and str(tmp_path / "cache") in proc.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
