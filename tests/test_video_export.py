"""Exporting a labelled clip: COCO (one image per frame, track ids; read back with pycocotools) and
YouTube-VIS (read back with our reader against the published format), and the reader's checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from car_desktop.annotations import Project, video_store
from car_desktop.annotations.video_export import export_video_coco
from car_desktop.annotations.ytvis import YtvisError, export_ytvis, read_ytvis
from car_desktop.engine.config import CaRConfig
from car_desktop.videolabel import VideoJob, add_clip, extract_frames, run_video
from fakes import FakePipeline
from video_clips import FRAMES, H, W, frame_and_masks, write_clip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    from car_desktop.engine.sam2_models import TEST_MODEL, load_sam2

    root = tmp_path_factory.mktemp("clip")
    write_clip(root / "clip.mov")
    with Project.create(root / "base.cardb", root) as p:
        record, _ = add_clip(p, root / "clip.mov")
        run_video(FakePipeline(masks="channels"), p, record.id, VideoJob("red, green, blue", CaRConfig(), every=15),
                  sam2=load_sam2(TEST_MODEL, "cpu"))
    return root, record.id


@pytest.fixture
def project(labelled, tmp_path):
    shutil.copy(labelled[0] / "base.cardb", tmp_path / "p.cardb")
    with Project.open(tmp_path / "p.cardb") as p:
        yield p


def stored(p: Project, video_id: int) -> dict[tuple[int, int], np.ndarray]:
    """(frame, category id) -> the stored mask."""
    return {(i, a.category_id): p.get_mask(a.id) for i, image_id in enumerate(video_store.frame_ids(p, video_id))
            for a in p.list_annotations(image_id)}


def test_coco_has_one_image_per_frame_and_its_masks_equal_the_stored_ones(labelled, project, tmp_path):
    from pycocotools.coco import COCO

    video_id = labelled[1]
    out = tmp_path / "out" / "clip.json"
    report = export_video_coco(project, out, [video_id], fmt="rle")
    coco = COCO(str(out))
    frames = sorted(coco.imgs.values(), key=lambda im: im["frame_index"])
    assert [im["file_name"] for im in frames] == [f"clip.mov#{i:06d}" for i in range(FRAMES)]
    assert all((im["width"], im["height"], im["video_id"]) == (W, H, video_id) for im in frames)
    expected = stored(project, video_id)
    tracks = video_store.clip_tracks(project, video_id)
    got = {}
    for ann in coco.anns.values():
        frame = coco.imgs[ann["image_id"]]["frame_index"]
        assert ann["track_id"] == tracks[ann["category_id"]]
        got[(frame, ann["category_id"])] = coco.annToMask(ann).astype(bool)
    assert report.annotations == len(expected) == len(got)
    assert all(np.array_equal(got[k], expected[k]) for k in expected)


def test_coco_with_extracted_frames_names_files_that_hold_those_frames(labelled, project, tmp_path):
    from PIL import Image

    video_id = labelled[1]
    files = extract_frames(project, video_id, tmp_path / "frames", fmt="png")
    export_video_coco(project, tmp_path / "clip.json", [video_id], frame_files=files)
    data = json.loads((tmp_path / "clip.json").read_text())
    for image in data["images"][::7]:
        pixels = np.asarray(Image.open(tmp_path / "frames" / image["file_name"]).convert("RGB"))
        assert np.array_equal(pixels, frame_and_masks(image["frame_index"])[0])


def test_youtube_vis_round_trip_agrees_with_the_project(labelled, project, tmp_path):
    video_id = labelled[1]
    out = tmp_path / "ytvis.json"
    report = export_ytvis(project, out, [video_id])
    data = json.loads(out.read_text())
    assert set(data) == {"info", "licenses", "videos", "annotations", "categories"}
    assert data["videos"][0]["length"] == FRAMES and len(data["videos"][0]["file_names"]) == FRAMES
    back = read_ytvis(out)
    expected = stored(project, video_id)
    tracks = video_store.clip_tracks(project, video_id)
    assert report.annotations == len(back.tracks) == len(tracks) == 3
    assert set(back.categories.values()) == {"red", "green", "blue"}
    for track_id, track in back.tracks.items():
        assert tracks[track.category_id] == track_id and track.video_id == video_id
        for frame in range(FRAMES):
            mask = back.mask(track_id, frame)
            want = expected.get((frame, track.category_id))
            if want is None or not want.any():
                assert mask is None and track.areas[frame] is None
            else:
                assert np.array_equal(mask, want) and track.areas[frame] == int(want.sum())
                ys, xs = np.nonzero(want)
                assert track.bboxes[frame] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def _minimal(**changes):
    data = {"videos": [{"id": 1, "width": 4, "height": 3, "length": 2, "file_names": ["a/0.jpg", "a/1.jpg"]}],
            "categories": [{"id": 5, "name": "cat", "supercategory": ""}],
            "annotations": [{"id": 9, "video_id": 1, "category_id": 5, "iscrowd": 0,
                             "segmentations": [None, [[0, 0, 3, 0, 3, 2]]], "areas": [None, 4],
                             "bboxes": [None, [0, 0, 3, 2]]}]}
    for path, value in changes.items():
        *keys, last = path.split(".")
        node = data
        for key in keys:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value
    return data


def test_the_reader_takes_another_tools_file_with_polygons_and_uncompressed_rle():
    data = _minimal()
    data["annotations"][0]["segmentations"][0] = {"size": [3, 4], "counts": [0, 2, 10]}
    back = read_ytvis(data)
    assert back.mask(9, 0).sum() == 2 and back.mask(9, 1).any() and back.videos[1].file_names == ("a/0.jpg", "a/1.jpg")


@pytest.mark.parametrize("path, value, expected", [
    ("annotations.0.segmentations", [None], "one entry per frame"),
    ("annotations.0.video_id", 2, "names no video"),
    ("annotations.0.category_id", 6, "names no category"),
    ("videos.0.width", 10 ** 9, "over the pixel limit"),
    ("videos.0.length", 3, "file names"),
    ("annotations.0.segmentations.1", {"size": [3, 4], "counts": "zz"}, "frame 1: malformed"),
    ("annotations.0.id", "9", "must be an integer"),
])
def test_the_reader_refuses_a_broken_file_with_a_message_naming_the_entry(path, value, expected):
    with pytest.raises(YtvisError, match=expected):
        read_ytvis(_minimal(**{path: value}))


def test_the_reader_refuses_what_is_not_youtube_vis(tmp_path):
    (tmp_path / "coco.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(YtvisError, match="not YouTube-VIS"):
        read_ytvis(tmp_path / "coco.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(YtvisError, match="not a readable YouTube-VIS JSON file"):
        read_ytvis(tmp_path / "bad.json")
