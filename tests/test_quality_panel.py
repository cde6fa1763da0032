"""Auto-label quality on reviewed images: the auto-label record is written with the CaR results (folder
loop and window) and survives the person's edits; the comparison gives hand-computed numbers; the Quality
panel (pytest-qt, offscreen) shows them, and the window registers it in the View menu. Also the tuned
thresholds of a project showing up in the concept bar."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from car_desktop.annotations import Project
from car_desktop.annotations.auto_labels import AUTO_LABELS_SETTING, read_auto_labels
from car_desktop.annotations.car_results import apply_car_result
from car_desktop.autolabel import AutoLabelJob, run_autolabel
from car_desktop.engine.config import preset
from car_desktop.evaluation.quality import compare_reviewed
from car_desktop.evaluation.tuning import TUNED_SETTING
from fakes import FakePipeline, car_result, fake_window

H, W = 20, 30
CONFIG = preset("objects").to_dict()


def rect(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def run(p: Project, image_id: int, rows) -> dict[str, int]:
    """Store a scripted CaR result as the window does; returns the new annotation ids by concept name."""
    applied = apply_car_result(p, image_id, car_result(rows, config=CONFIG), origin="window")
    return {a.category.name: a.annotation.id for a in applied.added}


@pytest.fixture
def reviewed(tmp_path: Path) -> Path:
    """Images a, b (reviewed, auto-labelled then edited), c (auto only), d (reviewed, labelled by hand)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in "abcd":
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(folder / f"{name}.png")
    path = folder / "q.cardb"
    with Project.create(path, folder) as p:
        ids = {Path(r.rel_path).stem: r.id for r in p.add_images(folder)}
        # a: CaR said cat (200 px), dog (100 px), removed sky; the person shrank cat, deleted dog, drew sky.
        a = run(p, ids["a"], [("cat", rect(0, 10, 0, 20), 0.8), ("dog", rect(10, 20, 20, 30), 0.6),
                              ("sky | heaven", None, 0.2)])
        p.update_mask(a["cat"], rect(0, 10, 0, 10))
        p.delete_annotation(a["dog"])
        p.add_annotation(ids["a"], p.find_category("sky").id, rect(15, 20, 0, 10))
        # b: CaR right about everything: cat, removed dog, sky; accepted as it is.
        run(p, ids["b"], [("cat", rect(5, 15, 5, 15), 0.7), ("dog", None, 0.1),
                          ("sky | heaven", rect(0, 5, 0, 30), 0.9)])
        run(p, ids["c"], [("cat", rect(0, 20, 0, 30), 0.9)])
        p.add_annotation(ids["d"], p.find_category("dog").id, rect(0, 5, 0, 5))
        for name in "abd":
            p.set_image_status(ids[name], "reviewed")
    return path


def test_comparison_gives_hand_computed_numbers(reviewed):
    with Project.open(reviewed) as p:
        assert p.find_image("c.png").status == "auto"
        rep = compare_reviewed(p)
    assert (rep.reviewed, rep.compared, rep.without_auto_labels) == (3, 2, 1)
    q = {c.name: c for c in rep.concepts}
    assert [c.name for c in rep.concepts] == ["cat", "dog", "sky"]
    assert (q["cat"].intersection, q["cat"].union) == (200, 300) and q["cat"].iou == pytest.approx(2 / 3)
    assert q["dog"].iou == 0.0 and (q["dog"].presence.fp, q["dog"].presence.tn) == (1, 1)
    assert math.isnan(q["dog"].presence.recall)
    assert q["sky"].iou == pytest.approx(150 / 200)
    assert (q["sky"].presence.tp, q["sky"].presence.fn) == (1, 1) and q["sky"].presence.f1 == pytest.approx(2 / 3)
    t = rep.presence
    assert (t.tp, t.fp, t.fn, t.tn) == (3, 1, 1, 1) and t.f1 == pytest.approx(0.75)
    assert rep.mean_iou == pytest.approx((2 / 3 + 0 + 0.75) / 3)


def test_autolabel_keeps_the_pre_edit_auto_labels_and_edits_leave_them(tmp_path):
    from test_autolabel import write_images

    folder = tmp_path / "imgs"
    write_images(folder, 1)
    with Project.create(tmp_path / "p.cardb", folder) as p:
        image_id = p.add_images(folder)[0].id
        pipe = FakePipeline(masks="channels", removed=lambda i, n, c: c.name == "blue")
        run_autolabel(pipe, p, AutoLabelJob("red, green, blue | azure", preset("objects", sam_mode="off")))
        snap = read_auto_labels(p, image_id)
        assert [(c.name, c.status) for c in snap.concepts] == [("red", "kept"), ("green", "kept"), ("blue", "removed")]
        assert snap.concepts[2].concept == "blue | azure" and snap.settings["theta"] == 0.6
        pixels = np.asarray(Image.open(folder / "img00.png"))
        np.testing.assert_array_equal(snap.concepts[0].mask(*pixels.shape[:2]), pixels[:, :, 0] > 127)
        anns = p.list_annotations(image_id)
        p.update_mask(anns[0].id, np.zeros(pixels.shape[:2], bool) | (pixels[:, :, 2] > 200))
        p.delete_annotation(anns[1].id)
        again = read_auto_labels(p, image_id)
        assert again == snap
        np.testing.assert_array_equal(again.concepts[1].mask(*pixels.shape[:2]), pixels[:, :, 1] > 127)


def test_unreadable_or_incomplete_record_is_left_out(reviewed):
    with Project.open(reviewed) as p:
        a, b = p.find_image("a.png").id, p.find_image("b.png").id
        p.set_setting(f"{AUTO_LABELS_SETTING}{a}", {"format": 1, "size": [99999, 99999], "concepts": []})
        assert read_auto_labels(p, a) is None
        assert compare_reviewed(p).compared == 1
        # A record rebuilt from an old project that lost an edited mask's first version is not compared.
        p.set_setting(f"{AUTO_LABELS_SETTING}{b}", {**p.get_setting(f"{AUTO_LABELS_SETTING}{b}"), "lost": ["cat"]})
        rep = compare_reviewed(p)
        assert (rep.reviewed, rep.compared, rep.concepts) == (3, 0, [])


# ------------------------------------------------------------------------------------------ the panel
def _rows(panel):
    t = panel.tree
    return [tuple(t.topLevelItem(i).text(c) for c in range(6)) for i in range(t.topLevelItemCount())]


EXPECTED_ROWS = [("cat", "0.67", "1.00", "1.00", "1.00", "2"),
                 ("dog", "0.00", "0.00", "-", "0.00", "2"),
                 ("sky", "0.75", "1.00", "0.50", "0.67", "2")]


def test_quality_panel_shows_the_numbers(qtbot, reviewed):
    from car_desktop.ui.quality_panel import QualityPanel
    from car_desktop.ui.workers import JobRunner

    runner = JobRunner()
    panel = QualityPanel(runner)
    qtbot.addWidget(panel)
    panel.show()
    project = Project.open(reviewed)
    try:
        with qtbot.waitSignal(panel.refreshed, timeout=10000):
            panel.set_project(project)
        assert _rows(panel) == EXPECTED_ROWS
        summary = panel.summary.text()
        assert "2 reviewed image(s) compared" in summary and "(1 without)" in summary
        assert "mean IoU 0.47" in summary and "F1 0.75" in summary
        assert "review a few more" in panel.advice.text()
    finally:
        runner.shutdown()
        project.close()


@pytest.fixture
def win(qtbot, tmp_path):
    w = fake_window(qtbot, tmp_path)
    yield w
    w.close()


def test_window_has_quality_in_view_menu_and_keeps_auto_labels(win, qtbot, reviewed):
    view = next(a.menu() for a in win.menuBar().actions() if a.text() == "&View")
    toggle = next(a for a in view.actions() if a.text().startswith("Quality"))
    assert not win.quality_dock.isVisible()
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        assert win.open_project(reviewed)
    with qtbot.waitSignal(win.quality_panel.refreshed, timeout=10000):
        toggle.trigger()                          # shown: the stale panel refreshes
    assert win.quality_dock.isVisible()
    assert _rows(win.quality_panel) == EXPECTED_ROWS
    # A CaR run in the window writes the record too; the cat the person corrected on this image keeps the
    # entry it descends from (the re-run leaves the corrected mask alone).
    from car_desktop.ui.car_apply import show_car_result

    image_id = win.image_id
    assert win.project.get_image(image_id).rel_path == "a.png"
    show_car_result(win.annotator, car_result([("cat", rect(0, 4, 0, 4), 0.9), ("dog", rect(0, 4, 20, 24), 0.7),
                                               ("owl", None, 0.1)], config=CONFIG))
    snap = read_auto_labels(win.project, image_id)
    assert [(c.name, c.status) for c in snap.concepts] == [("cat", "kept"), ("dog", "kept"), ("owl", "removed")]
    np.testing.assert_array_equal(snap.find("cat").mask(H, W), rect(0, 10, 0, 20))
    np.testing.assert_array_equal(snap.find("dog").mask(H, W), rect(0, 4, 20, 24))
    # A run from the concept bar lands through the window and the visible panel refreshes by itself.
    win.project.set_image_status(image_id, "reviewed")
    win.concept_bar.set_text("cat, dog, owl")
    with qtbot.waitSignal(win.quality_panel.refreshed, timeout=10000), \
            qtbot.waitSignal(win.carApplied, timeout=10000):
        qtbot.keyClick(win.concept_bar.edit, Qt.Key.Key_Return)
    assert [r[0] for r in _rows(win.quality_panel)] == ["cat", "dog", "owl", "sky"]


def test_window_concept_bar_takes_the_projects_tuned_thresholds(win, qtbot, reviewed, tmp_path):
    with Project.open(reviewed) as p:
        p.set_setting(TUNED_SETTING, {"preset": "objects", "theta": 0.35, "eta": 0.55, "prompts": None,
                                      "objective": "miou", "images": 2})
    win.concept_bar.set_preset("objects")
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        assert win.open_project(reviewed)
    cfg = win.concept_bar.config()
    assert (cfg.theta, cfg.eta) == (0.35, 0.55)
    win.concept_bar.set_preset("scene")
    assert win.concept_bar.config().theta == preset("scene").theta      # another preset: its own values
    win.concept_bar.set_preset("objects")
    assert win.concept_bar.config().theta == 0.35                     # back: the tuned ones again
    # Another project without tuned values: the preset's come back, but a value the annotator set stays.
    win.concept_bar.eta.setValue(0.45)
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(other / "x.png")
    with qtbot.waitSignal(win.imageShown, timeout=5000):
        assert win.open_folder(other)
    cfg = win.concept_bar.config()
    assert (cfg.theta, cfg.eta) == (preset("objects").theta, 0.45)
