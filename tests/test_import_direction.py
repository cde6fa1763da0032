"""Layering: the engine never imports Qt; the shared array validators need neither torch nor Qt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from car_desktop.arrays import check_mask, check_rgb_image

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_no_engine_module_imports_qt():
    code = """
import importlib, json, pkgutil, sys
import car_desktop.engine as engine
names = [m.name for m in pkgutil.iter_modules(engine.__path__, "car_desktop.engine.")]
for name in names:
    importlib.import_module(name)
qt = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "PyQt5", "PyQt6", "shiboken6"))
print(json.dumps({"modules": names, "qt": qt}))
"""
    out = _run(code)
    assert "car_desktop.engine.pipeline" in out["modules"] and "car_desktop.engine.crf_worker" in out["modules"]
    assert len(out["modules"]) >= 20
    assert out["qt"] == []


def test_array_validators_import_without_torch_or_qt():
    out = _run("import json, sys, car_desktop.arrays; "
               "print(json.dumps({'heavy': sorted(m for m in ('torch', 'PySide6', 'cv2') if m in sys.modules)}))")
    assert out["heavy"] == []


def test_check_rgb_image_and_mask():
    img = np.zeros((4, 5, 3), np.uint8)
    assert check_rgb_image(img) is img
    for bad in (np.zeros((4, 5), np.uint8), np.zeros((4, 5, 3), np.float32), np.zeros((4, 5, 4), np.uint8), [1, 2]):
        with pytest.raises(ValueError, match="uint8 \\(H, W, 3\\) RGB"):
            check_rgb_image(bad)
    m = check_mask(np.ones((4, 5), np.uint8), (4, 5))
    assert m.dtype == bool and m.all()
    already = np.zeros((4, 5), bool)
    assert check_mask(already, (4, 5)) is already
    with pytest.raises(ValueError, match="CaR mask shape \\(5, 4\\) does not match the image's \\(4, 5\\)"):
        check_mask(np.zeros((5, 4)), (4, 5), "CaR mask")
