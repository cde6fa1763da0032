"""The precision chosen in Models > Precision is stored and reaches every run of the window (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QSettings
from PySide6.QtGui import QAction

from car_desktop.ui.settings import Settings
from fakes import fake_window


@pytest.fixture
def win(qtbot, tmp_path):
    w = fake_window(qtbot, tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(folder / "a.png")
    with qtbot.waitSignal(w.imageShown, timeout=5000):
        assert w.open_folder(folder)
    yield w
    w.close()


def _run(win, qtbot) -> str:
    before = len(win.fake.configs)
    win.concept_bar.set_text("cat")
    win.concept_bar.request_run()
    qtbot.waitUntil(lambda: len(win.fake.configs) > before and not win.runner.busy("engine"), timeout=5000)
    return win.fake.configs[-1].precision


def test_precision_menu_reaches_the_run_and_is_remembered(win, qtbot, tmp_path):
    assert _run(win, qtbot) == "auto"
    actions = {a.text(): a for a in win.findChildren(QAction)}
    bf16 = next(a for t, a in actions.items() if t.startswith("bf16"))
    fp32 = next(a for t, a in actions.items() if t.startswith("fp32"))
    assert not bf16.isChecked()
    bf16.trigger()
    assert bf16.isChecked() and not fp32.isChecked()
    assert "bf16" in win.status.currentMessage()
    assert _run(win, qtbot) == "bf16"
    fp32.trigger()
    assert _run(win, qtbot) == "fp32"
    # Stored: a new Settings on the same file reads it back; a value that is no choice reads as auto.
    stored = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    assert stored.precision == "fp32"
    stored.q.setValue("engine/precision", "int4")
    assert stored.precision == "auto"
