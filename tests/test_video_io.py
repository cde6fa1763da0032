"""Reading clips and frame folders: frames in order whichever way they are read, bounded memory, and a
clear message for every file that cannot be a clip."""

from __future__ import annotations

import numpy as np
import pytest

from car_desktop import imagefiles
from car_desktop.engine.errors import ImageLoadError, VideoLoadError
from car_desktop.engine.keyframes import every_n, scene_cuts
from car_desktop.engine.video_io import FrameFolder, frame_number, open_video, probe_video
from video_clips import (
    FRAMES,
    H,
    W,
    frame_and_masks,
    truncate,
    write_clip,
    write_empty_clip,
    write_frame_folder,
    write_vfr_clip,
)


def _error(frame: np.ndarray, i: int) -> float:
    return float(np.abs(frame.astype(int) - frame_and_masks(i)[0].astype(int)).mean())


@pytest.mark.parametrize("ext, tolerance", [(".mov", 0.0), (".mkv", 1.0), (".mp4", 6.0), (".avi", 6.0)])
def test_every_frame_is_the_right_one_forward_backward_and_jumping(tmp_path, ext, tolerance):
    path = tmp_path / f"clip{ext}"
    write_clip(path)
    with open_video(path, cache_bytes=0) as clip:   # no cache: every read decodes
        assert (clip.info.frame_count, clip.info.width, clip.info.height) == (FRAMES, W, H)
        assert clip.info.fps == pytest.approx(30.0) and not clip.info.variable_rate
        order = list(range(FRAMES)) + list(reversed(range(FRAMES))) + [17, 3, 29, 0, 12]
        for i in order:
            assert _error(clip.read(i), i) <= tolerance, (ext, i)


def test_reads_are_copies_and_the_cache_stays_within_its_budget(tmp_path):
    path = tmp_path / "clip.mkv"
    write_clip(path)
    budget = 3 * H * W * 3
    with open_video(path, cache_bytes=budget) as clip:
        first = clip.read(0)
        first[:] = 0                                     # the caller's copy: the clip is not changed
        assert _error(clip.read(0), 0) <= 1.0
        for _ in clip.frames():
            pass
        assert clip._cache._bytes <= budget


def test_a_folder_of_numbered_frames_is_one_sequence_in_number_order(tmp_path):
    folder = tmp_path / "frames"
    write_frame_folder(folder, 12)
    (folder / "frame_0010.png").rename(folder / "frame_10.png")     # 10 must still come after 9, not after 1
    clip = open_video(folder)
    assert isinstance(clip, FrameFolder) and clip.info.kind == "frames" and len(clip) == 12
    assert [_error(clip.read(i), i) for i in range(12)] == [0.0] * 12
    assert frame_number("shot_12_frame_0042.png") == 42 and frame_number("still.png") is None


@pytest.mark.parametrize("problem, expected", [
    ("unnumbered", "no frame number"), ("sizes", "all frames of a sequence must have one size"),
    ("duplicate", "have the same frame number"), ("empty", "holds no image files")])
def test_a_bad_frame_folder_gets_a_clear_message(tmp_path, problem, expected):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    if problem != "empty":
        write_frame_folder(folder, 3)
    if problem == "unnumbered":
        Image.new("RGB", (W, H)).save(folder / "cover.png")
    elif problem == "sizes":
        Image.new("RGB", (W, H + 2)).save(folder / "frame_0009.png")
    elif problem == "duplicate":
        Image.new("RGB", (W, H)).save(folder / "take2_0002.png")
    with pytest.raises(VideoLoadError, match=expected):
        open_video(folder)


def test_corrupt_truncated_empty_and_foreign_files_get_clear_messages(tmp_path):
    for ext in (".mp4", ".mkv", ".avi"):
        write_clip(tmp_path / f"good{ext}")
    write_empty_clip(tmp_path / "empty.mp4")
    (tmp_path / "noise.mp4").write_bytes(b"\x00garbage" * 500)
    (tmp_path / "zero.mkv").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    cases = {
        truncate(tmp_path / "good.mp4", tmp_path / "cut.mp4"): "truncated or damaged",
        truncate(tmp_path / "good.mkv", tmp_path / "cut.mkv"): "truncated",
        truncate(tmp_path / "good.avi", tmp_path / "cut.avi"): "truncated",
        tmp_path / "empty.mp4": "contains no video frames",
        tmp_path / "noise.mp4": "not a video this app can read",
        tmp_path / "zero.mkv": "empty",
        tmp_path / "notes.txt": "not a video file",
        tmp_path / "missing.mp4": "no such file",
    }
    for path, expected in cases.items():
        with pytest.raises(VideoLoadError, match=expected) as info:
            probe_video(path)
        assert path.name in str(info.value)


def test_a_variable_frame_rate_clip_opens_with_a_warning_and_frames_in_display_order(tmp_path):
    path = tmp_path / "vfr.mkv"
    write_vfr_clip(path)
    with open_video(path) as clip:
        assert clip.info.variable_rate and len(clip) == 10
        assert "variable frame rate" in clip.info.warnings[0] and "extracted frames" in clip.info.warnings[0]
        assert [round(_error(clip.read(i), i)) for i in range(10)] == [0] * 10


def test_frames_over_the_pixel_limit_are_refused_before_any_decoding(tmp_path):
    path = tmp_path / "clip.mkv"
    write_clip(path, 2)
    write_frame_folder(tmp_path / "frames", 2)
    imagefiles.set_max_pixels(W * H - 1)
    try:
        with pytest.raises(ImageLoadError, match="too large"):
            open_video(path)
        with pytest.raises(ImageLoadError, match="too large"):
            open_video(tmp_path / "frames")
    finally:
        imagefiles.set_max_pixels(None)


def test_key_frames_every_n_and_at_scene_cuts(tmp_path):
    from video_clips import write_frames

    assert every_n(30, 10) == [0, 10, 20] and every_n(30, 0) == [0] and every_n(0, 5) == []
    frames = [np.full((H, W, 3), (200, 30, 30) if i < 12 else (30, 30, 200), np.uint8) for i in range(20)]
    path = tmp_path / "cut.mkv"
    write_frames(path, frames)
    seen = []
    with open_video(path) as clip:
        assert scene_cuts(clip, progress=lambda done, total: seen.append((done, total))) == [0, 12]
    assert seen[-1] == (20, 20)
    write_clip(tmp_path / "smooth.mkv")
    with open_video(tmp_path / "smooth.mkv") as clip:
        assert scene_cuts(clip) == [0]       # shapes moving over one background: no cut
