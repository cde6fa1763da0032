"""A 2,000-character concept breaks no view: the concept panel, the review queue and the new-mask /
relabel dialog show it shortened, keep within the screen, and hold the full text in a tooltip; the
unchecked visibility box stays visible in the dark theme."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QDialog

from car_desktop.ui import category_dialog
from car_desktop.ui.category_dialog import CategoryDialog
from car_desktop.ui.long_text import MAX_CHARS, elide, fit_to_screen, one_line, tooltip

LONG = " ".join(f"pallet{i}" for i in range(400))[:2000].strip()


def _screen_width() -> int:
    return QApplication.primaryScreen().availableGeometry().width()


def test_elide_and_tooltip_helpers():
    assert len(LONG) >= 1990
    short = elide(LONG)
    assert len(short) == MAX_CHARS and short.startswith("pallet0 ") and short.endswith(LONG[-10:])
    assert elide("cat\tand\n dog") == "cat and dog"
    assert tooltip(LONG).replace("\n", " ") == LONG
    assert max(len(line) for line in tooltip(LONG).splitlines()) <= 80
    assert one_line("a \n b") == "a b"


def test_fit_to_screen_caps_a_wide_dialog(qtbot):
    dialog = QDialog()
    qtbot.addWidget(dialog)
    dialog.resize(_screen_width() * 3, 200)
    fit_to_screen(dialog)
    assert dialog.width() <= _screen_width() and dialog.maximumWidth() <= _screen_width()


@pytest.fixture
def win(qtbot, tmp_path, data_dir):
    from fakes import window_on_photo

    w = window_on_photo(qtbot, tmp_path, data_dir)
    yield w
    w.close()


def test_concept_panel_and_window_stay_narrow(win, qtbot):
    m = np.zeros((48, 64), bool)
    m[5:20, 5:30] = True
    layer = win.annotator.add_layer(LONG, m)
    panel = win.concept_panel
    item = panel._items[layer.id]
    assert len(item.text(0)) <= MAX_CHARS
    assert LONG in item.toolTip(0).replace("\n", " ")
    assert panel.tree.header().sectionSize(0) < 400
    assert panel.minimumSizeHint().width() <= 400
    assert win.minimumSizeHint().width() <= 800


def test_review_queue_row_and_filter_are_shortened(win, qtbot):
    m = np.zeros((48, 64), bool)
    m[5:20, 5:30] = True
    cat = win.project.get_or_create_category(LONG)
    win.project.add_annotation(win.image_id, cat.id, m, score=0.3, source="car")
    win.project.set_image_status(win.image_id, "auto")
    panel = win.review_panel
    with qtbot.waitSignal(panel.refreshed, timeout=5000):
        panel.refresh()
    row = panel.tree.topLevelItem(0)
    assert len(row.text(0)) <= 41 and LONG in row.toolTip(0).replace("\n", " ")
    assert panel.tree.header().sectionSize(0) < 300
    index = panel.concept_combo.findData(cat.id)
    assert len(panel.concept_combo.itemText(index)) < 60
    assert LONG in panel.concept_combo.itemData(index, Qt.ItemDataRole.ToolTipRole).replace("\n", " ")
    assert win.minimumSizeHint().width() <= 800


def test_category_dialog_fits_and_returns_the_full_name(qtbot):
    dialog = CategoryDialog("New mask", f"Concept for this {LONG} mask:", ["cat", LONG], current=LONG)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.width() <= _screen_width() and dialog.sizeHint().width() <= _screen_width()
    assert dialog.combo.currentText() == elide(LONG)
    assert dialog.name() == LONG
    assert LONG in dialog.combo.itemData(1, Qt.ItemDataRole.ToolTipRole).replace("\n", " ")
    dialog.combo.setEditText("a brand new concept")
    assert dialog.name() == "a brand new concept"


def test_relabel_proposes_the_current_category(win, monkeypatch):
    m = np.zeros((48, 64), bool)
    m[5:20, 5:30] = True
    win.annotator.add_layer("cat", m)
    dog = win.annotator.add_layer("dog", m)
    win.stack.select(dog.id)
    seen = {}

    def fake_exec(self):
        seen["proposed"] = self.name()
        self.combo.setCurrentIndex(self.combo.findData("cat"))
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(category_dialog.CategoryDialog, "exec", fake_exec)
    win.ask_relabel()
    assert seen["proposed"] == "dog"
    assert win.stack.get(dog.id).name == "cat"


def test_unchecked_box_is_visible_in_the_dark_theme(qtbot):
    from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem

    from car_desktop.ui.theme import apply_theme

    app = QApplication.instance()
    style, palette, sheet = app.style().name(), app.palette(), app.styleSheet()
    try:
        apply_theme(app, "dark")
        tree = QTreeWidget()
        qtbot.addWidget(tree)
        tree.setHeaderHidden(True)
        item = QTreeWidgetItem(tree)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(0, Qt.CheckState.Unchecked)
        tree.resize(200, 60)
        tree.show()
        img = tree.viewport().grab().toImage().convertToFormat(
            tree.viewport().grab().toImage().Format.Format_RGB32)
        px = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)
        row = px[: img.height() // 3, :30, 2::-1].astype(int)          # the box sits at the row's start
        base = app.palette().color(app.palette().ColorRole.Base)
        contrast = np.abs(row - (base.red(), base.green(), base.blue())).max()
        assert contrast > 80, contrast
    finally:
        app.setStyle(style)
        app.setPalette(palette)
        app.setStyleSheet(sheet)
