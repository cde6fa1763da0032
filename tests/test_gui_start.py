"""Starting the window (pytest-qt, offscreen): no torch on the GUI path up to the first run, the empty
canvas says how to begin, drops open files, dialogs start in the project's folder, recent projects
forget files that are gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDropEvent

from car_desktop.ui.settings import Settings
from fakes import fake_window

HEAVY = ("torch", "open_clip", "segment_anything")
#: A concept too long to be known short without the tokenizer.
LONG = " ".join(["the man in the red vest next to the forklift"] * 4)

# Builds the window as ``launch_gui`` does, opens an image, and presses Enter in the concept bar; the
# run is handed to a worker whose pipeline waits, so what is imported by then is the GUI thread's doing.
_SCRIPT = r"""
import json, sys, threading
sys.path.insert(0, {tests!r})
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

app = QApplication([])
from fakes import FakePipeline
from car_desktop.ui.main_window import MainWindow
from car_desktop.ui.settings import Settings

HEAVY = {heavy!r}
heavy = lambda: sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
gate = threading.Event()
pipe = FakePipeline(sam=None, gate=gate)
win = MainWindow(test_models=True, settings=Settings(QSettings({ini!r}, QSettings.Format.IniFormat)),
                 pipeline_factory=lambda t, c: pipe, check_models=False)
win.show()
app.processEvents()
out = {{"after_window": heavy()}}
shown = []
win.imageShown.connect(shown.append)
win.open_image({image!r})
while not shown:
    app.processEvents()
win.concept_bar.set_text("cat, dog | puppy, café, traffic light, " + {long!r})
QTest.keyClick(win.concept_bar.edit, Qt.Key.Key_Return)
out["after_enter"] = heavy()
out["running"] = [j.kind for j in win.engine.car_running()]
pipe.started.wait(5)
out["parsed"] = [c.label for c in pipe.calls[0]] if pipe.calls else []
gate.set()
win.runner.shutdown(5000)
print("RESULT " + json.dumps(out))
"""


def test_window_and_first_enter_import_no_torch_on_the_gui_thread(tmp_path, data_dir):
    image = tmp_path / "photos" / "a.png"
    image.parent.mkdir()
    Image.open(data_dir / "astronaut.jpg").convert("RGB").resize((64, 48)).save(image)
    script = _SCRIPT.format(tests=str(Path(__file__).parent), heavy=HEAVY, ini=str(tmp_path / "s.ini"),
                            image=str(image), long=LONG)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, res.stdout + res.stderr
    out = json.loads(line[len("RESULT "):])
    assert out["after_window"] == [] and out["after_enter"] == []
    assert out["running"] and out["running"][0].startswith("car:")        # the Enter did start a run
    # The long concept reaches the worker as typed; the engine shortens it there (test_concepts_config).
    assert out["parsed"] == ["cat", "dog | puppy", "café", "traffic light", LONG]


def test_empty_canvas_says_how_to_begin(qtbot, tmp_path):
    win = fake_window(qtbot, tmp_path)
    assert not win.canvas.has_image()
    hint = win.canvas.notice()
    assert "Open a folder" in hint and "Recent projects" in hint and "drop" in hint
    win.close()


def test_drop_opens_a_folder_and_dialogs_start_there(qtbot, tmp_path, data_dir):
    win = fake_window(qtbot, tmp_path)
    folder = tmp_path / "dropped"
    folder.mkdir()
    Image.open(data_dir / "chelsea.jpg").convert("RGB").resize((64, 48)).save(folder / "cat.png")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        win.dropEvent(event)
    assert win.project is not None and win.project.path.parent == folder
    assert win.canvas.has_image() and win.canvas.notice() == ""
    assert Path(win.start_folder()).resolve() == folder.resolve()
    win.close()


def test_recent_projects_forget_missing_files(tmp_path):
    settings = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    kept = tmp_path / "kept.cardb"
    kept.write_bytes(b"")
    settings.add_recent_project(str(tmp_path / "gone.cardb"))
    settings.add_recent_project(str(kept))
    assert settings.prune_recent() == [str(kept)]
    assert settings.recent_projects() == [str(kept)]
