"""Nothing the user did is lost without a word (pytest-qt, offscreen, fake engine): a CaR run outlives a
change of image and lands on its own image, a cancel says so, an unreadable image is shown as such,
messages are kept in full, and the review queue follows every change."""

from __future__ import annotations

import io
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtWidgets import QMessageBox

from fakes import FakePipeline, fake_window


def _images(folder: Path, data_dir: Path, n: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(["astronaut.jpg", "chelsea.jpg", "coffee.jpg"][:n]):
        p = folder / f"img{i}.png"
        Image.open(data_dir / name).convert("RGB").resize((128, 96)).save(p)
        out.append(p)
    return out


@pytest.fixture
def win(qtbot, tmp_path, data_dir):
    window = fake_window(qtbot, tmp_path, FakePipeline(sam=None))
    qtbot.waitUntil(lambda: window.engine.ready, timeout=5000)
    _images(tmp_path / "images", data_dir, 3)
    with qtbot.waitSignal(window.imageShown, timeout=5000):
        assert window.open_folder(tmp_path / "images")
    yield window
    window.close()


def _start_gated_run(win, text: str = "cat") -> threading.Event:
    gate = threading.Event()
    win.fake.gate = gate
    win.fake.started.clear()
    win.concept_bar.set_text(text)
    win.concept_bar.request_run()
    assert win.fake.started.wait(5)
    return gate


# --------------------------------------------------------------------------- a run outlives a change of image
def test_run_lands_on_its_own_image_and_is_undoable_there(win, qtbot):
    first = win.image_id
    gate = _start_gated_run(win, "cat")
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        win.step_image(+1)                     # does not wait for the run
    second = win.image_id
    assert second != first and win.runner.busy("engine")
    shown_before = win.canvas.grab().toImage()
    with qtbot.waitSignal(win.carLanded, timeout=5000) as landed:
        gate.set()
    assert landed.args[0] == first
    # Stored on the image it was started on, with the band the fake makes; B is untouched.
    (ann,) = win.project.list_annotations(first)
    mask = win.project.get_mask(ann.id)
    expected = np.zeros((96, 128), bool)
    expected[24:72, 1:127] = True
    assert np.array_equal(mask, expected)
    assert win.project.count_annotations(second) == 0 and len(win.stack) == 0
    assert win.canvas.grab().toImage() == shown_before
    assert win.file_list.status(first) == "auto" and win.project.get_image(first).status == "auto"
    assert "finished after you moved on" in win.messages.texts()[-1]
    # Back on A: the run's mask is shown, and one undo removes it from the store.
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        win.show_image(first)
    assert np.array_equal(win.stack.find(name="cat").mask, expected)
    assert win.annotator.can_undo()
    assert win.annotator.undo()
    assert win.project.count_annotations(first) == 0
    assert win.annotator.redo() and win.project.count_annotations(first) == 1


def test_run_that_replaces_masks_elsewhere_brings_them_back_on_undo(win, qtbot):
    first = win.image_id
    with qtbot.waitSignal(win.carApplied, timeout=5000):
        win.concept_bar.set_text("cat, dog")
        win.concept_bar.request_run()
    old = {a.id: win.project.get_mask(a.id) for a in win.project.list_annotations(first)}
    assert len(old) == 2
    gate = _start_gated_run(win, "cat")
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        win.step_image(+1)
    with qtbot.waitSignal(win.carLanded, timeout=5000):
        gate.set()
    assert win.project.count_annotations(first) == 1        # "cat, dog" replaced by "cat"
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        win.show_image(first)
    assert win.annotator.undo()
    back = sorted(win.project.get_mask(a.id).sum() for a in win.project.list_annotations(first))
    assert back == sorted(m.sum() for m in old.values())


def test_explicit_cancel_says_so_and_writes_nothing(win, qtbot):
    _start_gated_run(win, "cat")
    with qtbot.waitSignal(win.engine.carCancelled, timeout=5000):
        win.cancel_job()                       # Esc
    assert win.project.count_annotations() == 0
    assert any("cancelled: nothing of it was saved" in t for t in win.messages.texts())
    assert "cancelled" in win.status.currentMessage()


# --------------------------------------------------------------------------- unreadable images
def _truncated_jpeg(path: Path, data_dir: Path) -> None:
    buf = io.BytesIO()
    Image.open(data_dir / "astronaut.jpg").convert("RGB").resize((128, 96)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_corrupt_image_opened_shows_notice_not_the_previous_image(win, qtbot, tmp_path, data_dir):
    assert win.canvas.has_image()
    bad = tmp_path / "images" / "photo.jpg"
    bad.write_bytes(b"this is not a JPEG")
    assert not win.open_image(bad)
    assert "photo.jpg" in win.last_error and "photo.jpg" in win.messages.texts()[-1]
    assert not win.canvas.has_image() and len(win.stack) == 0 and win.image_id is None
    assert win.canvas.notice().startswith("Cannot read photo.jpg: ")
    assert win.file_list.status(("failed", "photo.jpg")) == "error"


def test_truncated_image_shows_notice(win, qtbot, tmp_path, data_dir):
    _truncated_jpeg(tmp_path / "images" / "zz.jpg", data_dir)
    win.refresh_file_list()
    win.open_folder(tmp_path / "images")
    rec = win.project.find_image("zz.jpg")
    win.show_image(rec.id)
    qtbot.waitUntil(lambda: win.file_list.status(rec.id) == "error", timeout=5000)
    assert not win.canvas.has_image() and "zz.jpg" in win.canvas.notice()


def test_folder_of_only_corrupt_files_makes_no_project_when_declined(qtbot, tmp_path, monkeypatch):
    window = fake_window(qtbot, tmp_path)
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(b"\xff\xd8 truncated")
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.No)
    assert not window.open_folder(folder)
    assert asked and "photo.jpg" in asked[0]
    assert sorted(p.name for p in folder.iterdir()) == ["photo.jpg"]       # no .cardb beside it
    assert window.project is None
    assert window.canvas.notice().startswith("Cannot read photo.jpg")
    assert window.file_list.status(("failed", "photo.jpg")) == "error"
    assert any("No project was created" in t for t in window.messages.texts())
    # Yes makes one.
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    assert window.open_folder(folder) and (folder / "car-desktop.cardb").exists()
    window.close()


# --------------------------------------------------------------------------- messages
def test_messages_log_keeps_long_warnings_and_engine_log_records(win, qtbot):
    long = "Concept 'x' is 99 tokens long; " + "very long explanation " * 30
    with qtbot.waitSignal(win.messages.added, timeout=3000):
        logging.getLogger("car_desktop.engine.pipeline").warning("%s", long)   # any thread, any engine module
    assert long.strip() in win.messages.texts()
    row = win.messages.item(win.messages.count() - 1)
    assert row.toolTip() == long.strip() and row.text().endswith(long.strip())
    # From a worker thread too.
    worker = threading.Thread(target=lambda: logging.getLogger("car_desktop.engine").warning("from a worker"))
    with qtbot.waitSignal(win.messages.added, timeout=3000):
        worker.start()
        worker.join()
    assert win.messages.texts()[-1] == "from a worker"
    # The dock is reachable from the View menu.
    view = next(a.menu() for a in win.menuBar().actions() if a.text() == "&View")
    toggle = next(a for a in view.actions() if a.text() == "Messages")
    toggle.trigger()
    assert win.messages_dock.isVisible()


def test_hover_readout_does_not_replace_a_message(win, qtbot):
    win.annotator.apply_op("fill_holes")          # nothing selected
    assert win.status.currentMessage() == "Select a mask first."
    win.canvas.hovered.emit("cat (0.80)")
    win.canvas.cursorMoved.emit(10, 20)
    assert win.status.currentMessage() == "Select a mask first."
    r, g, b = (int(v) for v in win.image[20, 10])
    assert win.status.hover_label.text() == "cat (0.80)"
    assert win.status.pixel_label.text() == f"10, 20  RGB {r} {g} {b}"
    assert "Select a mask first." in win.messages.texts()


# --------------------------------------------------------------------------- review queue
def test_review_queue_follows_undo_and_redo(win, qtbot):
    panel = win.review_panel
    with qtbot.waitSignal(win.carApplied, timeout=5000):
        win.concept_bar.set_text("cat, dog")
        win.concept_bar.request_run()
    qtbot.waitUntil(lambda: panel.tree.topLevelItemCount() == 2, timeout=5000)
    win.annotator.undo()
    qtbot.waitUntil(lambda: panel.tree.topLevelItemCount() == 0, timeout=5000)
    win.annotator.redo()
    qtbot.waitUntil(lambda: panel.tree.topLevelItemCount() == 2, timeout=5000)


# --------------------------------------------------------------------------- exports
def test_export_gets_ordinary_permissions(win, qtbot, tmp_path):
    with qtbot.waitSignal(win.carApplied, timeout=5000):
        win.concept_bar.set_text("cat")
        win.concept_bar.request_run()
    old = os.umask(0o022)
    try:
        out = tmp_path / "export.json"
        with qtbot.waitSignal(win.transfers.done, timeout=10000):
            win.transfers.export_coco(win.project, out, fmt="rle")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------- undo restores the state before
def test_edited_mark_cleared_when_every_edit_is_undone(win, qtbot):
    from car_desktop.annotations import mask_ops

    with qtbot.waitSignal(win.carApplied, timeout=5000):
        win.concept_bar.set_text("cat")
        win.concept_bar.request_run()
    layer = win.stack.find(name="cat")
    ann_id = win.annotator.annotation_id(layer.id)
    for point in ((40, 40), (50, 60)):
        _new, edit = mask_ops.erase(layer.mask, [point], 2)
        win.annotator.commit_mask_edit(layer.id, edit, "Eraser")
    assert layer.edited and win.project.get_annotation(ann_id).edited
    win.annotator.undo()
    assert layer.edited and win.project.get_annotation(ann_id).edited      # one edit is left
    win.annotator.undo()
    assert not layer.edited and not win.project.get_annotation(ann_id).edited
    row = win.concept_panel.tree.topLevelItem(0)
    assert "edited" not in row.text(2)
    win.annotator.redo()
    assert layer.edited and win.project.get_annotation(ann_id).edited and "edited" in row.text(2)


def test_undo_of_a_run_removes_the_categories_it_created(win, qtbot):
    with qtbot.waitSignal(win.carApplied, timeout=5000):
        win.concept_bar.set_text("sofa")
        win.concept_bar.request_run()
    with qtbot.waitSignal(win.carApplied, timeout=5000):
        win.concept_bar.set_text("sofa, lamp, bird")
        win.concept_bar.request_run()
    before = {c.name: c.id for c in win.project.list_categories()}
    assert set(before) == {"sofa", "lamp", "bird"}
    win.annotator.undo()         # the second run: lamp and bird go, sofa (the first run's mask) stays
    assert [c.name for c in win.project.list_categories()] == ["sofa"]
    assert win.annotator.redo()
    assert {c.name: c.id for c in win.project.list_categories()} == before
    assert win.project.count_annotations(win.image_id) == 3
    assert {win.project.get_category(a.category_id).name for a in win.project.list_annotations(win.image_id)} \
        == {"sofa", "lamp", "bird"}


def test_mask_status_names_force_kept_and_auto_labelled_masks():
    from car_desktop.annotations.mask_status import short_status, status_text
    from car_desktop.annotations.provenance import Provenance

    assert short_status("car", "forced") == "force-kept"
    assert short_status("car", "kept", "autolabel") == "auto-labelled"
    assert short_status("car", "kept_without_competition", "autolabel") == "kept alone"
    assert short_status("sam", None) == "SAM"
    assert status_text("car", Provenance(status="kept", status_text="kept (score 0.83)", origin="autolabel")) \
        == "auto-labelled: kept (score 0.83)"
    assert status_text("car", Provenance(status="forced", status_text="force-kept (kept alone)")) \
        == "force-kept (kept alone)"
    assert status_text("car", Provenance(status="kept", status_text="kept (score 0.5)", origin="window")) \
        == "kept (score 0.5)"
