"""The File and Help menu entries that ship with auto-labelling (pytest-qt, offscreen): Export label
PNGs… and Import COCO… run on a worker and report problems in a dialog; Help > About shows the version."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog

import car_desktop
from car_desktop.ui import transfer
from fakes import fake_window

H, W = 30, 40


@pytest.fixture
def win(qtbot, tmp_path):
    w = fake_window(qtbot, tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(folder / f"im{i}.png")
    with qtbot.waitSignal(w.imageShown, timeout=5000):
        assert w.open_folder(folder)
    w.folder = folder
    yield w
    w.close()


def _action(win, text):
    return next(a for a in win.findChildren(QAction) if a.text() == text)


def test_export_label_pngs(win, qtbot, tmp_path, monkeypatch):
    p = win.project
    cat = p.get_or_create_category("cat")
    mask = np.zeros((H, W), bool)
    mask[5:15, 10:30] = True
    image_id = win.file_list.keys()[0]
    p.add_annotation(image_id, cat.id, mask, score=0.8, source="car")
    out = tmp_path / "labels"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(out)))
    with qtbot.waitSignal(win.transfers.done, timeout=10000) as blocker:
        _action(win, "Export label PNGs…").trigger()
    kind, report = blocker.args
    assert kind == "export_pngs" and report.images == 2
    label = np.asarray(Image.open(out / "im0.png"))
    assert np.array_equal(label == cat.id, mask) and not np.asarray(Image.open(out / "im1.png")).any()
    assert (out / "labels.txt").read_text().splitlines()[1] == f"{cat.id} cat"
    dlg = win.transfers.report_dialog
    assert dlg.isVisible() and "Wrote 2 label map(s)" in dlg.summary.text()
    assert win.transfers.progress_dialog is None

    # An unwritable target: the error is shown in the report dialog, the window carries on.
    blocker_file = tmp_path / "a-file"
    blocker_file.write_text("x")
    with qtbot.waitSignal(win.transfers.failed, timeout=10000):
        win.transfers.export_label_pngs(p, blocker_file / "sub")
    dlg = win.transfers.report_dialog
    assert dlg.windowTitle() == "Export failed" and "cannot write label maps" in dlg.summary.text()


def test_import_coco_reports_problems_and_shows_masks(win, qtbot, tmp_path, monkeypatch):
    coco = {
        "images": [{"id": 7, "file_name": "im0.png", "width": W, "height": H},
                   {"id": 8, "file_name": "missing.png", "width": 0, "height": 0}],
        "categories": [{"id": 3, "name": "box"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0, "score": 0.4,
             "segmentation": [[5, 5, 25, 5, 25, 20, 5, 20]]},
            {"id": 2, "image_id": 7, "category_id": 99, "iscrowd": 0, "segmentation": [[1, 1, 4, 1, 4, 4]]},
        ],
    }
    path = tmp_path / "in.json"
    path.write_text(json.dumps(coco))

    def fake_exec(dlg):
        assert dlg.images_dir.text() == str(win.project.image_root)
        dlg.json_path.setText(str(path))
        return 1

    monkeypatch.setattr(transfer.ImportCocoDialog, "exec", fake_exec)
    assert win.project.get_image(win.image_id).rel_path == "im0.png" and len(win.stack) == 0
    with qtbot.waitSignal(win.transfers.done, timeout=10000) as blocker:
        _action(win, "Import COCO…").trigger()
    report = blocker.args[1]
    assert report.annotations_added == 1 and len(report.problems) == 2
    dlg = win.transfers.report_dialog
    assert "Imported 1 mask(s)" in dlg.summary.text() and "2 entries were not imported" in dlg.summary.text()
    text = dlg.details.toPlainText()
    assert "unknown category_id 99" in text and "missing.png" in text
    # The open image shows the imported mask at once.
    layers = win.stack.layers()
    assert [ly.name for ly in layers] == ["box"] and layers[0].mask.sum() > 200

    # A file that is not COCO: one clear message, nothing imported.
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with qtbot.waitSignal(win.transfers.failed, timeout=10000):
        win.transfers.import_coco(win.project, bad, win.folder)
    assert win.transfers.report_dialog.windowTitle() == "Import failed"
    assert "not a readable COCO JSON" in win.transfers.report_dialog.summary.text()
    assert win.project.count_annotations() == 1


def test_about_shows_the_version(win, qtbot):
    _action(win, "About CaR Desktop").trigger()
    dlg = win.about_dialog
    qtbot.waitUntil(dlg.isVisible, timeout=2000)
    assert car_desktop.__version__ in dlg.version_label.text()
    assert "TEST MODELS" in dlg.findChildren(type(dlg.version_label))[-1].text()
    dlg.close()
