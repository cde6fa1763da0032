"""The main window end to end (pytest-qt, offscreen): open, run, edit, undo, export, and failures."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPointF, QSettings, Qt

from car_desktop.annotations import mask_ops
from car_desktop.annotations.auto_labels import auto_mask
from car_desktop.annotations.models import Edit, Rect
from car_desktop.ui.main_window import MainWindow
from car_desktop.ui.settings import Settings
from fakes import FakeManager, FakePipeline


# --------------------------------------------------------------------------- fixtures
def _write_images(folder: Path, data_dir: Path, n: int = 2, size=(128, 96)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(["astronaut.jpg", "chelsea.jpg", "coffee.jpg"][:n]):
        img = Image.open(data_dir / name).convert("RGB").resize(size)
        p = folder / f"img{i}.png"
        img.save(p)
        out.append(p)
    return out


@pytest.fixture
def settings(tmp_path):
    return Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def fake_window(qtbot, settings, tmp_path, data_dir):
    pipe = FakePipeline()
    win = MainWindow(test_models=True, settings=settings, pipeline_factory=lambda t, c: pipe)
    win.fake = pipe
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.engine.ready, timeout=5000)
    folder = tmp_path / "images"
    _write_images(folder, data_dir, 3)
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        assert win.open_folder(folder)
    yield win
    win.close()


def _run(win, qtbot, text: str):
    win.concept_bar.set_text(text)
    with qtbot.waitSignal(win.carApplied, timeout=10000):
        qtbot.keyClick(win.concept_bar.edit, Qt.Key.Key_Return)


# --------------------------------------------------------------------------- the whole flow, tiny real models
@pytest.mark.slow
def test_whole_flow_with_test_models(qtbot, settings, tmp_path, data_dir):
    from pycocotools.coco import COCO

    win = MainWindow(test_models=True, settings=settings)
    qtbot.addWidget(win)
    win.show()
    assert "TEST MODELS" in win.windowTitle()
    folder = tmp_path / "photos"
    _write_images(folder, data_dir, 2)
    with qtbot.waitSignal(win.imageShown, timeout=10000):
        win.open_folder(folder)
    assert win.file_list.count() == 2
    qtbot.waitUntil(lambda: win.engine.ready, timeout=60000)
    win.concept_bar.sam_combo.setCurrentIndex(win.concept_bar.sam_combo.findData("off"))
    win.concept_bar.set_text("sky")   # one concept: kept without competition, so a mask always comes back
    with qtbot.waitSignal(win.carApplied, timeout=60000) as blocker:
        qtbot.keyClick(win.concept_bar.edit, Qt.Key.Key_Return)
    added = blocker.args[0]
    assert len(added) == 1 and added[0].mask.any()
    layer = added[0]
    assert win.canvas.overlay_rgba()[..., 3].astype(bool).sum() == layer.mask.sum()
    assert win.concept_panel.tree.topLevelItemCount() == 1
    assert win.file_list.status(win.image_id) == "auto"

    # Brush an edit on the selected layer.
    win.stack.select(layer.id)
    before = layer.mask.copy()
    win.set_tool("brush")
    win.tools["brush"].set_radius(4)
    target = np.argwhere(~layer.mask)[0]   # an unmasked pixel (row, col)
    y, x = int(target[0]), int(target[1])
    vp = win.canvas.viewport()
    pos = win.canvas.mapFromScene(QPointF(x + 0.5, y + 0.5))
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pos)
    assert layer.mask[y, x]
    edited = layer.mask.copy()
    ann_id = win.annotator.annotation_id(layer.id)
    assert np.array_equal(win.project.get_mask(ann_id), edited)   # saved at once
    qtbot.keyClick(win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(layer.mask, before)
    assert np.array_equal(win.project.get_mask(ann_id), before)
    qtbot.keyClick(win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert np.array_equal(layer.mask, edited)

    # Export COCO and read it back with pycocotools.
    out = tmp_path / "export.json"
    with qtbot.waitSignal(win.transfers.done, timeout=20000):
        win.transfers.export_coco(win.project, out, fmt="rle")
    coco = COCO(str(out))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == 1
    assert np.array_equal(coco.annToMask(anns[0]).astype(bool), edited)
    assert coco.loadCats(anns[0]["category_id"])[0]["name"] == "sky"
    win.close()


@pytest.mark.slow
def test_sam_clicks_on_the_tiny_sam_reuse_the_background_embedding(qtbot, settings, tmp_path, data_dir,
                                                                    monkeypatch):
    """Real (tiny) SAM: the embedding is made once in the background when the image opens; clicks only decode."""
    from car_desktop.engine.config import preset
    from car_desktop.engine.pipeline import CaRPipeline

    pipe = CaRPipeline(preset("objects", sam_mode="off", device="cpu"), test_models=True)
    win = MainWindow(test_models=True, settings=settings, pipeline_factory=lambda t, c: pipe)
    qtbot.addWidget(win)
    win.show()
    folder = tmp_path / "photos"
    _write_images(folder, data_dir, 1)
    with qtbot.waitSignal(win.imageShown, timeout=10000):
        win.open_folder(folder)
    qtbot.waitUntil(lambda: win.engine.sam_ready, timeout=60000)
    counter = pipe.counter
    qtbot.waitUntil(lambda: counter.sam_image_encodes == 1, timeout=30000)
    monkeypatch.setattr(win, "ask_category", lambda *a: "cup")
    win.new_mask_by_sam()
    vp = win.canvas.viewport()
    for x, y, button in ((40, 40, Qt.MouseButton.LeftButton), (90, 70, Qt.MouseButton.RightButton)):
        with qtbot.waitSignal(win.engine.samPredicted, timeout=20000) as blocker:
            qtbot.mouseClick(vp, button, pos=win.canvas.mapFromScene(QPointF(x, y)))
        assert blocker.args[1].shape == (96, 128)
    assert counter.sam_image_encodes == 1 and counter.sam_decodes >= 2
    qtbot.keyClick(win.canvas, Qt.Key.Key_Return)   # accept: a (possibly empty) mask is a normal outcome
    assert win.stack.find(name="cup") is not None
    win.close()


# --------------------------------------------------------------------------- fast flows on a fake engine
def test_run_shows_layers_statuses_and_undo_group(fake_window, qtbot):
    win = fake_window
    _run(win, qtbot, "cat, absent, dog")
    names = {ly.name: ly for ly in win.stack.layers()}
    assert set(names) == {"cat", "absent", "dog"}
    assert names["absent"].removed and "removed at step 2" in names["absent"].status_text
    assert win.project.count_annotations(win.image_id) == 2
    # The whole CaR result is one undo step.
    win.annotator.undo()
    assert win.project.count_annotations(win.image_id) == 0
    assert not [ly for ly in win.stack.layers() if not ly.removed]
    win.annotator.redo()
    assert win.project.count_annotations(win.image_id) == 2
    # Force-keep the removed concept: a single-concept run gives it a mask.
    win.force_keep(names["absent"].id)
    qtbot.waitUntil(lambda: win.stack.find(name="absent") is not None and not win.stack.find(name="absent").removed,
                    timeout=5000)
    assert win.project.count_annotations(win.image_id) == 3
    # Recent concept lists are remembered in the project.
    assert win.project.get_setting("ui.recent_concepts")[0] == "cat, absent, dog"


def test_reopen_shows_saved_state(fake_window, qtbot):
    win = fake_window
    _run(win, qtbot, "cat, absent")
    first = win.image_id
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        win.step_image(+1)
    assert win.image_id != first and len(win.stack) == 0
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        win.step_image(-1)
    names = sorted((ly.name, ly.removed) for ly in win.stack.layers())
    assert names == [("absent", True), ("cat", False)]


def test_cancel_mid_run(fake_window, qtbot):
    win = fake_window
    win.fake.gate = threading.Event()
    win.concept_bar.set_text("cat, dog")
    win.concept_bar.request_run()
    assert win.fake.started.wait(5)
    qtbot.waitUntil(lambda: win.status.cancel_button.isVisible(), timeout=3000)
    with qtbot.waitSignal(win.engine.carCancelled, timeout=5000):
        win.status.cancel_button.click()
    assert len(win.stack) == 0 and win.project.count_annotations() == 0
    qtbot.waitUntil(lambda: not win.status.cancel_button.isVisible(), timeout=3000)


def test_worker_error_keeps_window_usable(fake_window, qtbot):
    win = fake_window
    win.fake.fail_with = RuntimeError("boom in the engine")
    win.concept_bar.set_text("cat")
    with qtbot.waitSignal(win.engine.carFailed, timeout=5000):
        win.concept_bar.request_run()
    assert "boom in the engine" in win.last_error
    win.fake.fail_with = None
    _run(win, qtbot, "cat")
    assert win.project.count_annotations(win.image_id) == 1


def test_sam_clicks_new_mask_and_refine(fake_window, qtbot, monkeypatch):
    win = fake_window
    qtbot.waitUntil(lambda: win.engine.sam_ready, timeout=3000)
    monkeypatch.setattr(win, "ask_category", lambda *a: "cup")
    win.new_mask_by_sam()
    vp = win.canvas.viewport()
    with qtbot.waitSignal(win.engine.samPredicted, timeout=5000):
        qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=win.canvas.mapFromScene(QPointF(40, 40)))
    assert win.tools["sam"].preview is not None and win.tools["sam"].preview.sum() == 100
    qtbot.keyClick(win.canvas, Qt.Key.Key_Return)
    cup = win.stack.find(name="cup")
    assert cup is not None and cup.mask.sum() == 100
    assert win.project.count_annotations(win.image_id) == 1
    win.annotator.undo()
    assert win.project.count_annotations(win.image_id) == 0


def test_mask_ops_split_delete_fill(fake_window, qtbot):
    win = fake_window
    _run(win, qtbot, "cat")
    layer = win.stack.find(name="cat")
    win.stack.select(layer.id)
    _new, edit = mask_ops.erase(layer.mask, [(41, 41), (42, 42)], 1)
    win.annotator.commit_mask_edit(layer.id, edit, "Eraser")
    assert not layer.mask[41, 41]
    win.annotator.apply_op("fill_holes")
    assert layer.mask[41, 41]
    # Cut the band in two and split.
    h, _w = layer.mask.shape
    _new, edit = mask_ops.subtract_polygon(layer.mask, [(60, 0), (64, 0), (64, h), (60, h)])
    win.annotator.commit_mask_edit(layer.id, edit, "Eraser")
    win.annotator.split_selected()
    cats = [ly for ly in win.stack.layers() if ly.name == "cat"]
    assert len(cats) == 2 and win.project.count_annotations(win.image_id) == 2
    win.annotator.merge_into_selected()
    assert len([ly for ly in win.stack.layers() if ly.name == "cat"]) == 1
    win.delete_selected()
    assert win.project.count_annotations(win.image_id) == 0
    win.annotator.undo()
    assert win.project.count_annotations(win.image_id) == 1


def test_hundred_undo_steps(fake_window, qtbot):
    win = fake_window
    _run(win, qtbot, "cat")
    layer = win.stack.find(name="cat")
    original = layer.mask.copy()
    for i in range(120):
        y, x = i % 90, (i * 7) % 120
        pixel = layer.mask[y:y + 1, x:x + 1]
        win.annotator.commit_mask_edit(layer.id, Edit(Rect(y, x, y + 1, x + 1), pixel.copy(), ~pixel), "Brush")
    for _ in range(120):
        assert win.annotator.undo()
    assert np.array_equal(layer.mask, original)


def test_mark_reviewed_and_next_previous(fake_window, qtbot):
    win = fake_window
    qtbot.keyClick(win, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert win.project.get_image(win.image_id).status == "reviewed"
    assert win.file_list.status(win.image_id) == "reviewed"
    first = win.image_id
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        qtbot.keyClick(win, Qt.Key.Key_D)
    assert win.image_id != first
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        qtbot.keyClick(win, Qt.Key.Key_A)
    assert win.image_id == first


def test_reviewed_is_shown_only_when_saved(fake_window, qtbot, monkeypatch):
    """The bug: a failed save still marked the image reviewed in the file list."""
    from car_desktop.annotations.errors import ProjectError

    win = fake_window
    image_id = win.image_id

    def disk_full(*args):
        raise ProjectError("disk full")

    monkeypatch.setattr(win.project, "set_image_status", disk_full)
    qtbot.keyClick(win, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert win.file_list.status(image_id) == "new" and "disk full" in win.last_error
    assert not win.annotator.mark_reviewed()
    monkeypatch.undo()
    assert win.annotator.mark_reviewed() and win.file_list.status(image_id) == "reviewed"
    assert win.project.get_image(image_id).status == "reviewed"


def test_window_and_folder_runs_store_the_same_record(fake_window, qtbot):
    """A run in the window stores what the folder loop stores: the typed provenance with the concept
    in the user's form, and the mask CaR made."""
    win = fake_window
    _run(win, qtbot, "car | automobile, absent")
    (ann,) = win.project.list_annotations(win.image_id)
    assert ann.provenance.concept == "car | automobile" and ann.provenance.origin == "window"
    assert ann.provenance.status == "kept_without_competition" and ann.provenance.models == {"proposal": "fake"}
    assert ann.provenance.config["preset"] == "objects"
    layer = win.stack.find(name="car")
    made = layer.mask.copy()
    assert layer.concept == "car | automobile" and np.array_equal(auto_mask(win.project, ann.id), made)
    ghost = win.stack.find(name="absent")
    assert ghost.removed and ghost.status_text == "removed at step 2 (score 0.12)"
    # An edited mask is protected by its category on the next run, whatever the layer shows.
    win.stack.select(layer.id)
    _new, edit = mask_ops.erase(layer.mask, [(40, 48)], 3)
    win.annotator.commit_mask_edit(layer.id, edit, "Eraser")
    edited = layer.mask.copy()
    assert not np.array_equal(edited, made)
    _run(win, qtbot, "car, absent")
    assert [a.id for a in win.project.list_annotations(win.image_id)] == [ann.id]
    assert np.array_equal(win.project.get_mask(ann.id), edited)
    assert np.array_equal(auto_mask(win.project, ann.id), made)
    # Deleting the mask and undoing it: the row comes back (a new id) and still finds what CaR made.
    win.annotator.delete_layer(layer.id)
    assert win.project.list_annotations(win.image_id) == []
    assert win.annotator.undo()
    (back,) = win.project.list_annotations(win.image_id)
    assert back.id != ann.id and np.array_equal(auto_mask(win.project, back.id), made)


def test_first_start_without_weights(qtbot, settings, tmp_path, data_dir):
    manager = FakeManager(missing=True)
    pipe = FakePipeline()
    win = MainWindow(test_models=False, settings=settings, pipeline_factory=lambda t, c: pipe, model_manager=manager)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.models_dialog is not None and win.models_dialog.isVisible(), timeout=3000)
    dlg = win.models_dialog
    assert dlg.table.rowCount() == 2 and "missing" in dlg.table.item(0, 2).text()
    assert dlg.missing() == ["ViT-B-16", "sam_vit_b"]
    # Offline download: a clear message, no crash.
    dlg.download_missing()
    qtbot.waitUntil(lambda: "no internet" in dlg.detail.text(), timeout=5000)
    # The app still opens images without models.
    folder = tmp_path / "imgs"
    _write_images(folder, data_dir, 1)
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        win.open_folder(folder)
    assert win.canvas.has_image() and not win.engine.ready
    # Choosing local files makes the models load.
    dlg.set_local_file("ViT-B-16", str(tmp_path / "w.pt"))
    qtbot.waitUntil(lambda: win.engine.ready, timeout=5000)
    win.close()


def test_read_only_folder_gets_project_in_user_data(qtbot, settings, tmp_path, data_dir, monkeypatch):
    import car_desktop.ui.project_session as ps

    monkeypatch.setenv("CAR_DESKTOP_DATA", str(tmp_path / "userdata"))
    monkeypatch.setattr(ps, "folder_writable", lambda folder: False)
    folder = tmp_path / "ro"
    _write_images(folder, data_dir, 1)
    win = MainWindow(test_models=True, settings=settings, pipeline_factory=lambda t, c: FakePipeline())
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        win.open_folder(folder)
    assert not (folder / ps.PROJECT_NAME).exists()
    assert str(win.project.path).startswith(str(tmp_path / "userdata"))
    win.close()


def test_corrupt_image_is_marked_and_skipped(qtbot, settings, tmp_path, data_dir):
    folder = tmp_path / "mixed"
    paths = _write_images(folder, data_dir, 2)
    # A truncated JPEG: the header (and size) reads, the pixels do not.
    jpeg = io.BytesIO()
    Image.open(paths[0]).save(jpeg, "JPEG")
    (folder / "img0b.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (folder / "garbage.jpg").write_bytes(b"not an image at all")
    win = MainWindow(test_models=True, settings=settings, pipeline_factory=lambda t, c: FakePipeline())
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        win.open_folder(folder)
    first = win.image_id
    # The file that is no image at all is not added but listed as an error with its reason; the
    # truncated one is added (its header reads).
    assert win.project.find_image("garbage.jpg") is None and win.file_list.count() == 4
    assert win.file_list.status(("failed", "garbage.jpg")) == "error"
    bad_rec = win.project.find_image("img0b.jpg")
    assert bad_rec is not None and bad_rec.id in win.file_list.keys()
    # Opening it marks it, says why, and shows that instead of the previous image.
    win.show_image(bad_rec.id)
    qtbot.waitUntil(lambda: win.file_list.status(bad_rec.id) == "error", timeout=5000)
    assert "img0b.jpg was skipped" in win.last_error
    assert win.image_id is None and not win.canvas.has_image() and len(win.stack) == 0
    assert win.canvas.notice().startswith("Cannot read img0b.jpg: ")
    # Next / previous skip it.
    assert win.file_list.neighbour(first, +1) not in (bad_rec.id, None)
    win.close()
