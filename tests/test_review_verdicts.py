"""Per-mask verdicts (accept / reject from the queue's row menu and the canvas), the "n of N images
reviewed" counter, and closing / reopening the review dock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QSettings

from car_desktop.annotations import Project
from car_desktop.annotations.errors import ProjectError
from car_desktop.annotations.provenance import Provenance
from car_desktop.annotations.review import ReviewFilter, accept_mask, review_items, review_progress
from car_desktop.ui.main_window import MainWindow
from car_desktop.ui.settings import Settings
from fakes import FakePipeline, band_mask

H, W = 40, 56


def _band(i: int) -> np.ndarray:
    return band_mask(i, H, W)


@pytest.fixture
def project_path(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    path = folder / "car-desktop.cardb"
    with Project.create(path, folder) as p:
        ids = {Path(r.rel_path).stem: r.id for r in p.add_images(folder)}
        for image, concept, score, i in (("a", "cat", 0.7, 0), ("a", "dog", 0.3, 1), ("b", "cat", 0.4, 0)):
            cat = p.get_or_create_category(concept)
            p.add_annotation(ids[image], cat.id, _band(i), score=score, source="car",
                             provenance=Provenance(status="kept"))
            p.set_image_status(ids[image], "auto")
    return path


def test_progress_and_accept_are_qt_free(project_path):
    with Project.open(project_path) as p:
        assert review_progress(p).text == "0 of 3 images reviewed"
        p.set_image_status(p.list_images()[0].id, "reviewed")
        assert (review_progress(p).reviewed, review_progress(p).total) == (1, 3)
        ann = review_items(p)[0].annotation_id
        accept_mask(p, ann)
        assert p.get_annotation(ann).provenance.accepted
        assert [it.accepted for it in review_items(p, ReviewFilter(image_statuses=())) if it.annotation_id == ann] \
            == [True]
        assert ann not in [it.annotation_id for it in review_items(p, ReviewFilter(image_statuses=(), accepted=False))]


@pytest.fixture
def win(qtbot, tmp_path, project_path):
    settings = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    w = MainWindow(test_models=True, settings=settings, pipeline_factory=lambda t, c: FakePipeline(sam=None))
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.review_panel.refreshed, timeout=5000), qtbot.waitSignal(w.imageShown, timeout=5000):
        assert w.open_project(project_path)
    yield w
    w.close()


def _menu_action(panel, row: int, text: str):
    rect = panel.tree.visualItemRect(panel.tree.topLevelItem(row))
    menu = panel._row_menu(rect.center())
    action = next(a for a in menu.actions() if a.text().startswith(text))
    menu.close()
    return action


def test_counter_text(win, qtbot):
    panel = win.review_panel
    assert panel.progress_label.text() == "0 of 3 images reviewed"
    with qtbot.waitSignal(panel.refreshed, timeout=5000):
        win.annotator.mark_reviewed()
    assert panel.progress_label.text() == "1 of 3 images reviewed"


def test_accept_from_the_row_menu_marks_the_mask(win, qtbot):
    panel = win.review_panel
    item = panel.items[0]
    with qtbot.waitSignal(panel.refreshed, timeout=5000):
        _menu_action(panel, 0, "Accept mask").trigger()
    assert win.project.get_annotation(item.annotation_id).provenance.accepted
    row = next(i for i, it in enumerate(panel.items) if it.annotation_id == item.annotation_id)
    assert "accepted" in panel.tree.topLevelItem(row).text(4)


def test_reject_from_the_row_menu_deletes_undoably_on_another_image(win, qtbot):
    panel = win.review_panel
    other = next(it for it in panel.items if it.image_id != win.image_id)
    row = panel.items.index(other)
    n = win.project.count_annotations()
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        _menu_action(panel, row, "Reject mask").trigger()
    assert win.image_id == other.image_id
    assert win.project.count_annotations() == n - 1
    with pytest.raises(ProjectError):
        win.project.get_annotation(other.annotation_id)
    win.annotator.undo()
    assert win.project.count_annotations() == n
    qtbot.waitUntil(lambda: len(panel.items) == 3, timeout=5000)


def test_reject_selected_canvas_mask(win, qtbot):
    layer = next(ly for ly in win.stack.layers() if not ly.removed)
    win.stack.select(layer.id)
    n = win.project.count_annotations()
    win.menus.reject_mask.trigger()
    assert win.project.count_annotations() == n - 1 and win.stack.get(layer.id) is None
    win.annotator.undo()
    assert win.project.count_annotations() == n


def test_canvas_mask_menu_has_the_verdicts(win):
    layer = next(ly for ly in win.stack.layers() if not ly.removed)
    menu = win.menus.mask_menu(layer.id)
    texts = [a.text() for a in menu.actions()]
    assert {"Accept mask", "Reject mask", "Edit mask as polygon", "Show only the selected mask"} <= set(texts)
    win.stack.select(layer.id)
    next(a for a in menu.actions() if a.text() == "Accept mask").trigger()
    assert win.project.get_annotation(win.annotator.annotation_id(layer.id)).provenance.accepted


def test_review_dock_closes_and_reopens_from_the_view_menu(win, qtbot):
    dock = win.review_dock
    assert dock.isVisible()
    dock.close()
    qtbot.waitUntil(lambda: not dock.isVisible(), timeout=2000)
    view = next(a.menu() for a in win.menuBar().actions() if a.text() == "&View")
    toggle = next(a for a in view.actions() if a.text() == "Review queue")
    assert not toggle.isChecked()
    toggle.trigger()
    qtbot.waitUntil(dock.isVisible, timeout=2000)


def test_context_menus_are_deleted_once_dismissed(win, qtbot):
    """One menu is made per right click (queue row, canvas mask): each goes once dismissed, instead of
    piling up as hidden children of the window for the whole session."""
    from PySide6.QtCore import QCoreApplication, QEvent
    from PySide6.QtWidgets import QMenu

    def menus() -> int:
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        return len([m for m in win.findChildren(QMenu) if m.parent() in (win, win.review_panel)])

    before = menus()
    panel = win.review_panel
    for _ in range(3):
        panel._row_menu(panel.tree.visualItemRect(panel.tree.topLevelItem(0)).center()).close()
        layer = next(ly for ly in win.stack.layers() if not ly.removed)
        menu = win.menus.mask_menu(layer.id)
        menu.popup(win.canvas.mapToGlobal(win.canvas.rect().center()))
        menu.close()
    assert menus() == before


def test_accepted_mask_stays_accepted_after_delete_and_undo(win):
    """Undo makes a deleted row again from the layer's record: the verdict must be in it (it was not:
    the mask came back unaccepted)."""
    layer = next(ly for ly in win.stack.layers() if not ly.removed)
    win.stack.select(layer.id)
    win.menus.accept_mask.trigger()
    assert win.project.get_annotation(win.annotator.annotation_id(layer.id)).provenance.accepted
    win.delete_selected()
    assert win.annotator.annotation_id(layer.id) is None
    win.annotator.undo()
    ann = win.annotator.annotation_id(layer.id)
    assert ann is not None and win.project.get_annotation(ann).provenance.accepted
