"""Issue 13, the project file under stress: a busy project makes writers wait (visibly, with a bound)
instead of failing; a long import lets other writers in; two auto-label runs on one project share the
images; creation is atomic and concurrent creators end with one valid project; a FIFO, a folder, an
immutable file or a project missing a table gives a clear message, no hang, and leaves everything as
it was (no stray -wal/-shm either)."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from car_desktop.annotations import Project, ProjectError, import_coco
from car_desktop.annotations.errors import ProjectBusyError, ProjectEmptyError, ProjectReadOnlyError
from car_desktop.autolabel import SKIP_CLAIMED, AutoLabelJob, add_folder, run_autolabel
from car_desktop.cli import main
from safety_helpers import create_and_use, tree_bytes
from test_autolabel import CONFIG, FakePipeline, write_images


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, Path]:
    imgs = tmp_path / "imgs"
    write_images(imgs, 6)
    path = tmp_path / "p.cardb"
    with Project.create(path, imgs) as p:
        add_folder(p, imgs)
    return path, imgs


def test_a_writer_waits_for_a_busy_project_and_says_so(made):
    path, _ = made
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    notices: list[str] = []
    waiting = threading.Event()
    result: dict = {}
    with Project.open(path) as project:
        project.busy_notice = lambda message: (notices.append(message), waiting.set())
        writer = threading.Thread(target=lambda: result.update(cat=project.get_or_create_category("cat")))
        writer.start()
        assert waiting.wait(30)
        assert writer.is_alive()  # still waiting, not failed
        holder.execute("COMMIT")
        writer.join(30)
        assert result["cat"].name == "cat" and project.find_category("cat") is not None
    assert "busy" in notices[0] and "waiting" in notices[0] and len(notices) == 1
    holder.close()


def test_the_wait_is_bounded_and_changes_nothing(made, monkeypatch):
    path, _ = made
    monkeypatch.setenv("CAR_DESKTOP_BUSY_TIMEOUT", "0.5")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with Project.open(path) as project, pytest.raises(ProjectBusyError, match=r"busy.*nothing was changed"):
            project.get_or_create_category("cat")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Project.open(path) as project:
        assert project.find_category("cat") is None


def test_a_long_import_lets_other_writers_in(made, tmp_path, monkeypatch):
    path, imgs = made
    monkeypatch.setenv("CAR_DESKTOP_BUSY_TIMEOUT", "2")
    names = sorted(p.name for p in imgs.iterdir())
    anns = [{"id": i, "image_id": 1 + i % 6, "category_id": 1, "segmentation": [[i % 20, 1, 22, 1, 22, 20]]}
            for i in range(3000)]
    coco = {"images": [{"id": i + 1, "file_name": n} for i, n in enumerate(names)],
            "categories": [{"id": 1, "name": "cat"}], "annotations": anns}
    other_result: dict = {}

    def other_writer() -> None:
        with Project.open(path) as other:
            try:
                other.set_setting("written during the import", True)
                other_result["ok"] = True
            except ProjectError as exc:
                other_result["error"] = str(exc)

    def progress(done: int, total: int) -> None:
        if total == 3000 and done == 1000:  # a third of the way through the annotations
            t = threading.Thread(target=other_writer)
            t.start()
            t.join(60)

    with Project.open(path) as project:
        report = import_coco(project, coco, imgs, progress=progress)
        assert project.get_setting("written during the import") is True
    assert other_result == {"ok": True} and report.annotations_added + report.annotations_skipped == 3000


def test_two_runs_on_one_project_share_the_images(made):
    path, _ = made
    a_busy, b_finished = threading.Event(), threading.Event()
    first, second = FakePipeline(), FakePipeline()

    def hold_first_image(call: int) -> None:
        if call == 0:
            a_busy.set()
            assert b_finished.wait(60)

    first.before_return = hold_first_image
    reports: dict = {}
    with Project.open(path) as pa, Project.open(path) as pb:
        job = AutoLabelJob("cat, dog", CONFIG)
        t = threading.Thread(target=lambda: reports.update(a=run_autolabel(first, pa, job)))
        t.start()
        assert a_busy.wait(60)  # run A is labelling its first image (and has claimed the next)
        reports["b"] = run_autolabel(second, pb, job)
        b_finished.set()
        t.join(60)
        statuses = [im.status for im in pa.list_images()]
    a, b = reports["a"], reports["b"]
    assert len(first.calls) + len(second.calls) == 6  # every image labelled once, not twice
    assert a.done + b.done == 6 and not set(a.done_ids) & set(b.done_ids)
    assert b.skipped_by_reason[SKIP_CLAIMED] >= 1 and statuses == ["auto"] * 6


def test_claims_of_a_dead_process_are_taken_over(made):
    path, _ = made
    dead = subprocess.Popen(["true"])
    dead.wait()
    with Project.open(path) as p:
        conn = sqlite3.connect(path)  # claims left by a run that was killed
        conn.executemany("INSERT INTO claims VALUES (?, 'gone', ?, ?, 0)",
                         [(im.id, os.uname().nodename, dead.pid) for im in p.list_images()])
        conn.commit()
        conn.close()
        report = run_autolabel(FakePipeline(), p, AutoLabelJob("cat", CONFIG))
    assert report.done == 6


def test_concurrent_creators_end_with_one_valid_project(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(imgs / "a.png")
    path = tmp_path / "new.cardb"
    for start in ("missing", "empty"):  # never created, or left empty by a creation that was killed
        path.unlink(missing_ok=True)
        if start == "empty":
            path.write_bytes(b"")
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(6) as pool:
            results = pool.map(create_and_use, [(str(path), str(imgs), i) for i in range(12)])
        assert results == ["ok"] * 12
        with Project.open(path) as p:
            assert p.count_images() == 1 and len(p.list_categories()) == 12
        assert sorted(x.name for x in tmp_path.iterdir()) == ["imgs", "new.cardb"]


def test_creation_never_leaves_a_half_made_file(tmp_path, monkeypatch):
    path = tmp_path / "p.cardb"

    def killed(*_args):
        raise KeyboardInterrupt  # the process dies just before the project would appear

    monkeypatch.setattr(os, "link", killed)
    with pytest.raises(KeyboardInterrupt):
        Project.create(path, tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    path.write_bytes(b"")
    with pytest.raises(ProjectEmptyError, match=r"empty.*creation was interrupted"):
        Project.open(path)
    project, created = Project.open_or_create(path, tmp_path)
    with project:
        assert created and project.count_images() == 0


@pytest.mark.timeout(120)
def test_pipe_folder_immutable_file_and_missing_table(made, tmp_path, capsys):
    path, imgs = made
    fifo = tmp_path / "fifo.cardb"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.cardb"
    folder.mkdir()
    broken = tmp_path / "broken.cardb"
    broken.write_bytes(path.read_bytes())
    conn = sqlite3.connect(broken)
    conn.execute("DROP TABLE annotations")
    conn.commit()
    conn.close()
    assert not Path(f"{broken}-wal").exists()
    cases = [(fifo, "not a regular file"), (folder, "is a folder"), (broken, "table annotations is missing")]
    for project, words in cases:
        before = tree_bytes(tmp_path)
        for args in (["export", str(project), "--coco", str(tmp_path / "out.json")],
                     ["import", str(project), str(tmp_path / "none.json"), "--images", str(imgs)],
                     ["--test-models", "batch", str(imgs), "--concepts", "cat", "--project", str(project),
                      "--sam", "off"],
                     ["failures", str(project)]):
            assert main(args) == 2, args
            err = capsys.readouterr().err
            assert words in err and "Traceback" not in err
            assert tree_bytes(tmp_path) == before, args

    if subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        before = tree_bytes(tmp_path)
        with pytest.raises(ProjectReadOnlyError, match="cannot be written"):
            Project.open(path)
        assert main(["import", str(path), str(tmp_path / "none.json"), "--images", str(imgs)]) == 2
        assert "cannot be written" in capsys.readouterr().err
        assert tree_bytes(tmp_path) == before
        out = tmp_path.parent / f"{tmp_path.name}-export.json"
        assert main(["export", str(path), "--coco", str(out)]) == 0  # reading still works
        assert len(json.loads(out.read_text())["images"]) == 6
        assert tree_bytes(tmp_path) == before
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def test_a_version_1_project_is_upgraded_with_its_data(tmp_path):
    from car_desktop.annotations import schema

    path = tmp_path / "old.cardb"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    schema.MIGRATIONS[0](conn)
    conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO images (rel_path, width, height, status, added_at) VALUES ('a.png', 4, 4, 'auto', 0)")
    conn.close()
    with Project.open(path) as p:
        assert p.schema_version == schema.SCHEMA_VERSION and p.list_failures() == []
        assert [im.rel_path for im in p.list_images()] == ["a.png"]
