"""Keys of the window: Ctrl+Y redo, arrows on the canvas, the order of Esc, solo (O), the F1 list
generated from the actions, and resizing (minimum width, refit when fitted)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence


@pytest.fixture
def win(qtbot, tmp_path, data_dir):
    from fakes import fake_window

    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(("astronaut.jpg", "chelsea.jpg", "coffee.jpg")):
        Image.open(data_dir / name).convert("RGB").resize((128, 96)).save(folder / f"img{i}.png")
    w = fake_window(qtbot, tmp_path)
    qtbot.waitUntil(lambda: w.engine.ready, timeout=5000)
    with qtbot.waitSignal(w.imageShown, timeout=5000):
        assert w.open_folder(folder)
    yield w
    w.close()


def _mask(y0=10, x0=10, y1=40, x1=50) -> np.ndarray:
    m = np.zeros((96, 128), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_ctrl_y_redoes(win, qtbot):
    layer = win.annotator.add_layer("thing", _mask())
    win.annotator.delete_layer(layer.id)
    assert win.project.count_annotations(win.image_id) == 0
    win.annotator.undo()
    assert win.project.count_annotations(win.image_id) == 1
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    assert win.project.count_annotations(win.image_id) == 0


def test_arrows_change_image_when_the_canvas_has_focus(win, qtbot):
    first = win.image_id
    win.activateWindow()
    win.canvas.setFocus()
    qtbot.waitUntil(win.canvas.hasFocus, timeout=2000)
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        qtbot.keyClick(win.canvas, Qt.Key.Key_Right)
    second = win.image_id
    assert second != first
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        qtbot.keyClick(win.canvas, Qt.Key.Key_Left)
    assert win.image_id == first
    # In the image list the arrows stay the list's own.
    arrow = next(a for a in win.findChildren(QAction) if a.shortcut() == QKeySequence("Right"))
    assert arrow.shortcutContext() == Qt.ShortcutContext.WidgetShortcut


def test_escape_order_tool_then_selection_then_job(win, qtbot):
    layer = win.annotator.add_layer("thing", _mask())
    win.stack.select(layer.id)
    win.set_tool("polygon_add")
    tool = win.canvas.tool()
    tool.points = [(1.0, 1.0), (5.0, 1.0)]
    win.fake.gate = threading.Event()
    win.concept_bar.set_text("cat")
    win.concept_bar.request_run()
    assert win.fake.started.wait(5)
    cancelled: list = []
    win.engine.carCancelled.connect(lambda *a: cancelled.append(a))
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_Escape)       # 1: the tool's clicks
    assert tool.points == [] and win.stack.selected_id == layer.id and not cancelled
    qtbot.keyClick(win.canvas, Qt.Key.Key_Escape)       # 2: the selection
    assert win.stack.selected_id == -1 and not cancelled
    with qtbot.waitSignal(win.engine.carCancelled, timeout=5000):
        qtbot.keyClick(win.canvas, Qt.Key.Key_Escape)   # 3: the running job
    win.fake.gate.set()


def test_solo_hides_the_others_and_o_again_restores(win, qtbot):
    a = win.annotator.add_layer("a", _mask())
    b = win.annotator.add_layer("b", _mask(50, 60, 80, 100))
    c = win.annotator.add_layer("c", _mask(5, 90, 20, 120))
    win.annotator.set_visible(c.id, False)
    win.stack.select(a.id)
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_O)
    assert (a.visible, b.visible, c.visible) == (True, False, False)
    overlay = win.canvas.overlay_rgba()
    assert overlay[20, 20, 3] == 255 and overlay[60, 70, 3] == 0
    qtbot.keyClick(win.canvas, Qt.Key.Key_O)
    assert (a.visible, b.visible, c.visible) == (True, True, False)


def test_f1_lists_every_action_shortcut(win):
    from car_desktop.ui.help_dialog import HelpDialog

    dialog = HelpDialog(win)
    listed = " | ".join(dialog.keys())
    shortcuts = [k.toString(QKeySequence.SequenceFormat.NativeText)
                 for a in win.findChildren(QAction) for k in a.shortcuts() if not k.isEmpty()]
    assert len(shortcuts) > 30
    missing = [k for k in shortcuts if k not in listed]
    assert not missing, missing
    for key in ("N", "L", "Ctrl+J", "Ctrl+Y", "O", "Left", "Right"):
        assert key in dialog.keys() or any(key in row.split(", ") for row in dialog.keys()), key
    dialog.close()


def test_window_narrows_to_800_px(win, qtbot):
    assert win.minimumSizeHint().width() <= 800
    win.resize(800, 700)
    qtbot.waitUntil(lambda: win.width() <= 800, timeout=2000)
    assert win.width() <= 800


def test_canvas_refits_on_resize_only_when_fitted(win, qtbot):
    canvas = win.canvas
    win.resize(1400, 900)
    qtbot.waitUntil(lambda: canvas.is_fitted(), timeout=2000)
    fitted_zoom = canvas.zoom()
    win.resize(1000, 700)
    qtbot.waitUntil(lambda: abs(canvas.zoom() - fitted_zoom) > 1e-3, timeout=2000)
    assert canvas.is_fitted()
    canvas.zoom_by(2.0)
    zoomed = canvas.zoom()
    win.resize(1300, 850)
    qtbot.waitUntil(lambda: win.width() == 1300, timeout=2000)
    assert not canvas.is_fitted() and abs(canvas.zoom() - zoomed) < 1e-9


def test_deleting_the_mask_shown_alone_shows_the_others_again(win, qtbot):
    """The others were left hidden, with no selected mask for O to bring them back."""
    a = win.annotator.add_layer("a", _mask())
    b = win.annotator.add_layer("b", _mask(50, 60, 80, 100))
    win.stack.select(a.id)
    win.solo_selected()
    assert not b.visible
    win.delete_selected()
    assert win.stack.get(a.id) is None and win.stack.solo_id == -1
    assert b.visible
