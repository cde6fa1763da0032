"""``car-desktop video``: headless labelling of a clip with the test models, exports, resuming, exit codes."""

from __future__ import annotations

import json

import pytest

from car_desktop.annotations import Project, video_store
from car_desktop.annotations.ytvis import read_ytvis
from car_desktop.cli import main
from video_clips import FRAMES, truncate, write_clip


@pytest.mark.slow
def test_video_command_labels_exports_and_resumes(tmp_path, capsys):
    from pycocotools.coco import COCO

    clips = tmp_path / "clips"
    write_clip(clips / "clip.mp4")
    project, out = tmp_path / "p.cardb", tmp_path / "out"
    args = ["video", str(clips / "clip.mp4"), "--concepts", "red, green, blue", "--every", "10", "--project",
            str(project), "--test-models", "--no-crf", "--sam", "off"]
    assert main([*args, "--export", str(out / "coco.json"), "--ytvis", str(out / "ytvis.json")]) == 0
    printed = capsys.readouterr()
    assert "key frames 3: 3 labelled" in printed.out and "test models" in printed.err.lower()
    coco = COCO(str(out / "coco.json"))
    assert len(coco.imgs) == FRAMES and all("track_id" in a for a in coco.anns.values())
    ytvis = read_ytvis(out / "ytvis.json")
    assert ytvis.videos[1].length == FRAMES
    with Project.open(project) as p:
        assert sorted(video_store.key_frames(p, 1)) == [0, 10, 20]
        ids = {a.id for i in video_store.frame_ids(p, 1) for a in p.list_annotations(i)}
        assert len(ytvis.tracks) == len(video_store.clip_tracks(p, 1)) >= 1
    assert main(args) == 0                                       # the same command again: nothing to redo
    assert "3 already done" in capsys.readouterr().out
    with Project.open(project) as p:
        assert {a.id for i in video_store.frame_ids(p, 1) for a in p.list_annotations(i)} == ids


def test_a_damaged_clip_is_one_error_line_and_exit_2(tmp_path, capsys):
    write_clip(tmp_path / "good.mkv", 10)
    clip = truncate(tmp_path / "good.mkv", tmp_path / "cut.mkv")
    code = main(["video", str(clip), "--concepts", "red", "--project", str(tmp_path / "p.cardb"), "--test-models"])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "cut.mkv" in err and "truncated" in err
    with Project.open(tmp_path / "p.cardb") as p:
        assert video_store.list_videos(p) == []


def test_an_export_onto_the_clip_is_refused_before_any_frame_is_labelled(tmp_path, capsys):
    clip = tmp_path / "clip.mkv"
    write_clip(clip, 10)
    before = clip.read_bytes()
    code = main(["video", str(clip), "--concepts", "red", "--project", str(tmp_path / "p.cardb"), "--test-models",
                 "--ytvis", str(clip), "--force"])
    err = capsys.readouterr().err
    assert code == 2 and "refusing" in err and "input image" in err
    assert clip.read_bytes() == before
    with Project.open(tmp_path / "p.cardb") as p:
        assert video_store.key_frames(p, 1) == {} and p.count_annotations() == 0


@pytest.mark.parametrize("extra, expected", [(["--every", "-1"], "--every"), (["--concepts", " , "], "concept")])
def test_bad_options_are_refused_with_exit_2(tmp_path, capsys, extra, expected):
    clip = tmp_path / "clip.mkv"
    write_clip(clip, 4)
    args = ["video", str(clip), "--project", str(tmp_path / "p.cardb"), "--test-models"]
    if "--concepts" not in extra:
        args += ["--concepts", "red"]
    assert main(args + extra) == 2
    assert expected in capsys.readouterr().err.lower()
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == json.dumps(["clip.mkv"])
