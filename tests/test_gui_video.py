"""A clip in the window (pytest-qt, offscreen): one row in the file list, the timeline (step, jump, scrub,
play), CaR on a frame as a key frame, labelling the clip in the background, undo of a run; a project of
clips only reopens on its first clip."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QSettings, Qt

from car_desktop.annotations import video_store
from car_desktop.ui.main_window import MainWindow
from car_desktop.ui.settings import Settings
from car_desktop.ui.video_dialog import VideoChoice
from fakes import FakePipeline, fake_window
from video_clips import FRAMES, frame_and_masks, write_clip

pytestmark = pytest.mark.slow


@pytest.fixture
def clip_window(qtbot, tmp_path):
    settings = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    pipe = FakePipeline(masks="channels")
    win = MainWindow(test_models=True, settings=settings, pipeline_factory=lambda t, c: pipe)
    win.fake = pipe
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.engine.ready, timeout=10000)
    write_clip(tmp_path / "clips" / "clip.mov")
    with qtbot.waitSignal(win.video.frameShown, timeout=20000) as shown:
        win.video.open_path(tmp_path / "clips" / "clip.mov")
    assert shown.args == [0]
    yield win
    win.close()


def _shown_frame(win) -> int:
    """The frame whose pixels the window shows (from the red square's position)."""
    return next(i for i in range(FRAMES) if np.array_equal(win.image, frame_and_masks(i)[0]))


def _go(win, qtbot, key, modifier=Qt.KeyboardModifier.NoModifier) -> int:
    with qtbot.waitSignal(win.video.frameShown, timeout=10000) as shown:
        qtbot.keyClick(win.canvas, key, modifier)
    return shown.args[0]


def test_the_clip_is_one_row_and_the_timeline_steps_and_scrubs(clip_window, qtbot):
    win = clip_window
    rows = [win.file_list.item(i).text() for i in range(win.file_list.count())]
    assert len(rows) == 1 and rows[0].endswith("clip.mov — 30 frames")
    assert win.video.timeline.isVisible() and _shown_frame(win) == 0
    assert _go(win, qtbot, Qt.Key.Key_Period) == 1 and _shown_frame(win) == 1
    assert _go(win, qtbot, Qt.Key.Key_Period) == 2
    assert _go(win, qtbot, Qt.Key.Key_Comma) == 1 and _shown_frame(win) == 1
    bar = win.video.timeline.bar
    with qtbot.waitSignal(win.video.frameShown, timeout=10000) as shown:
        qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=QPoint(int(bar.x_of(20)), bar.height() // 2))
    assert shown.args == [20] and _shown_frame(win) == 20 and "frame 21 / 30" in win.video.timeline.counter.text()
    win.video.timeline.toggle_play()
    qtbot.waitUntil(lambda: win.video.frame >= 23, timeout=10000)
    win.video.timeline.toggle_play()
    assert not win.video.timeline.playing


def test_car_on_a_frame_makes_it_a_key_frame_and_labelling_fills_the_clip(clip_window, qtbot, tmp_path):
    win = clip_window
    project, video_id = win.project, win.video.video.id
    _go(win, qtbot, Qt.Key.Key_Period)
    win.concept_bar.set_text("red, green, blue")
    with qtbot.waitSignal(win.carApplied, timeout=10000):
        qtbot.keyClick(win.concept_bar.edit, Qt.Key.Key_Return)
    assert list(video_store.key_frames(project, video_id)) == [1]
    assert win.video.timeline.bar.keys == [1]
    assert {ly.name for ly in win.stack.layers() if not ly.removed} == {"red", "green"}   # blue not in yet
    with qtbot.waitSignal(win.video.runFinished, timeout=60000) as done:
        win.video.label(VideoChoice("red, green, blue", 10, False, 0.5, "tiny"))
    report = done.args[0]
    assert report.key_frames == [0, 10, 20] and report.frames_stored > 0 and not report.stopped
    assert win.video.timeline.bar.keys == [0, 1, 10, 20]
    assert _go(win, qtbot, Qt.Key.Key_Greater) == 10                  # next key frame
    assert _go(win, qtbot, Qt.Key.Key_Period) == 11
    layers = {ly.name for ly in win.stack.layers() if not ly.removed and ly.mask.any()}
    assert layers == {"red", "green", "blue"}                        # a propagated frame shows its masks
    # edit red here with a tool's operation, then carry only red forward from this frame
    red = next(ly for ly in win.stack.layers() if ly.name == "red")
    win.stack.select(red.id)
    win.annotator.replace_mask(red.id, frame_and_masks(11)[1]["red"], "fix")
    with qtbot.waitSignal(win.video.runFinished, timeout=60000) as done:
        qtbot.keyClick(win.canvas, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
    assert (done.args[0].runs_done, done.args[0].frames_stored) == (1, 8)       # frames 12-19, up to key 20
    frame12 = video_store.frame_image_id(project, video_id, 12)
    red12 = next(a for a in project.list_annotations(frame12) if a.category_id == red.category_id)
    assert red12.provenance.from_frame == 11
    win.video.undo_run()                                               # the re-propagation, as one step
    qtbot.waitUntil(lambda: next(a for a in project.list_annotations(frame12)
                                 if a.category_id == red.category_id).provenance.from_frame == 10, timeout=20000)
    for kind in ("coco", "ytvis"):
        win.video.export(kind, tmp_path / f"{kind}.json")
    qtbot.waitUntil(lambda: (tmp_path / "ytvis.json").exists() and (tmp_path / "coco.json").exists(), timeout=20000)
    assert len(json.loads((tmp_path / "coco.json").read_text())["images"]) == FRAMES
    # Ctrl+Z: no edit on this frame, so the last run is undone as one step
    assert win.video.can_undo()
    with qtbot.waitSignal(win.video.undone, timeout=20000):
        qtbot.keyClick(win.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert sorted(video_store.key_frames(project, video_id)) == [1]
    frame11 = video_store.frame_image_id(project, video_id, 11)
    kept = project.list_annotations(frame11)                           # only the person's correction stays
    assert [(a.category_id, a.edited) for a in kept] == [(red.category_id, True)]
    assert [ly.name for ly in win.stack.layers() if ly.mask.any()] == ["red"]


def test_car_on_a_frame_left_before_it_ends_lands_on_that_frame(clip_window, qtbot):
    win = clip_window
    project, video_id = win.project, win.video.video.id
    gate = threading.Event()
    win.fake.gate = gate
    win.concept_bar.set_text("red, green")
    qtbot.keyClick(win.concept_bar.edit, Qt.Key.Key_Return)             # CaR on frame 0 ...
    assert win.fake.started.wait(10)
    assert _go(win, qtbot, Qt.Key.Key_Period) == 1                     # ... the user moves on at once
    gate.set()
    qtbot.waitUntil(lambda: list(video_store.key_frames(project, video_id)) == [0], timeout=20000)
    frame0 = video_store.frame_image_id(project, video_id, 0)
    frame = frame_and_masks(0)[0]
    stored = {project.get_category(a.category_id).name: project.get_mask(a.id)
              for a in project.list_annotations(frame0)}
    assert set(stored) == {"red", "green"}
    assert np.array_equal(stored["red"], frame[:, :, 0] > 127)         # the fake's "channels" masks of frame 0
    assert "moved to another frame" in win.status.currentMessage()
    assert win.video.frame == 1 and not project.list_annotations(video_store.frame_image_id(project, video_id, 1))
    with qtbot.waitSignal(win.video.undone, timeout=20000):
        win.video.undo_run()                                           # one undo step, as for the frame shown
    assert not video_store.key_frames(project, video_id) and not project.list_annotations(frame0)


def test_an_image_in_the_list_leaves_the_clip(clip_window, qtbot, tmp_path):
    from PIL import Image

    win = clip_window
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "clips" / "still.png")
    win.refresh_file_list()
    win.project.add_images([tmp_path / "clips" / "still.png"])
    win.refresh_file_list()
    image_id = win.project.find_image("still.png").id
    with qtbot.waitSignal(win.imageShown, timeout=10000):
        win.show_image(image_id)
    assert not win.video.timeline.isVisible() and win.video.video is None
    assert win.image.shape == (20, 30, 3)


def test_a_project_of_clips_only_reopens_on_its_first_clip(clip_window, qtbot, tmp_path):
    """The first row of such a project is a clip row, keyed ("video", id): it is not an image id to read."""
    path, video_id = clip_window.project.path, clip_window.video.video.id
    assert clip_window.file_list.keys() == [("video", video_id)]
    clip_window.close()
    win = fake_window(qtbot, tmp_path, FakePipeline(masks="channels"))
    qtbot.waitUntil(lambda: win.engine.ready, timeout=10000)
    with qtbot.waitSignal(win.video.frameShown, timeout=20000) as shown:
        assert win.open_project(path)
    assert shown.args == [0] and win.video.video.id == video_id and _shown_frame(win) == 0
    assert win.video.timeline.isVisible() and win.requested_image is None and not win.last_error
    assert win.file_list.currentItem().data(Qt.ItemDataRole.UserRole) == ("video", video_id)
    win.close()
