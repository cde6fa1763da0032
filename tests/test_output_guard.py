"""Issue 13, "files the tool must never overwrite or escape": every writer (COCO export, batch --export,
label PNGs, segment --out) refuses the open project and its -wal/-shm, an input image, and the image
folder without --force, whether named directly, through ./, a symlink or a hard link; label PNG
names stay inside their folder and never collide. After each refusal the project file and every
file of the image folder are byte-for-byte what they were."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from car_desktop.annotations import Project, export_coco, export_label_pngs
from car_desktop.cli import main
from car_desktop.fileio import atomic_write_text
from car_desktop.safepaths import OutputGuard, OutputRefusedError, UnsafePathError, safe_relative_path
from safety_helpers import tree_bytes, write_good_images


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """(project file, image folder): three images, one annotation; the project is closed."""
    imgs = tmp_path / "imgs"
    write_good_images(imgs, 3)
    proj = tmp_path / "P.cardb"
    with Project.create(proj, imgs) as p:
        p.add_images(imgs)
        m = np.zeros((64, 80), bool)
        m[10:30, 10:40] = True
        p.add_annotation(p.list_images()[0].id, p.get_or_create_category("cat").id, m, score=0.9)
    return proj, imgs


def _refused(args: list[str], capsys, *protected: Path, words: str) -> str:
    before = tree_bytes(*protected)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert tree_bytes(*protected) == before
    return err


def test_export_onto_the_project_is_refused_in_every_spelling(setup, capsys, monkeypatch):
    proj, imgs = setup
    tmp = proj.parent
    (tmp / "link.json").symlink_to(proj)
    os.link(proj, tmp / "hard.json")
    monkeypatch.chdir(tmp)
    for target in (str(proj), "./P.cardb", "sub/../P.cardb", str(tmp / "link.json"), str(tmp / "hard.json")):
        (tmp / "sub").mkdir(exist_ok=True)
        _refused(["export", str(proj), "--coco", target], capsys, proj, imgs, words="the open project")
    for side in ("P.cardb-wal", "P.cardb-shm"):
        _refused(["export", str(proj), "--coco", side], capsys, proj, imgs, words="SQLite keeps beside the project")
        assert not (tmp / side).exists()
    assert Project.open(proj).count_annotations() == 1  # still a working project


def test_batch_export_onto_its_own_project_is_refused_before_labelling(setup, capsys):
    proj, imgs = setup
    args = ["--test-models", "batch", str(imgs), "--concepts", "cat", "--project", str(proj), "--sam", "off",
            "--export", str(proj)]
    err = _refused(args, capsys, proj, imgs, words="the open project")
    assert "labelled" not in capsys.readouterr().out + err  # refused before any image was labelled


def test_export_never_replaces_an_input_image_and_needs_force_inside_the_image_folder(setup, capsys):
    proj, imgs = setup
    image = imgs / "good00.png"
    _refused(["export", str(proj), "--coco", str(image)], capsys, proj, imgs, words="input image")
    _refused(["export", str(proj), "--coco", str(image), "--force"], capsys, proj, imgs, words="input image")
    (proj.parent / "img-link.json").symlink_to(image)
    _refused(["export", str(proj), "--coco", str(proj.parent / "img-link.json")], capsys, proj, imgs,
             words="input image")
    _refused(["export", str(proj), "--coco", str(imgs / "coco.json")], capsys, proj, imgs, words="--force")
    assert main(["export", str(proj), "--coco", str(imgs / "coco.json"), "--force"]) == 0
    assert json.loads((imgs / "coco.json").read_text())["annotations"]


def test_api_guard_compares_inodes_and_resolved_paths(setup, tmp_path):
    proj, imgs = setup
    before = tree_bytes(proj, imgs)
    with Project.open(proj) as p:
        guard = p.output_guard()
        os.link(imgs / "good01.png", tmp_path / "elsewhere.png")  # a hard link outside the folder
        for bad in (proj, tmp_path / "P.cardb-wal", tmp_path / "elsewhere.png", imgs / "good02.png"):
            with pytest.raises(OutputRefusedError):
                guard.check_file(bad)
        with pytest.raises(OutputRefusedError, match=r"not a regular file|a folder"):
            guard.check_file(tmp_path)
        assert guard.check_file(tmp_path / "fine.json") == tmp_path / "fine.json"
        with pytest.raises(OutputRefusedError):
            export_coco(p, proj)
    assert tree_bytes(proj, imgs) == before


def test_label_pngs_refuse_the_image_folder_and_unsafe_stored_names(setup, tmp_path, capsys):
    proj, imgs = setup
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(other / "photo.png")
    # Stored paths that leave the image folder (an older project, or another program's file).
    conn = sqlite3.connect(proj)
    for i, rel in enumerate(("../other/photo.png", str(other / "photo.png"))):
        conn.execute("INSERT INTO images (rel_path, width, height, status, added_at) VALUES (?, 4, 4, 'new', ?)",
                     (rel, time.time() + i))
    conn.commit()
    conn.close()
    for args in (["--label-pngs", str(imgs)], ["--label-pngs", str(imgs), "--force"],
                 ["--label-pngs", str(imgs / "..") + "/imgs"]):
        _refused(["export", str(proj), *args], capsys, proj, imgs, other, words="image folder")
    before = tree_bytes(imgs, other)
    out = tmp_path / "labels"
    assert main(["export", str(proj), "--label-pngs", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 label maps" in printed and printed.count("no label map written") == 2
    assert tree_bytes(imgs, other) == before
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["good00.png", "good01.png", "good02.png", "labels.json", "labels.txt"]


def test_label_png_names_never_collide(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("a.jpg", "a.png", "b.png", "A.PNG"):
        Image.new("RGB", (8, 6), (1, 2, 3)).save(imgs / name, format="PNG" if "png" in name.lower() else "JPEG")
    with Project.create(tmp_path / "p.cardb", imgs) as p:
        p.add_images(imgs)
        rep = export_label_pngs(p, tmp_path / "out")
    files = sorted(x.name for x in (tmp_path / "out").iterdir() if x.suffix == ".png")
    assert rep.images == 4 and len({f.casefold() for f in files}) == 4  # distinct even where case is ignored
    # a.jpg and a.png keep their extension; a.png.png and A.PNG.png would still clash, so they get the id.
    assert files == ["A.PNG-1.png", "a.jpg.png", "a.png-3.png", "b.png"]


def test_safe_relative_path_rules():
    assert safe_relative_path("a/./b/../c.jpg") == "a/c.jpg"
    assert safe_relative_path("sub\\x.png") == "sub/x.png"
    for bad in ("../x.jpg", "/etc/passwd", "a/../../b.jpg", ".", "..", "", "a\x00.jpg", "a\nb.jpg",
                "http://example.com/a.jpg", "file:///etc/passwd", "C:/x.jpg", "..\\..\\x.jpg",
                "x" * 256 + ".jpg", 7, None, ["a.jpg"]):
        with pytest.raises(UnsafePathError):
            safe_relative_path(bad)


def test_segment_never_writes_through_a_link_to_its_input(tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(image)
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo_labels.png").symlink_to(image)
    before = tree_bytes(tmp_path)
    code = main(["--test-models", "segment", str(image), "--concepts", "cat", "--out", str(out), "--sam", "off"])
    assert code == 2 and "input image" in capsys.readouterr().err
    assert tree_bytes(tmp_path) == before


def test_written_files_have_ordinary_permissions(setup, tmp_path):
    proj, _ = setup
    old = os.umask(0o022)
    try:
        with Project.open(proj) as p:
            export_coco(p, tmp_path / "out.json")
            export_label_pngs(p, tmp_path / "labels")
        atomic_write_text(tmp_path / "plain.txt", "x")
        os.chmod(tmp_path / "plain.txt", 0o600)
        atomic_write_text(tmp_path / "plain.txt", "y")  # a replaced file keeps its own permissions
    finally:
        os.umask(old)
    def mode(p):
        return stat.S_IMODE(os.stat(p).st_mode)

    assert mode(tmp_path / "out.json") == 0o644
    assert mode(tmp_path / "labels" / "good00.png") == 0o644 and mode(tmp_path / "labels" / "labels.txt") == 0o644
    assert mode(tmp_path / "plain.txt") == 0o600 and (tmp_path / "plain.txt").read_text() == "y"
    assert not [x for x in tmp_path.iterdir() if x.name.endswith(".part")]


def test_guard_without_a_project_protects_listed_inputs(tmp_path):
    src = tmp_path / "in.png"
    src.write_bytes(b"x")
    guard = OutputGuard(inputs=lambda: [src])
    with pytest.raises(OutputRefusedError, match="input image"):
        guard.check_file(tmp_path / "." / "in.png")
    assert guard.check_file(tmp_path / "out.png")


def test_merge_skips_an_image_whose_stored_path_leaves_the_folder(setup, tmp_path):
    proj, _ = setup
    conn = sqlite3.connect(proj)  # an older or foreign project with a path that escapes the folder
    conn.execute("INSERT INTO images (rel_path, width, height, status, added_at) VALUES ('../../etc/x.png', 4, 4,"
                 " 'new', 0)")
    conn.commit()
    conn.close()
    out = tmp_path / "merged.cardb"
    assert main(["merge", str(out), str(proj)]) == 1
    with Project.open(out) as merged:
        assert sorted(im.rel_path for im in merged.list_images()) == ["good00.png", "good01.png", "good02.png"]
        assert merged.count_annotations() == 1
