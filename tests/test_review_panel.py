"""The review queue panel in the window (pytest-qt, offscreen): its order on known scores, choosing a
row opens that image with that mask selected, Accept marks the image reviewed and moves on, filters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPointF, QSettings, Qt

from car_desktop.annotations import Project
from car_desktop.annotations.provenance import KEPT_ALONE, Provenance
from car_desktop.annotations.review import review_items
from car_desktop.ui.main_window import MainWindow
from car_desktop.ui.settings import Settings
from fakes import FakePipeline, band_mask

H, W = 40, 56


def _band(i: int) -> np.ndarray:
    return band_mask(i, H, W)


@pytest.fixture
def known_project(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    path = folder / "car-desktop.cardb"
    with Project.create(path, folder) as p:
        ids = {Path(r.rel_path).stem: r.id for r in p.add_images(folder)}
        for image, concept, score, status, sam, i in (
            ("a", "cat", 0.70, "kept", True, 0),
            ("a", "dog", 0.30, "kept", False, 1),
            ("b", "sky", 1.00, KEPT_ALONE, None, 0),
            ("c", "cat", 0.45, "kept", True, 0),
            ("c", "dog", 0.55, "kept", None, 1),
        ):
            cat = p.get_or_create_category(concept)
            p.add_annotation(ids[image], cat.id, _band(i), score=score, source="car",
                             provenance=Provenance(status=status, sam_accepted=sam, sam_iou=0.9 if sam else 0.3))
            p.set_image_status(ids[image], "auto")
    return path


@pytest.fixture
def win(qtbot, tmp_path, known_project):
    settings = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    w = MainWindow(test_models=True, settings=settings, pipeline_factory=lambda t, c: FakePipeline(sam=None))
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.review_panel.refreshed, timeout=5000), qtbot.waitSignal(w.imageShown, timeout=5000):
        assert w.open_project(known_project)
    yield w
    w.close()


def _rows(panel):
    t = panel.tree
    return [tuple(t.topLevelItem(i).text(c) for c in range(4)) for i in range(t.topLevelItemCount())]


def _click_row(qtbot, panel, index):
    item = panel.tree.topLevelItem(index)
    rect = panel.tree.visualItemRect(item)
    qtbot.mouseClick(panel.tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_queue_order_and_columns(win):
    panel = win.review_panel
    assert _rows(panel) == [
        ("sky", "alone", "—", "b.png"),              # kept without competition: its 1 is no confidence
        ("dog", "0.30", "rejected (0.30)", "a.png"),
        ("cat", "0.45", "accepted (0.90)", "c.png"),
        ("dog", "0.55", "—", "c.png"),
        ("cat", "0.70", "accepted (0.90)", "a.png"),
    ]
    assert [it.annotation_id for it in panel.items] == [it.annotation_id for it in review_items(win.project)]
    assert panel.summary.text() == "5 masks in the queue" and not panel.more_button.isVisible()


def test_click_opens_image_with_mask_selected(win, qtbot):
    panel = win.review_panel
    assert win.project.get_image(win.image_id).rel_path == "a.png"
    target = panel.items[3]                                     # dog on c.png
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        _click_row(qtbot, panel, 3)
    assert win.image_id == target.image_id
    layer = win.stack.selected()
    assert layer is not None and layer.name == "dog"
    assert win.annotator.annotation_id(layer.id) == target.annotation_id
    assert np.array_equal(layer.mask, win.project.get_mask(target.annotation_id))
    # Another mask of the same image: selected without reloading the image.
    shown = []
    win.imageShown.connect(shown.append)
    _click_row(qtbot, panel, 2)                                 # cat on c.png
    qtbot.wait(50)
    assert not shown and win.annotator.annotation_id(win.stack.selected().id) == panel.items[2].annotation_id
    # Fix it with the normal tools: the brush edits the selected mask, the queue then says "edited".
    layer = win.stack.selected()
    fixed = panel.items[2].annotation_id
    win.set_tool("brush")
    win.tools["brush"].set_radius(2)
    y, x = (int(v) for v in np.argwhere(~layer.mask)[0])
    pos = win.canvas.mapFromScene(QPointF(x + 0.5, y + 0.5))
    qtbot.mousePress(win.canvas.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseRelease(win.canvas.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert win.project.get_annotation(fixed).edited
    with qtbot.waitSignal(panel.refreshed, timeout=5000):
        panel.refresh()
    row = next(i for i, it in enumerate(panel.items) if it.annotation_id == fixed)
    assert "edited" in panel.tree.topLevelItem(row).text(4)
    assert panel.current().annotation_id == fixed                  # the selection survived the refresh


def test_accept_marks_reviewed_and_moves_on(win, qtbot):
    panel = win.review_panel
    _click_row(qtbot, panel, 1)                                # dog on a.png, the image already open
    a_id = panel.items[1].image_id
    assert win.image_id == a_id
    assert win.annotator.annotation_id(win.stack.selected().id) == panel.items[1].annotation_id
    # the next doubtful mask of another image
    with qtbot.waitSignal(win.imageShown, timeout=5000), qtbot.waitSignal(panel.refreshed, timeout=5000):
        panel.accept_button.click()
    assert win.project.get_image(a_id).status == "reviewed"
    assert win.file_list.status(a_id) == "reviewed"
    assert [r[3] for r in _rows(panel)] == ["b.png", "c.png", "c.png"]
    cur = panel.current()
    assert cur is not None and cur.rel_path == "c.png" and cur.category_name == "cat"
    assert win.image_id == cur.image_id
    assert win.annotator.annotation_id(win.stack.selected().id) == cur.annotation_id
    # The keyboard does the same (Ctrl+Shift+Enter): c.png reviewed, on to b.png.
    with qtbot.waitSignal(win.imageShown, timeout=5000), qtbot.waitSignal(panel.refreshed, timeout=5000):
        qtbot.keyClick(win, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert [r[3] for r in _rows(panel)] == ["b.png"] and win.image_id == panel.current().image_id


def test_filters_and_sorts(win, qtbot):
    panel = win.review_panel
    cat = win.project.find_category("cat").id
    with qtbot.waitSignal(panel.refreshed, timeout=5000):
        panel.concept_combo.setCurrentIndex(panel.concept_combo.findData(cat))
    assert [r[0] for r in _rows(panel)] == ["cat", "cat"]
    assert panel.concept_combo.currentText() == "cat (2)"
    with qtbot.waitSignal(panel.refreshed, timeout=5000):
        panel.concept_combo.setCurrentIndex(0)
    with qtbot.waitSignal(panel.refreshed, timeout=5000):
        panel.mask_combo.setCurrentIndex(panel.mask_combo.findData("SAM rejected"))
    assert _rows(panel) == [("dog", "0.30", "rejected (0.30)", "a.png")]
    with qtbot.waitSignal(panel.refreshed, timeout=5000):
        panel.mask_combo.setCurrentIndex(0)
    with qtbot.waitSignal(panel.refreshed, timeout=5000):
        panel.sort_combo.setCurrentIndex(panel.sort_combo.findData("image"))
    assert [r[3] for r in _rows(panel)] == ["a.png", "a.png", "b.png", "c.png", "c.png"]
    assert [r[1] for r in _rows(panel)][:2] == ["0.30", "0.70"]
    win.review.accept_image(panel.items[0].image_id)                  # a.png
    with qtbot.waitSignal(panel.refreshed, timeout=5000):
        panel.image_combo.setCurrentIndex(panel.image_combo.findData("Reviewed"))
    assert [r[3] for r in _rows(panel)] == ["a.png", "a.png"]
    assert "image reviewed" in panel.tree.topLevelItem(0).text(4)


def test_hidden_queue_waits_until_shown(win, qtbot):
    panel = win.review_panel
    win.review_dock.hide()
    win.review.accept_image(panel.items[0].image_id)          # b.png reviewed while the queue is hidden
    qtbot.wait(1000)                                   # longer than any pending refresh timer
    assert not win.runner.running("review_query") and len(panel.items) == 5
    with qtbot.waitSignal(panel.refreshed, timeout=5000):
        win.review_dock.show()
    assert "b.png" not in [it.rel_path for it in panel.items] and len(panel.items) == 4
