"""``car-desktop batch`` and ``merge`` end to end with the tiny test models (SAM off).

A folder of 20 small images is labelled once (the reference); the other tests check that a rerun
skips everything, that broken files are reported with a non-zero exit, that an interrupted (SIGINT)
and resumed run and two merged shards give exactly the reference masks, that reviewed and edited
images survive a rerun, and that text embeddings are computed once for the folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from car_desktop.annotations import Project
from car_desktop.autolabel import RUN_KEY_SETTING, AutoLabelJob, add_folder, run_autolabel
from car_desktop.cli import main
from car_desktop.engine.config import CLASSIFIER_TEMPLATES, DEFAULT_BACKGROUND_WORDS, preset

CONCEPTS = "cat, dog | puppy, sky"
ROOT = Path(__file__).resolve().parent.parent


def make_image(i: int) -> np.ndarray:
    """64x80: a background colour and one or two rectangles, different for every i."""
    rng = np.random.default_rng(100 + i)
    img = np.empty((64, 80, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    for _ in range(1 + i % 2):
        y, x = rng.integers(0, 40), rng.integers(0, 56)
        img[y:y + 24, x:x + 24] = rng.integers(0, 256, 3)
    return img


def batch_args(images: Path, project: Path, *extra: str) -> list[str]:
    return ["--test-models", "batch", str(images), "--concepts", CONCEPTS, "--project", str(project),
            "--sam", "off", *extra]


def snapshot(project_path: Path) -> dict[str, tuple[str, dict[str, np.ndarray]]]:
    """{rel_path: (status, {category name: union of its masks})}."""
    out = {}
    with Project.open(project_path) as proj:
        names = {c.id: c.name for c in proj.list_categories()}
        for rec in proj.list_images():
            masks: dict[str, np.ndarray] = {}
            for a in proj.list_annotations(rec.id):
                m = proj.get_mask(a.id)
                masks[names[a.category_id]] = masks.get(names[a.category_id], np.zeros_like(m)) | m
            out[rec.rel_path] = (rec.status, masks)
    return out


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for rel, (status, masks) in want.items():
        g_status, g_masks = got[rel]
        assert g_status == status, rel
        assert sorted(g_masks) == sorted(masks), rel
        for name, m in masks.items():
            assert np.array_equal(g_masks[name], m), (rel, name)


def done_count(project_path: Path) -> int:
    """Images with a stored run key, read the way another process would (read-only, WAL)."""
    if not project_path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"{project_path.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT COUNT(*) FROM settings WHERE key LIKE ?",
                                (RUN_KEY_SETTING + "%",)).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("batch")
    f20, f10 = base / "imgs20", base / "imgs10"
    (f20 / "sub").mkdir(parents=True)
    f10.mkdir()
    for i in range(20):
        rel = f"sub/im{i:02d}.png" if i % 5 == 4 else f"im{i:02d}.png"  # a subfolder, found recursively
        Image.fromarray(make_image(i)).save(f20 / rel)
        if i < 10:
            (f10 / rel).parent.mkdir(exist_ok=True)
            shutil.copy(f20 / rel, f10 / rel)
    return base, f20, f10


@pytest.fixture(scope="module")
def reference(folders):
    base, f20, _ = folders
    project, coco = base / "ref.cardb", base / "ref.json"
    code = main(batch_args(f20, project, "--export", str(coco)))
    assert code == 0
    return project, coco, snapshot(project)


@pytest.mark.slow
def test_batch_labels_every_image_exports_and_rerun_skips(reference, folders, capsys):
    from pycocotools.coco import COCO

    project, coco_path, ref = reference
    _, f20, _ = folders
    assert len(ref) == 20 and "sub/im04.png" in ref
    assert all(status == "auto" for status, _ in ref.values())
    assert sum(len(m) for _, m in ref.values()) > 0
    with Project.open(project) as proj:
        keys = {proj.get_setting(f"{RUN_KEY_SETTING}{r.id}") for r in proj.list_images()}
        assert len(keys) == 1 and None not in keys
        ann = next(a for r in proj.list_images() for a in proj.list_annotations(r.id))
        assert ann.provenance.status in ("kept", "kept_without_competition")
        assert ann.provenance.origin == "autolabel" and ann.provenance.concept in ("cat", "dog", "sky")
        assert ann.provenance.config["theta"] == 0.6 and "classifier" in ann.provenance.models
    coco = COCO(str(coco_path))
    assert len(coco.getImgIds()) == 20 and {c["name"] for c in coco.loadCats(coco.getCatIds())} <= {"cat", "dog", "sky"}
    capsys.readouterr()
    assert main(batch_args(f20, project)) == 0
    out = capsys.readouterr().out
    assert "labelled 0, skipped 20" in out and "failed 0" in out
    assert_same(snapshot(project), ref)


@pytest.mark.slow
def test_broken_files_are_reported_and_reviewed_images_untouched(tmp_path, folders, capsys):
    _, f20, _ = folders
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("im00.png", "im01.png", "im02.png"):
        shutil.copy(f20 / name, images / name)
    (images / "empty.jpg").write_bytes(b"")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    jpeg = tmp_path / "whole.jpg"
    Image.fromarray(make_image(30)).save(jpeg, quality=90)
    (images / "truncated.jpg").write_bytes(jpeg.read_bytes()[:-300])  # header readable, pixels missing
    concepts_file = tmp_path / "concepts.txt"
    concepts_file.write_text("# what to label\ncat\ndog | puppy\nsky\n", encoding="utf-8")
    project = tmp_path / "p.cardb"
    args = ["--test-models", "batch", str(images), "--concepts-file", str(concepts_file), "--project", str(project),
            "--sam", "off"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "labelled 3" in out and "failed 3" in out
    failures = dict(line.strip().split(": ", 1) for line in out.split("failures:")[1].strip().splitlines())
    assert set(failures) == {"empty.jpg", "corrupt.png", "truncated.jpg"}
    assert "0 bytes" in failures["empty.jpg"] and "corrupt or truncated" in failures["truncated.jpg"]
    first = snapshot(project)  # the truncated file is in the project (its header reads) but unlabelled
    assert {k: s for k, (s, _) in first.items()} == {"im00.png": "auto", "im01.png": "auto", "im02.png": "auto",
                                                     "truncated.jpg": "new"}
    # Same concepts as --concepts text: nothing to do (run keys match), failures still reported.
    assert main(batch_args(images, project)) == 1
    out = capsys.readouterr().out
    assert "labelled 0, skipped 3" in out and "empty.jpg" in out

    with Project.open(project) as proj:
        reviewed, edited, free, _ = proj.list_images()
        proj.set_image_status(reviewed.id, "reviewed")
        ann = proj.list_annotations(edited.id)
        if ann:
            proj.update_mask(ann[0].id, np.ones((64, 80), bool))
        else:
            proj.add_annotation(edited.id, proj.get_or_create_category("cat").id, np.ones((64, 80), bool))
    before = snapshot(project)
    code = main(["--test-models", "batch", str(images), "--concepts", "tree, road", "--project", str(project),
                 "--sam", "off"])
    assert code == 1
    out = capsys.readouterr().out
    assert "labelled 1, skipped 2" in out and "reviewed by a person" in out
    after = snapshot(project)
    assert_same({k: after[k] for k in (reviewed.rel_path, edited.rel_path)},
                {k: before[k] for k in (reviewed.rel_path, edited.rel_path)})
    assert set(after[free.rel_path][1]) <= {"tree", "road"}


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_project(tmp_path, folders, reference, capsys):
    _, _, f10 = folders
    want = {k: v for k, v in reference[2].items() if (f10 / k).exists()}
    assert len(want) == 10
    project = tmp_path / "p.cardb"
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "car_desktop", *batch_args(f10, project)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while done_count(project) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the batch finished (or died) before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "stopping after the current image" in err and "Run the same command again" in out
    done = done_count(project)
    assert 2 <= done < 10
    partial = snapshot(project)
    assert sum(s == "auto" for s, _ in partial.values()) == done  # each image all or nothing
    assert main(batch_args(f10, project)) == 0
    assert f"labelled {10 - done}, skipped {done}" in capsys.readouterr().out
    assert_same(snapshot(project), want)


@pytest.mark.slow
def test_two_shards_merged_equal_the_single_run(tmp_path, folders, reference, capsys):
    _, _, f10 = folders
    want = {k: v for k, v in reference[2].items() if (f10 / k).exists()}
    shards = [tmp_path / "s1.cardb", tmp_path / "s2.cardb"]
    for i, shard in enumerate(shards, 1):
        assert main(batch_args(f10, shard, "--shard", f"{i}/2")) == 0
    parts = [snapshot(s) for s in shards]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert set(parts[0]) | set(parts[1]) == set(want)
    out = tmp_path / "merged.cardb"
    capsys.readouterr()
    assert main(["merge", str(out), *map(str, shards)]) == 0
    assert "10 images added" in capsys.readouterr().out
    assert_same(snapshot(out), want)
    with Project.open(out) as merged:
        assert merged.image_root.resolve() == f10.resolve()
    # The merged project resumes like a single run: nothing left to do.
    assert main(batch_args(f10, out)) == 0
    assert "labelled 0, skipped 10" in capsys.readouterr().out
    # Merging a shard again conflicts (already labelled) and says so.
    assert main(["merge", str(out), str(shards[0])]) == 1
    assert "conflicts" in capsys.readouterr().out


@pytest.mark.slow
def test_text_embeddings_are_computed_once_for_the_folder(tmp_path, folders):
    from car_desktop.engine.pipeline import CaRPipeline

    _, f20, _ = folders
    config = preset("objects", sam_mode="off", crf_in_subprocess=False)
    pipeline = CaRPipeline(config, test_models=True)
    encodes = []
    with Project.create(tmp_path / "p.cardb", f20) as proj:
        ids, _ = add_folder(proj, f20)
        job = AutoLabelJob(CONCEPTS, config, image_ids=ids[:3], test_models=True)
        run_autolabel(pipeline, proj, job, progress=lambda p: encodes.append(pipeline.counter.text_encodes)
                      if p.event == "image done" else None)
        # Each distinct text at most once: 3 concepts x (15 templates + 2 proposal forms) + background words.
        bound = 3 * (len(CLASSIFIER_TEMPLATES) + 2) + len(DEFAULT_BACKGROUND_WORDS)
        assert encodes[-1] <= bound
        # Later images only add the few prompt forms the first image's loop did not need (if any).
        assert encodes[-1] - encodes[0] <= 3
        before = pipeline.counter.snapshot()
        rep = run_autolabel(pipeline, proj, AutoLabelJob(CONCEPTS, config, image_ids=ids[:3], overwrite=True,
                                                         test_models=True))
        delta = pipeline.counter.since(before)
        assert rep.done == 3 and delta["text_encodes"] == 0


def test_batch_help_and_user_errors(tmp_path, folders, capsys):
    _, f20, _ = folders
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    help_text = capsys.readouterr().out
    assert "exit codes" in help_text and "130" in help_text and "--shard" in help_text
    cases = [
        (batch_args(f20, tmp_path / "a.cardb", "--shard", "3/2"), "1 <= i <= n"),
        (["--test-models", "batch", str(f20), "--concepts", " , ", "--project", str(tmp_path / "b.cardb")],
         "No concepts"),
        (batch_args(tmp_path / "missing", tmp_path / "c.cardb"), "not a folder"),
        (["merge", str(tmp_path / "m.cardb"), str(tmp_path / "nope.cardb")], "does not exist"),
    ]
    for args, message in cases:
        assert main(args) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "b.cardb").exists() and not (tmp_path / "a.cardb").exists()


def test_project_with_another_image_folder_is_refused(tmp_path, folders, capsys):
    _, f20, f10 = folders
    project = tmp_path / "p.cardb"
    Project.create(project, f10).close()
    assert main(batch_args(f20, project)) == 2
    assert "not inside the image folder" in capsys.readouterr().err
