"""Issue 13, "bounded inputs" and "one bad thing never stops the rest": a decompression bomb is one
failed file with a clear reason in the store, the folder scan of the GUI, import and batch; the
pixel limit is one setting (--max-pixels, CAR_DESKTOP_MAX_PIXELS); batch keeps its failures in the
project, prints the first few and where the rest is, skips unchanged failures with --skip-failed,
and exports leave failed images out (saying so)."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from PIL import Image

from car_desktop import imagefiles
from car_desktop.annotations import Project, ProjectError, export_label_pngs, import_coco
from car_desktop.cli import main
from car_desktop.engine.image_io import load_image
from car_desktop.imagefiles import ImageTooLargeError
from car_desktop.ui.project_session import open_folder
from safety_helpers import bomb_png, good_image, tree_bytes, truncated_jpeg, write_good_images


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = bomb_png()
    assert len(data) < 1_000_000  # under 1 MB on disk, 900 megapixels once decoded
    return data


@pytest.fixture(autouse=True)
def _default_limit():
    imagefiles.set_max_pixels(None)
    yield
    imagefiles.set_max_pixels(None)


def test_a_bomb_is_one_failed_file_in_store_scan_import_and_gui(tmp_path, bomb, qtbot):
    from car_desktop.ui.file_list import FileList

    imgs = tmp_path / "imgs"
    write_good_images(imgs, 2)
    (imgs / "bomb.png").write_bytes(bomb)
    with pytest.raises(ImageTooLargeError, match=r"too large.*900 megapixels"):
        load_image(imgs / "bomb.png")
    with pytest.raises(ImageTooLargeError):
        imagefiles.image_size(imgs / "bomb.png")

    opened = open_folder(imgs)  # the GUI's "open folder"
    with opened.project as project:
        assert [im.rel_path for im in project.list_images()] == ["good00.png", "good01.png"]
        (failure,) = opened.failures
        assert failure.rel_path == "bomb.png" and "too large" in failure.reason
        assert [f.rel_path for f in project.list_failures()] == ["bomb.png"]
        with pytest.raises(ProjectError, match="too large"):
            project.add_images([imgs / "bomb.png"])  # named explicitly: a clear error, not a crash
        coco = {"images": [{"id": 1, "file_name": "bomb.png"}, {"id": 2, "file_name": "good00.png"}],
                "categories": [{"id": 1, "name": "cat"}],
                "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "segmentation": [[1, 1, 9, 1, 9, 9]]}]}
        report = import_coco(project, coco, imgs)
        assert [(p.kind, p.entry_id) for p in report.problems] == [("image", 1)]
        assert "too large" in report.problems[0].message and report.annotations_added == 1

    files = FileList()
    qtbot.addWidget(files)
    files.set_images([(1, "good00.png", "new")])
    files.add_failures([(f.rel_path, f.reason) for f in opened.failures])
    key = ("failed", "bomb.png")
    assert files.status(key) == "error" and "too large" in files._rows[key].toolTip()
    assert files.neighbour(1, +1) is None  # the failed row is never opened


def test_the_pixel_limit_is_one_setting(tmp_path, monkeypatch, capsys):
    from PIL import Image as PILImage

    p = tmp_path / "imgs" / "wide.png"
    p.parent.mkdir()
    Image.fromarray(good_image(1, (40, 50))).save(p)
    assert imagefiles.image_size(p) == (50, 40)
    imagefiles.set_max_pixels(1000)
    assert PILImage.MAX_IMAGE_PIXELS == 1000  # PIL's own guard follows ours
    with pytest.raises(ImageTooLargeError, match="limit is 0 megapixels"):
        load_image(p)
    imagefiles.set_max_pixels(None)
    monkeypatch.setenv(imagefiles.MAX_PIXELS_ENV, "1k")
    with pytest.raises(ImageTooLargeError):
        imagefiles.image_size(p)
    monkeypatch.delenv(imagefiles.MAX_PIXELS_ENV)
    assert imagefiles.image_size(p) == (50, 40)
    code = main(["--test-models", "batch", str(p.parent), "--concepts", "cat", "--project", str(tmp_path / "p.cardb"),
                 "--sam", "off", "--max-pixels", "1000"])
    out = capsys.readouterr().out
    assert code == 1 and "labelled 0" in out and "wide.png: the image is too large" in out
    assert main(["--max-pixels", "lots", "models", "path"]) == 2
    assert "--max-pixels" in capsys.readouterr().err


def test_stored_sizes_are_bounded_before_they_size_memory(tmp_path):
    imgs = tmp_path / "imgs"
    write_good_images(imgs, 1)
    with Project.create(tmp_path / "p.cardb", imgs) as project, pytest.raises(ProjectError, match="too large"):
        project.add_image_entry("fake.png", 100_000, 100_000)
    conn = sqlite3.connect(tmp_path / "p.cardb")  # as an older version could have stored it
    conn.execute("INSERT INTO images (rel_path, width, height, status, added_at) VALUES ('old.png', 100000, 100000,"
                  " 'new', ?)", (time.time(),))
    conn.commit()
    conn.close()
    with Project.open(tmp_path / "p.cardb") as project:
        report = export_label_pngs(project, tmp_path / "labels")
    assert report.images == 0 and any("over the pixel limit" in n for n in report.notes)


@pytest.mark.slow
def test_batch_over_a_bomb_a_truncated_jpeg_and_20_good_images_labels_the_20(tmp_path, bomb, capsys):
    imgs = tmp_path / "imgs"
    write_good_images(imgs, 20)
    (imgs / "bomb.png").write_bytes(bomb)
    truncated_jpeg(imgs / "truncated.jpg")
    project, coco = tmp_path / "p.cardb", tmp_path / "coco.json"
    args = ["--test-models", "batch", str(imgs), "--concepts", "cat, sky", "--project", str(project), "--sam", "off"]
    before = tree_bytes(imgs)
    assert main([*args, "--export", str(coco)]) == 1
    out = capsys.readouterr().out
    assert "labelled 20, skipped 0, failed 2 in" in out
    assert "bomb.png: the image is too large" in out and "truncated.jpg: the image is corrupt or truncated" in out
    assert f"car-desktop failures {project}" in out
    assert "1 image(s) whose auto-labelling failed were left out" in out
    assert tree_bytes(imgs) == before
    data = json.loads(coco.read_text())
    assert sorted(im["file_name"] for im in data["images"]) == [f"good{i:02d}.png" for i in range(20)]
    with Project.open(project) as p:
        assert sorted(im.status for im in p.list_images()) == ["auto"] * 20 + ["new"]
        assert {f.rel_path: f.stage for f in p.list_failures()} == {"bomb.png": "add", "truncated.jpg": "label"}

    # Rerun: without --skip-failed the two are tried again; with it, they are skipped while unchanged.
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "labelled 0, skipped 20 (" in out and "failed 2 in" in out
    assert main([*args, "--skip-failed"]) == 0
    out = capsys.readouterr().out
    assert "labelled 0, skipped 22" in out and "2 failed before and unchanged since" in out
    # A failed file that changed is tried again (and now works).
    Image.fromarray(good_image(3, (96, 128))).save(imgs / "truncated.jpg", format="JPEG")
    assert main([*args, "--skip-failed"]) == 0
    assert "labelled 1, skipped 21" in capsys.readouterr().out
    assert main(["failures", str(project)]) == 0
    assert capsys.readouterr().out.strip().split("\t")[0] == "bomb.png"


def test_many_failures_give_a_short_summary_and_the_full_list_stays_in_the_project(tmp_path, capsys):
    imgs = tmp_path / "imgs"
    write_good_images(imgs, 1)
    for i in range(25):
        (imgs / f"broken{i:02d}.jpg").write_bytes(b"\xff\xd8 not really a jpeg " * (i + 1))
    project = tmp_path / "p.cardb"
    assert main(["--test-models", "batch", str(imgs), "--concepts", "cat", "--project", str(project),
                 "--sam", "off"]) == 1
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if line.startswith("  broken")]
    assert len(listed) == 10 and "... and 15 more" in out and f"car-desktop failures {project}" in out
    assert main(["failures", str(project)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 25 and all("\tadd\t" in line for line in lines)


def test_a_file_name_that_is_not_utf8_is_one_failure_not_a_crash(tmp_path, capsys):
    import os

    imgs = tmp_path / "imgs"
    write_good_images(imgs, 1)
    Image.fromarray(good_image(2)).save(os.fsdecode(bytes(imgs) + b"/caf\xe9.png"))  # Latin-1 bytes
    project = tmp_path / "p.cardb"
    args = ["--test-models", "batch", str(imgs), "--concepts", "cat", "--project", str(project), "--sam", "off"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "labelled 1" in out and "caf\\udce9.png" in out and "not valid UTF-8" in out
    assert main([*args, "--skip-failed"]) == 0  # kept in the project, skipped while unchanged
    assert "1 failed before and unchanged since" in capsys.readouterr().out
