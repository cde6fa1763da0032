"""File > Auto-label folder… in the window (pytest-qt, offscreen, a fake engine): progress, results landing
in the file list, cancel, a reviewed or edited image left untouched, and the window usable meanwhile."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from car_desktop.engine.concepts import ConceptList
from car_desktop.engine.config import preset
from car_desktop.engine.errors import WeightsMissingError
from car_desktop.ui.autolabel_run import AutoLabelRequest
from fakes import FakePipeline, fake_window


def _folder(root: Path, n: int = 5) -> Path:
    folder = root / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (36, 48, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def win(qtbot, tmp_path):
    w = fake_window(qtbot, tmp_path)
    qtbot.waitUntil(lambda: w.engine.ready, timeout=5000)
    folder = _folder(tmp_path)
    with qtbot.waitSignal(w.imageShown, timeout=5000):
        assert w.open_folder(folder)
    w.folder = folder
    yield w
    w.fake.permits = None
    w.close()


def _request(win, concepts="cat, dog", overwrite=False):
    return AutoLabelRequest(ConceptList.parse(concepts), preset("objects", sam_mode="off"), win.folder, overwrite)


def _texts(fake: FakePipeline) -> list[str]:
    """The concept lists of the runs so far: "cat, dog" is the folder run's, "cup" the window's."""
    return [c.text for c in fake.calls]


def _ids(win):
    return {Path(im.rel_path).stem: im.id for im in win.project.list_images()}


def test_autolabel_progress_results_and_protected_images(win, qtbot, monkeypatch):
    (win.folder / "zero.png").write_bytes(b"")          # reported as a failure, never a crash
    (win.folder / "img4.png").write_bytes(b"broken since it was added")   # in the project, unreadable now
    p = win.project
    ids = _ids(win)
    # img0: a person reviewed it (with a manual mask); img1: a person edited its CaR mask.
    cat = p.get_or_create_category("cat")
    manual = np.zeros((36, 48), bool)
    manual[2:9, 3:20] = True
    keep0 = p.add_annotation(ids["img0"], cat.id, manual, source="manual", edited=True)
    win.annotator.mark_reviewed()                         # img0 is the open image
    keep1 = p.add_annotation(ids["img1"], cat.id, manual, score=0.4, source="car", edited=True)
    p.set_image_status(ids["img1"], "auto")
    win.file_list.set_status(ids["img1"], "auto")
    before = {i: [(a.id, a.updated_at) for a in p.list_annotations(i)] for i in (ids["img0"], ids["img1"])}

    # The dialog comes prefilled from the concept bar; accepting it starts the run.
    win.concept_bar.set_text("cat, dog")
    from car_desktop.ui import autolabel_dialog

    seen: dict = {}

    def fake_exec(dlg):
        seen.update(concepts=dlg.concepts.toPlainText(), folder=dlg.folder.text(), skip=dlg.skip_reviewed.isChecked(),
                    skip_enabled=dlg.skip_reviewed.isEnabled())
        dlg.sam_combo.setCurrentIndex(dlg.sam_combo.findData("off"))
        dlg.accept()                      # what pressing OK does: checks and parses the request
        return dlg.result()

    monkeypatch.setattr(autolabel_dialog.AutoLabelDialog, "exec", fake_exec)
    snapshots, landed = [], []
    win.autolabel.progressed.connect(snapshots.append)
    # When an image lands, the file list already shows it (the window's slot ran first).
    win.autolabel.imageLabelled.connect(lambda iid, st, _d: landed.append((iid, st, win.file_list.status(iid))))
    with qtbot.waitSignal(win.autolabel.finished, timeout=15000) as blocker:
        win.autolabel_controller.ask()
    assert seen == {"concepts": "cat, dog", "folder": str(win.folder), "skip": True, "skip_enabled": False}
    last, stopped, error = blocker.args
    assert not stopped and error == ""
    assert (last.total, last.done, last.skipped, last.failed) == (6, 2, 2, 2)
    assert last.failures[0].path == "zero.png" and "0 bytes" in last.failures[0].reason
    assert last.failures[1].path == "img4.png"
    broken = ids["img4"]
    assert win.file_list.status(broken) == "error" and "img4.png" in win.file_list.item(4).toolTip()
    # Progress advanced one image at a time up to the end.
    done_counts = [s.done for s in snapshots if s.event == "image done"]
    assert done_counts == [1, 2]
    assert all(s.eta_s is not None for s in snapshots if s.event == "image done")
    # Results landed in the file list as they came.
    assert landed == [(ids["img2"], "auto", "auto"), (ids["img3"], "auto", "auto"), (broken, "error", "error")]
    dlg = win.autolabel_controller.progress_dialog
    assert dlg.bar.value() == dlg.bar.maximum() == 4
    assert dlg.count_label.text().startswith("4 of 4 images") and "2 skipped" in dlg.count_label.text()
    assert dlg.failures.count() == 2 and dlg.cancel_button.text() == "Close"
    assert p.count_annotations(broken) == 0 and p.get_image(broken).status == "new"
    for n in ("img2", "img3"):
        anns = p.list_annotations(ids[n])
        assert sorted(p.get_category(a.category_id).name for a in anns) == ["cat", "dog"]
        assert p.get_image(ids[n]).status == "auto"
    # The reviewed image and the edited image are exactly as they were.
    assert p.get_image(ids["img0"]).status == "reviewed" and win.file_list.status(ids["img0"]) == "reviewed"
    for i in (ids["img0"], ids["img1"]):
        assert [(a.id, a.updated_at) for a in p.list_annotations(i)] == before[i]
    assert np.array_equal(p.get_mask(keep0.id), manual) and np.array_equal(p.get_mask(keep1.id), manual)
    # The open image (img0) was not reloaded into something else; the queue lists the new masks.
    qtbot.waitUntil(lambda: win.review_panel.total == 5, timeout=5000)   # 4 new + img1's edited one

    # A second run resumes: everything is skipped, nothing recomputed.
    calls = len(win.fake.calls)
    with qtbot.waitSignal(win.autolabel.finished, timeout=10000) as blocker:
        assert win.autolabel_controller.start(_request(win))
    again = blocker.args[0]     # the broken image is tried again (a failure is not "done") and fails again
    assert (again.done, again.skipped, again.failed) == (0, 4, 2) and len(win.fake.calls) == calls
    assert win.file_list.status(broken) == "error"


def test_cancel_keeps_window_usable_and_interleaves_interactive_runs(win, qtbot):
    ids = _ids(win)
    win.autolabel.chunk = 1
    fake = win.fake
    fake.permits = threading.Semaphore(0)
    assert win.autolabel_controller.start(_request(win))
    qtbot.waitUntil(lambda: _texts(fake) == ["cat, dog"], timeout=5000)
    dlg = win.autolabel_controller.progress_dialog
    qtbot.waitUntil(lambda: dlg.current_label.text() == "Now: img0.png", timeout=3000)
    assert dlg.isVisible() and not dlg.isModal()
    # The window stays usable: another image opens while the engine is busy.
    first = win.image_id
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        win.step_image(+1)
    assert win.image_id == ids["img1"] != first
    # An interactive CaR run waits for the image in progress only, not for the whole folder.
    win.concept_bar.set_text("cup")
    win.concept_bar.request_run()
    with qtbot.waitSignal(win.carApplied, timeout=5000):
        fake.permits.release(2)          # the folder's image in progress, then the window's run
    assert _texts(fake)[:2] == ["cat, dog", "cup"]
    assert win.file_list.status(ids["img0"]) == "auto"
    # img1 (its interactive result is nobody's edit) is labelled next; img2 is held and cancelled.
    fake.permits.release()
    qtbot.waitUntil(lambda: _texts(fake).count("cat, dog") == 3, timeout=5000)
    assert win.autolabel.last.done == 2
    assert [ly.name for ly in win.stack.layers()] == ["cat", "dog"]   # the open img1 shows the run's masks
    with qtbot.waitSignal(win.autolabel.finished, timeout=5000) as blocker:
        dlg.cancel_button.click()
    last, stopped, error = blocker.args
    assert stopped and error == "" and last.done == 2
    assert not win.runner.running("autolabel")
    labelled = [n for n in ("img0", "img1", "img2", "img3", "img4") if win.project.count_annotations(ids[n])]
    assert sorted(labelled) == ["img0", "img1"]
    for n in ("img2", "img3", "img4"):
        assert win.project.get_image(ids[n]).status == "new" and win.file_list.status(ids[n]) == "new"
    assert "Cancelled" in dlg.time_label.text() and dlg.cancel_button.text() == "Close"
    # A new run picks up where the cancelled one stopped.
    fake.permits = None
    with qtbot.waitSignal(win.autolabel.finished, timeout=10000) as blocker:
        assert win.autolabel_controller.start(_request(win))
    assert blocker.args[0].done == 3 and blocker.args[0].skipped == 2


def test_open_image_masks_refresh_and_engine_errors(win, qtbot):
    """The image on screen shows its new masks when the run reaches it; a missing model stops the run."""
    assert win.image_id == _ids(win)["img0"] and len(win.stack) == 0
    with qtbot.waitSignal(win.autolabel.finished, timeout=10000):
        win.autolabel_controller.start(_request(win, "cat"))
    names = sorted(ly.name for ly in win.stack.layers())
    assert names == ["cat"] and win.stack.layers()[0].status == "kept_without_competition"
    win.fake.fail_with = WeightsMissingError("ViT-B-16 weights are missing: put them in /models")
    with qtbot.waitSignal(win.autolabel.finished, timeout=10000) as blocker:
        win.autolabel_controller.start(_request(win, "cat, dog"))
    _last, stopped, error = blocker.args
    assert stopped and "ViT-B-16" in error and "ViT-B-16" in win.last_error
    assert "Stopped" in win.autolabel_controller.progress_dialog.time_label.text()
    assert not win.autolabel.running


def test_bad_concepts_and_second_run_refused(win, qtbot):
    from car_desktop.ui.autolabel_dialog import AutoLabelDialog, format_duration

    dlg = AutoLabelDialog(folder=str(win.folder), concepts=" , ,", parent=win)
    dlg.accept()
    assert not dlg.error_label.isHidden() and "concept" in dlg.error_label.text().lower() and dlg.result() == 0
    dlg.concepts.setPlainText("cat")
    dlg.folder.setText(str(win.folder / "nope"))
    assert "folder" in dlg.problem()
    assert format_duration(42) == "about 42 s" and format_duration(185) == "about 3 min"
    assert format_duration(3 * 3600 + 300) == "about 3 h 05 min" and format_duration(None) == ""
    win.fake.permits = threading.Semaphore(0)
    assert win.autolabel_controller.start(_request(win))
    assert not win.autolabel_controller.start(_request(win))
    with qtbot.waitSignal(win.autolabel.finished, timeout=5000):
        win.autolabel.cancel()


def test_opening_another_folder_stops_the_run(win, qtbot, tmp_path):
    win.fake.permits = threading.Semaphore(0)
    assert win.autolabel_controller.start(_request(win))
    qtbot.waitUntil(lambda: _texts(win.fake) == ["cat, dog"], timeout=5000)
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(other / "x.png")
    with qtbot.waitSignal(win.autolabel.finished, timeout=5000) as blocker:
        assert win.open_folder(other)
    last, stopped, error = blocker.args
    assert stopped and error == "" and last.done == 0
    assert win.project.image_root == other and win.file_list.keys()
