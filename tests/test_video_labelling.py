"""A clip labelled end to end with the tiny SAM 2: key frames, propagation, stable tracks, an edit that
re-propagates one object, re-seeding a gap, resuming a stopped run, undo.

The stand-in CaR is ``FakePipeline(masks="channels")`` on the synthetic clip, whose answers are the
shapes' true masks (see video_clips.py); the tiny SAM 2 has random weights and never drops an object,
so these tests check which frames and objects get masks, from which key frame, and what is left alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from car_desktop.annotations import Project, video_masks, video_store
from car_desktop.annotations.provenance import FRAME_KEY, FRAME_PROPAGATED, ORIGIN_VIDEO
from car_desktop.cancel import CancelToken
from car_desktop.engine.config import CaRConfig
from car_desktop.engine.propagation import ABSENT, EDITED, PRESENT, assign_frames, plan_runs
from car_desktop.videolabel import VideoJob, VideoReport, add_clip, open_clip, propagate, run_video
from fakes import FakePipeline
from video_clips import FRAMES, RED_GONE, write_clip

pytestmark = pytest.mark.slow
JOB = VideoJob("red, green, blue", CaRConfig(), every=15)   # key frames 0 and 15


@pytest.fixture(scope="module")
def sam2():
    from car_desktop.engine.sam2_models import TEST_MODEL, load_sam2

    return load_sam2(TEST_MODEL, "cpu")


@pytest.fixture(scope="module")
def base(tmp_path_factory, sam2):
    """The clip labelled once; tests work on copies of its project."""
    root = tmp_path_factory.mktemp("clip")
    truth = write_clip(root / "clip.mov")
    with Project.create(root / "base.cardb", root) as p:
        record, _ = add_clip(p, root / "clip.mov")
        report = run_video(FakePipeline(masks="channels"), p, record.id, JOB, sam2=sam2)
    return root, truth, record.id, report


@pytest.fixture
def project(base, tmp_path):
    shutil.copy(base[0] / "base.cardb", tmp_path / "p.cardb")
    with Project.open(tmp_path / "p.cardb") as p:
        yield p


def snapshot(p: Project, video_id: int) -> dict[tuple[int, str], tuple[bytes, str, int | None, bool]]:
    """(frame, concept) -> (mask RLE, frame role, from frame, edited) of every mask of the clip."""
    names = {c.id: c.name for c in p.list_categories()}
    out = {}
    for index, image_id in enumerate(video_store.frame_ids(p, video_id)):
        for a in p.list_annotations(image_id):
            out[(index, names[a.category_id])] = (p.get_rle(a.id)["counts"], a.provenance.frame_role,
                                                  a.provenance.from_frame, a.edited)
    return out


def category(p: Project, name: str) -> int:
    return p.find_category(name).id


# ------------------------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("keys, expected", [
    ({0: PRESENT, 6: PRESENT}, {1: 0, 2: 0, 3: 0, 4: 6, 5: 6, 7: 6, 8: 6, 9: 6}),     # nearer key, ties forward
    ({0: ABSENT, 6: PRESENT}, dict.fromkeys([1, 2, 3, 4, 5, 7, 8, 9], 6)),              # the found key goes all the way
    ({0: PRESENT, 4: EDITED, 8: PRESENT}, {1: 0, 2: 0, 3: 0, 5: 4, 6: 4, 7: 4, 9: 8}),  # an edit carries forward only
    ({2: ABSENT, 6: ABSENT}, {}),
])
def test_each_frame_takes_its_mask_from_one_key_frame(keys, expected):
    assert {t: k for t, (k, _) in assign_frames(10, keys).items()} == expected


def test_objects_leaving_a_key_frame_one_way_share_a_run():
    runs = plan_runs(30, {1: {0: PRESENT, 10: PRESENT}, 2: {0: ABSENT, 10: PRESENT}})
    back = next(r for r in runs if (r.key, r.step) == (10, -1))
    assert back.obj_ids == (1, 2) and list(back.frames_of(1)) == [9, 8, 7, 6] and list(back.frames_of(2)) == \
        list(range(9, 0, -1))
    assert [(r.key, r.step) for r in runs] == [(0, 1), (10, -1), (10, 1)]


# ------------------------------------------------------------------------------------------- labelling
def test_every_frame_an_object_is_in_gets_its_mask_from_its_key_frame(base, project):
    _root, truth, video_id, report = base
    assert report.key_frames == [0, 15] and report.keys_labelled == 2 and not report.stopped
    keys = video_store.object_keys(project, video_id)
    names = {c.id: c.name for c in project.list_categories()}
    assert {names[c]: (k.present, k.absent) for c, k in keys.items()} == {
        "red": ([0, 15], []), "green": ([0, 15], []), "blue": ([15], [0])}   # blue enters later
    marks = {c: {**dict.fromkeys(k.absent, ABSENT), **dict.fromkeys(k.present, PRESENT)} for c, k in keys.items()}
    for index, image_id in enumerate(video_store.frame_ids(project, video_id)):
        anns = {names[a.category_id]: a for a in project.list_annotations(image_id)}
        for name, mask in truth[index].items():
            if not mask.any():
                continue
            ann = anns.get(name)
            assert ann is not None and ann.area > 0, f"{name} has no mask on frame {index}"
            prov = ann.provenance
            assert prov.origin == ORIGIN_VIDEO
            if index in (0, 15):
                assert prov.frame_role == FRAME_KEY and ann.source == "car"
                assert np.array_equal(project.get_mask(ann.id), mask)            # CaR's own mask on key frames
            else:
                assert prov.frame_role == FRAME_PROPAGATED and ann.source == "sam" and prov.test_models
                assert prov.from_frame == assign_frames(FRAMES, marks[category(project, name)])[index][0]
                assert "sam2" in prov.models and 0.0 <= ann.score <= 1.0
        assert project.get_image(image_id).status == "auto"


def test_track_ids_are_stable_and_a_second_run_redoes_nothing(base, project, sam2):
    video_id = base[2]
    tracks = {t.category_id: t.id for t in video_store.list_tracks(project, video_id)}
    assert set(tracks) == {category(project, n) for n in ("red", "green", "blue")}
    before = {a.id for i in video_store.frame_ids(project, video_id) for a in project.list_annotations(i)}
    again = run_video(FakePipeline(masks="channels"), project, video_id, JOB, sam2=sam2)
    assert (again.keys_labelled, again.keys_skipped, again.runs_done, again.frames_stored) == (0, 2, 0, 0)
    after = {a.id for i in video_store.frame_ids(project, video_id) for a in project.list_annotations(i)}
    assert after == before
    assert {t.category_id: t.id for t in video_store.list_tracks(project, video_id)} == tracks
    assert video_store.clip_tracks(project, video_id) == tracks


def test_an_edit_on_frame_10_repropagates_only_that_object_from_frame_10(base, project, sam2):
    truth, video_id = base[1], base[2]
    before = snapshot(project, video_id)
    frame10 = video_store.frame_image_id(project, video_id, 10)
    red = category(project, "red")
    ann = next(a for a in project.list_annotations(frame10) if a.category_id == red)
    assert before[(10, "red")][2] == 15              # before: carried back from key frame 15
    edit = truth[10]["red"].copy()
    edit[:, :2] = True                               # the person's correction (a stripe on the left)
    project.update_mask(ann.id, edit)
    with open_clip(project, video_id) as source:
        report = propagate(project, video_id, sam2, source, categories=[red], from_frame=10)
    assert (report.runs_done, report.frames_stored) == (1, 4)
    after = snapshot(project, video_id)
    assert np.array_equal(project.get_mask(ann.id), edit) and after[(10, "red")][3]
    changed = {k for k in after if after[k] != before.get(k)} | {k for k in before if k not in after}
    assert changed == {(10, "red"), (11, "red"), (12, "red"), (13, "red"), (14, "red")}
    for t in (11, 12, 13, 14):
        assert after[(t, "red")][1:3] == (FRAME_PROPAGATED, 10)
    assert video_store.object_keys(project, video_id)[red].edited == [10]


def test_car_on_a_frame_in_a_gap_reseeds_it_and_undo_reverts_it_as_one_step(base, project, sam2):
    video_id = base[2]
    before = snapshot(project, video_id)
    records = video_store.run_records(project, video_id)
    assert all(before[(t, "red")][2] == 15 for t in range(RED_GONE, FRAMES))    # carried on after it left
    with open_clip(project, video_id) as source:
        journal = video_masks.Journal(video_id, "re-seed", records=records)
        result = FakePipeline(masks="channels").run(source.read(27), JOB.concepts)
        video_masks.store_key_result(project, video_id, 27, result, journal=journal)
        report = propagate(project, video_id, sam2, source, report=VideoReport(video_id, journal=journal))
    after = snapshot(project, video_id)
    assert not [t for t in (27, 28, 29) if (t, "red") in after]           # absent at 27: removed from there on
    # Given to key frame 27 now: green and blue on 22-26 and 28-29 (carried again from 27), red on 28-29 (gone).
    assert (report.stale_removed, report.runs_done, report.frames_stored) == (2 * 7 + 2, 2, 7)
    assert all(after[(t, "red")] == before[(t, "red")] for t in range(27))   # the run from 15 is not redone
    assert after[(28, "green")][1:3] == (FRAME_PROPAGATED, 27) and after[(27, "green")][1] == FRAME_KEY
    assert 27 in video_store.key_frames(project, video_id)
    video_masks.undo(project, journal)
    assert snapshot(project, video_id) == before
    assert 27 not in video_store.key_frames(project, video_id)
    assert video_store.run_records(project, video_id) == records


def test_a_run_cancelled_mid_propagation_resumes_to_the_same_masks(base, tmp_path, sam2):
    root, video_id = base[0], base[2]
    cancel = CancelToken()

    def progress(p):
        if p.stage == "propagation" and p.done == 3:
            cancel.cancel()

    with Project.create(tmp_path / "p.cardb", root) as p:
        record, _ = add_clip(p, root / "clip.mov")
        first = run_video(FakePipeline(masks="channels"), p, record.id, JOB, sam2=sam2, progress=progress,
                          cancel=cancel)
        assert first.stopped and (first.runs_done, first.frames_stored) == (0, 3)   # frames kept, run not done
        second = run_video(FakePipeline(masks="channels"), p, record.id, JOB, sam2=sam2)
        assert not second.stopped and second.keys_skipped == 2 and second.runs_done == 3
        resumed = snapshot(p, record.id)
    with Project.open(root / "base.cardb", readonly=True) as done:
        assert resumed == snapshot(done, video_id)


def test_a_changed_clip_is_refused_and_nothing_is_relabelled(base, project, tmp_path):
    root = base[0]
    write_clip(root / "other.mov", 20)
    shutil.copy(root / "clip.mov", tmp_path / "keep.mov")
    try:
        shutil.copy(root / "other.mov", root / "clip.mov")
        with pytest.raises(Exception, match="changed since it was added"):
            open_clip(project, base[2])
        with pytest.raises(Exception, match="changed since it was added"):
            add_clip(project, root / "clip.mov")
    finally:
        shutil.copy(tmp_path / "keep.mov", root / "clip.mov")


def test_frames_are_left_out_of_the_image_lists(base, project):
    assert project.list_images() == [] and project.count_images() == 0
    assert project.count_images(include_frames=True) == FRAMES
    assert project.review_queue() == []
    names = [im.rel_path for im in project.list_images(include_frames=True)]
    assert names[0] == "clip.mov#000000" and names[-1] == "clip.mov#000029"


def test_the_clip_is_an_input_no_export_may_replace(base, project):
    from car_desktop.annotations.video_export import export_video_coco
    from car_desktop.safepaths import OutputRefusedError

    with pytest.raises(OutputRefusedError, match="input image"):
        export_video_coco(project, base[0] / "clip.mov", force=True)
    assert Path(base[0] / "clip.mov").stat().st_size > 1000


def test_the_review_queue_lists_no_frames(base, project):
    from car_desktop.annotations.review import ReviewFilter, review_items

    assert project.count_annotations() > 0
    anything = ReviewFilter(image_statuses=(), sources=(), scored_only=False)
    assert review_items(project, anything) == []
