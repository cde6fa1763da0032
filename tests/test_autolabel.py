"""car_desktop.autolabel with a fake engine (fast): skipping, stopping, failures, protection, merge, shards.

The fake pipeline derives each concept's mask from the pixels, so results are deterministic and checkable;
test_batch_cli.py runs the same loop with the real (tiny) engine through the command line.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fakes
from car_desktop.annotations import Project
from car_desktop.annotations.auto_labels import auto_mask, read_auto_labels
from car_desktop.annotations.car_results import removed_concepts
from car_desktop.annotations.errors import ProjectError
from car_desktop.autolabel import (
    LAST_RUN_SETTING,
    SKIP_DONE,
    SKIP_EDITED,
    SKIP_REVIEWED,
    AutoLabelJob,
    add_folder,
    image_run_key,
    merge_projects,
    parse_shard,
    run_autolabel,
    run_key,
    shard_index,
)
from car_desktop.cancel import CancelToken
from car_desktop.engine.config import preset
from car_desktop.engine.errors import ConceptError, WeightsMissingError

CONFIG = preset("objects", sam_mode="off")


def last_removed(index: int, count: int, concept) -> bool:
    return count > 1 and index == count - 1


def FakePipeline(**options) -> fakes.FakePipeline:
    """Concept i keeps the pixels whose channel i % 3 is above 127; the last concept is removed."""
    return fakes.FakePipeline(masks="channels", removed=last_removed, sam=None, **options)


def write_images(folder: Path, n: int, size=(24, 32)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (*size, 3)).astype(np.uint8)
        p = folder / f"img{i:02d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


@pytest.fixture
def project(tmp_path):
    write_images(tmp_path / "imgs", 6)
    with Project.create(tmp_path / "p.cardb", tmp_path / "imgs") as proj:
        ids, failures = add_folder(proj, tmp_path / "imgs")
        assert len(ids) == 6 and not failures
        yield proj


def masks_by_image(project: Project) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    cats = {c.id: c.name for c in project.list_categories()}
    for rec in project.list_images():
        out[rec.rel_path] = {cats[a.category_id]: project.get_mask(a.id) for a in project.list_annotations(rec.id)}
    return out


def test_labels_every_image_with_provenance_and_status(project):
    fake = FakePipeline()
    events = []
    rep = run_autolabel(fake, project, AutoLabelJob("cat, dog | puppy, sky", CONFIG), progress=events.append)
    assert (rep.total, rep.done, rep.skipped, rep.failed, rep.stopped) == (6, 6, 0, [], False)
    assert [i.status for i in project.list_images()] == ["auto"] * 6
    assert [c.name for c in project.list_categories()] == ["cat", "dog", "sky"]
    assert project.get_category(2).synonyms == ("puppy",)
    for rec in project.list_images():
        arr = np.asarray(Image.open(project.image_path(rec.id)))
        anns = project.list_annotations(rec.id)
        assert len(anns) == 2  # 'sky' was removed: no annotation
        assert np.array_equal(project.get_mask(anns[0].id), arr[:, :, 0] > 127)
        assert np.array_equal(project.get_mask(anns[1].id), arr[:, :, 1] > 127)
        prov = anns[1].provenance
        assert prov.concept == "dog | puppy" and prov.status == "kept" and prov.origin == "autolabel"
        assert anns[1].score == pytest.approx(0.6)
        assert {k: prov.config[k] for k in ("eta", "theta", "lam", "phi_iou", "phi_iom")} == \
            {"eta": 0.4, "theta": 0.6, "lam": 0.4, "phi_iou": 0.7, "phi_iom": 0.7}
        assert prov.config["preset"] == "objects" and prov.config["sam_mode"] == "off"
        assert prov.models == {"proposal": "fake"} and prov.run_key == rep.run_key
        assert anns[0].source == "car" and not anns[0].edited
        assert np.array_equal(auto_mask(project, anns[0].id), arr[:, :, 0] > 127)
        assert [r.concept for r in removed_concepts(project, rec.id)] == ["sky"]
        assert image_run_key(project, rec.id) == rep.run_key
    assert project.get_setting(LAST_RUN_SETTING)["concepts"] == ["cat", "dog | puppy", "sky"]
    # progress: planned, then started/done per image with counts, rate and time left, then finished
    assert events[0].event == "planned" and events[0].todo == 6
    done = [e for e in events if e.event == "image done"]
    assert [e.processed for e in done] == [1, 2, 3, 4, 5, 6]
    assert all(e.rate_per_min and e.rate_per_min > 0 for e in done)
    assert done[-1].eta_s == 0 and done[0].eta_s is not None and done[0].current == "img00.png"
    assert events[-1].event == "finished" and events[-1].fraction == 1.0
    assert rep.stage_seconds["proposals"] == pytest.approx(0.06)


def test_rerun_skips_same_key_and_redoes_other_concepts(project):
    job = AutoLabelJob("cat, dog", CONFIG)
    run_autolabel(FakePipeline(), project, job)
    fake = FakePipeline()
    rep = run_autolabel(fake, project, job)
    assert (rep.done, rep.skipped) == (0, 6) and rep.skipped_by_reason == {SKIP_DONE: 6} and not fake.shapes
    rep = run_autolabel(fake, project, AutoLabelJob("cat, dog", CONFIG, overwrite=True))
    assert rep.done == 6 and project.count_annotations() == 6
    # Other concepts: a new key, the image's unedited CaR masks are replaced (not added to).
    rep = run_autolabel(fake, project, AutoLabelJob("dog, sky, cat", CONFIG))
    assert rep.done == 6
    names = {project.get_category(a.category_id).name for i in project.list_images()
             for a in project.list_annotations(i.id)}
    assert names == {"dog", "sky"}


def test_run_key_depends_on_what_changes_results():
    base = run_key("cat, dog", CONFIG)
    assert base == run_key(["cat", "dog"], CONFIG) == run_key(" cat ,dog ", CONFIG.replace(device="cuda"))
    assert base == run_key("cat, dog", CONFIG.replace(crf_in_subprocess=False))
    assert base != run_key("cat, dog | puppy", CONFIG)
    assert base != run_key("cat, dog", CONFIG.replace(theta=0.5))
    assert base != run_key("cat, dog", preset("objects", sam_mode="prompted"))
    assert base != run_key("cat, dog", CONFIG, test_models=True)
    with pytest.raises(ConceptError):
        run_key(" , ", CONFIG)


def test_reviewed_and_edited_images_are_never_touched(project):
    run_autolabel(FakePipeline(), project, AutoLabelJob("cat, dog", CONFIG))
    images = project.list_images()
    reviewed, edited, manual = images[0].id, images[1].id, images[2].id
    project.set_image_status(reviewed, "reviewed")
    ann = project.list_annotations(edited)[0]
    project.update_mask(ann.id, np.ones((24, 32), bool))
    cat = project.get_or_create_category("tree")
    project.add_annotation(manual, cat.id, np.eye(24, 32, dtype=bool))
    before = masks_by_image(project)
    rep = run_autolabel(FakePipeline(), project, AutoLabelJob("cat, dog", CONFIG, overwrite=True))
    assert rep.done == 3 and rep.skipped_by_reason == {SKIP_REVIEWED: 1, SKIP_EDITED: 2}
    after = masks_by_image(project)
    for rel in (images[0].rel_path, images[1].rel_path, images[2].rel_path):
        assert after[rel].keys() == before[rel].keys()
        assert all(np.array_equal(after[rel][k], before[rel][k]) for k in before[rel])
    assert project.get_image(reviewed).status == "reviewed"


def test_image_reviewed_while_it_runs_is_left_alone(project):
    fake = FakePipeline()
    first = project.list_images()[0].id
    fake.before_return = lambda n: project.set_image_status(first, "reviewed") if n == 0 else None
    rep = run_autolabel(fake, project, AutoLabelJob("cat, dog", CONFIG))
    assert (rep.done, rep.skipped, rep.failed) == (5, 1, [])
    assert project.count_annotations(first) == 0 and image_run_key(project, first) is None


def test_stop_finishes_current_image_and_resume_completes(project):
    stop = CancelToken()
    fake = FakePipeline()

    def on_progress(p):
        if p.event == "image started" and p.processed == 2:
            stop.cancel()  # as Ctrl+C while the third image runs

    rep = run_autolabel(fake, project, AutoLabelJob("cat, dog", CONFIG), progress=on_progress, stop=stop)
    assert rep.stopped and rep.done == 3
    assert sum(i.status == "auto" for i in project.list_images()) == 3
    rep = run_autolabel(FakePipeline(), project, AutoLabelJob("cat, dog", CONFIG))
    assert (rep.done, rep.skipped, rep.stopped) == (3, 3, False)


def test_cancel_drops_the_current_image_only(project):
    cancel = CancelToken()
    fake = FakePipeline(before_return=lambda n: cancel.cancel() if n == 1 else None)   # during the second image
    rep = run_autolabel(fake, project, AutoLabelJob("cat, dog", CONFIG), cancel=cancel)
    assert rep.stopped and rep.done == 1 and len(fake.shapes) == 2
    statuses = [i.status for i in project.list_images()]
    assert statuses == ["auto"] + ["new"] * 5 and project.count_annotations() == 1


def test_decoding_runs_in_a_background_thread(project, monkeypatch):
    import car_desktop.autolabel as al

    threads = []
    real = al.decode_image

    def spy(path):
        threads.append(threading.current_thread().name)
        return real(path)

    monkeypatch.setattr(al, "decode_image", spy)
    run_autolabel(FakePipeline(), project, AutoLabelJob("cat", CONFIG))
    assert len(threads) == 6 and all(t.startswith("autolabel-decode") for t in threads)


def test_broken_and_changed_images_are_failures_not_crashes(tmp_path):
    paths = write_images(tmp_path / "imgs", 4)
    (tmp_path / "imgs" / "empty.png").write_bytes(b"")
    (tmp_path / "imgs" / "junk.jpg").write_bytes(b"not a jpeg at all")
    with Project.create(tmp_path / "p.cardb", tmp_path / "imgs") as proj:
        ids, failures = add_folder(proj, tmp_path / "imgs")
        assert len(ids) == 4
        assert {f.path: f.reason for f in failures}.keys() == {"empty.png", "junk.jpg"}
        assert "0 bytes" in dict(failures)["empty.png"]
        # After adding: one file truncated (header still readable), one replaced by a larger image.
        data = paths[1].read_bytes()
        paths[1].write_bytes(data[: len(data) // 2])
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(paths[2])
        fake = FakePipeline(fail_on={1})  # the engine raises on the second image it sees
        rep = run_autolabel(fake, proj, AutoLabelJob("cat", CONFIG))
        reasons = dict(rep.failed)
        assert set(reasons) == {"img01.png", "img02.png", "img03.png"} and rep.done == 1
        assert "corrupt or truncated" in reasons["img01.png"]
        assert "changed since it was added" in reasons["img02.png"]
        assert "engine error" in reasons["img03.png"] and "boom" in reasons["img03.png"]
        assert [i.status for i in proj.list_images()] == ["auto", "new", "new", "new"]


def test_errors_every_image_would_share_are_raised(project):
    no_weights = FakePipeline(fail_with=WeightsMissingError("ViT-B-16 weights are missing"))
    with pytest.raises(WeightsMissingError):
        run_autolabel(no_weights, project, AutoLabelJob("cat", CONFIG))
    with pytest.raises(ConceptError):      # a typing mistake fails when the job is made, before any work
        AutoLabelJob(" ,", CONFIG)
    assert project.count_annotations() == 0


def test_shards_partition_the_folder_stably(tmp_path):
    rels = [f"a/img{i}.png" for i in range(200)]
    for n in (1, 2, 3, 7):
        groups = [{r for r in rels if shard_index(r, n) == i} for i in range(n)]
        assert set().union(*groups) == set(rels) and sum(map(len, groups)) == len(rels)
        if n > 1:
            assert all(len(g) > 200 / n / 2 for g in groups)
    assert shard_index("a/img1.png", 3) == shard_index(Path("a/img1.png").as_posix(), 3)
    assert parse_shard("2/3") == (1, 3)
    for bad in ("0/3", "4/3", "1-3", "a/b", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_merge_matches_categories_and_images_and_reports_conflicts(tmp_path):
    write_images(tmp_path / "imgs", 4)
    projects = []
    for name, concepts, status in (("a", "cat, dog, sky", None), ("b", "Dog, cat, tree", "reviewed")):
        proj = Project.create(tmp_path / f"{name}.cardb", tmp_path / "imgs")
        ids, _ = add_folder(proj, tmp_path / "imgs")
        keep = ids[:3] if name == "a" else ids[2:]
        run_autolabel(FakePipeline(), proj, AutoLabelJob(concepts, CONFIG, image_ids=keep))
        if status:
            proj.set_image_status(proj.find_image("img03.png").id, status)
        projects.append(proj)
    with Project.create(tmp_path / "out.cardb", tmp_path / "imgs") as out:
        rep = merge_projects(out, projects)
        assert sorted(c.name for c in out.list_categories()) == ["cat", "dog", "sky", "tree"]
        assert out.count_images() == 4
        # img02 was labelled in both: the first kept, reported; img03 only in b (reviewed).
        assert len(rep.conflicts) == 1 and "img02.png" in rep.conflicts[0]
        got = masks_by_image(out)
        a, b = masks_by_image(projects[0]), masks_by_image(projects[1])
        for rel in ("img00.png", "img01.png", "img02.png"):
            assert got[rel].keys() == a[rel].keys()
            assert all(np.array_equal(got[rel][k], a[rel][k]) for k in a[rel])
        assert got["img03.png"].keys() == {"dog", "cat"} and out.find_image("img03.png").status == "reviewed"
        assert all(np.array_equal(got["img03.png"][k.lower()], b["img03.png"][k]) for k in b["img03.png"])  # Dog = dog
        # The masks CaR made and the removed concepts travel with their images.
        a_img = projects[0].find_image("img00.png").id
        o_img = out.find_image("img00.png").id
        for src_ann, out_ann in zip(projects[0].list_annotations(a_img), out.list_annotations(o_img), strict=True):
            made = auto_mask(projects[0], src_ann.id)
            assert made is not None and np.array_equal(auto_mask(out, out_ann.id), made)
            assert out_ann.provenance == src_ann.provenance
        assert removed_concepts(out, o_img) == removed_concepts(projects[0], a_img) != []
        assert read_auto_labels(out, o_img) == read_auto_labels(projects[0], a_img) is not None
        assert image_run_key(out, out.find_image("img00.png").id) == image_run_key(
            projects[0], projects[0].find_image("img00.png").id)
        # Merging b again over the result: the reviewed image ranks higher than 'auto' and wins.
        projects[1].set_image_status(projects[1].find_image("img02.png").id, "reviewed")
        rep = merge_projects(out, [projects[1]])
        assert out.find_image("img02.png").status == "reviewed"
        assert masks_by_image(out)["img02.png"].keys() == {"dog", "cat"}
        assert any("replaced" in c for c in rep.conflicts)
    for p in projects:
        p.close()


def test_add_folder_subfolders_symlinks_shards_and_outside_root(tmp_path):
    root = tmp_path / "root"
    write_images(root / "a", 3)
    write_images(tmp_path / "elsewhere", 1)
    (root / "a" / "link.png").symlink_to(tmp_path / "elsewhere" / "img00.png")
    (root / "notes.txt").write_text("not an image")
    with Project.create(tmp_path / "p.cardb", root) as proj:
        ids, failures = add_folder(proj, root / "a")
        rels = [proj.get_image(i).rel_path for i in ids]
        assert rels == ["a/img00.png", "a/img01.png", "a/img02.png", "a/link.png"] and not failures
        again, _ = add_folder(proj, root)
        assert again == ids  # known images are not added twice
        parts = [add_folder(proj, root, (i, 2))[0] for i in range(2)]
        assert sorted(parts[0] + parts[1]) == sorted(ids) and not set(parts[0]) & set(parts[1])
        with pytest.raises(ProjectError, match="not inside"):
            add_folder(proj, tmp_path / "elsewhere")
