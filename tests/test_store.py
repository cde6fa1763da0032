"""Project store: create/open, clear errors that change nothing, images, categories, annotations,
CaR result replacement, settings, relinking, and the index-backed speed of per-image reads."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from car_desktop.annotations import (
    MaskError,
    Project,
    ProjectCorruptError,
    ProjectError,
    ProjectForeignError,
    ProjectNotFoundError,
    ProjectSchemaError,
)
from car_desktop.annotations.palette import PALETTE
from car_desktop.annotations.provenance import Provenance
from car_desktop.errors import CaRDesktopError


def _img(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "images"
    _img(root / "a.png", seed=1)
    _img(root / "sub" / "b.png", seed=2)
    _img(root / "Straße" / "猫 ü.png", w=32, h=24, seed=3)
    with Project.create(tmp_path / "p.cardb", root) as p:
        yield p


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_errors_are_user_errors():
    assert issubclass(ProjectError, CaRDesktopError)


def test_annotations_package_imports_neither_torch_nor_qt():
    code = ("import sys, car_desktop.annotations, car_desktop.cli.project; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'PySide6', 'open_clip')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_create_open_persists(project: Project, tmp_path: Path):
    images = project.add_images(project.image_root)
    assert sorted(i.rel_path for i in images) == ["Straße/猫 ü.png", "a.png", "sub/b.png"]
    small = project.find_image("Straße/猫 ü.png")
    assert (small.width, small.height, small.status) == (32, 24, "new")
    cat = project.get_or_create_category("car")
    mask = np.zeros((48, 64), bool)
    mask[3:9, 10:30] = True
    ann = project.add_annotation(project.find_image("a.png").id, cat.id, mask, 0.7, "car", Provenance(concept="car"))
    project.set_setting("recent_concepts", ["car", "Käse"])
    project.close()
    with Project.open(tmp_path / "p.cardb") as again:
        assert again.count_images() == 3
        assert again.get_setting("recent_concepts") == ["car", "Käse"]
        assert np.array_equal(again.get_mask(ann.id), mask)
        got = again.get_annotation(ann.id)
        assert (got.area, got.bbox, got.score, got.source, got.provenance) == (120, (10, 3, 20, 6), 0.7, "car",
                                                                                 Provenance(concept="car"))


def test_create_refuses_existing_file(project: Project, tmp_path: Path):
    with pytest.raises(ProjectNotFoundError):
        Project.create(tmp_path / "p.cardb", tmp_path)


def test_open_missing(tmp_path: Path):
    with pytest.raises(ProjectNotFoundError, match="does not exist"):
        Project.open(tmp_path / "nope.cardb")


@pytest.mark.parametrize("content", [b"hello, I am a text file\n" * 10, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_open_garbage_is_clear_and_unchanged(tmp_path: Path, content: bytes):
    f = tmp_path / "bad.cardb"
    f.write_bytes(content)
    with pytest.raises(ProjectCorruptError, match="nothing was changed"):
        Project.open(f)
    assert f.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.cardb"]


def test_open_truncated_project_is_corrupt(project: Project, tmp_path: Path):
    root = project.image_root
    project.add_images(root)
    cat = project.get_or_create_category("x")
    im = project.find_image("a.png")
    rng = np.random.default_rng(0)
    with project.batch():
        for _ in range(200):
            project.add_annotation(im.id, cat.id, rng.random((48, 64)) > 0.5)
    project.close()
    src = (tmp_path / "p.cardb").read_bytes()
    broken = tmp_path / "broken.cardb"
    broken.write_bytes(src[: len(src) // 2])
    before = _digest(broken)
    with pytest.raises(ProjectCorruptError):
        Project.open(broken)
    assert _digest(broken) == before


def test_open_foreign_sqlite_unchanged(tmp_path: Path):
    f = tmp_path / "other.db"
    conn = sqlite3.connect(f)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = _digest(f)
    with pytest.raises(ProjectForeignError, match="not a CaR Desktop project"):
        Project.open(f)
    assert _digest(f) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_open_newer_schema_unchanged(project: Project, tmp_path: Path):
    project.close()
    f = tmp_path / "p.cardb"
    conn = sqlite3.connect(f)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    before = _digest(f)
    with pytest.raises(ProjectSchemaError, match="newer CaR Desktop"):
        Project.open(f)
    assert _digest(f) == before


def test_add_images_rules(project: Project, tmp_path: Path):
    root = project.image_root
    (root / "notes.txt").write_text("x")
    (root / "broken.png").write_bytes(b"not a png")
    first = project.add_images(root)  # scan: the broken file is skipped with a warning
    assert len(first) == 3
    again = project.add_images([root / "a.png", "sub/b.png"])
    assert [r.id for r in again] == [project.find_image("a.png").id, project.find_image("sub/b.png").id]
    assert project.count_images() == 3
    with pytest.raises(ProjectError, match="not inside"):
        project.add_images([_img(tmp_path / "elsewhere.png")])
    with pytest.raises(ProjectError, match=r"broken\.png"):
        project.add_images([root / "broken.png"])


def test_image_status(project: Project):
    im = project.add_images(project.image_root)[0]
    project.set_image_status(im.id, "reviewed")
    assert project.get_image(im.id).status == "reviewed"
    assert [i.id for i in project.list_images("reviewed")] == [im.id]
    with pytest.raises(ProjectError, match="unknown image status"):
        project.set_image_status(im.id, "done")
    with pytest.raises(ProjectError, match="no image"):
        project.set_image_status(999, "new")


def test_categories(project: Project):
    car = project.get_or_create_category("car | automobile")
    assert (car.id, car.name, car.synonyms, car.color) == (1, "car", ("automobile",), PALETTE[0])
    same = project.get_or_create_category("Car", ["vehicle"])
    assert same.id == car.id and same.synonyms == ("automobile", "vehicle")
    cat2 = project.get_or_create_category("猫")
    assert cat2.id == 2 and cat2.color == PALETTE[1]
    assert project.recolor_category(cat2.id, "#102030").color == (16, 32, 48)
    assert project.recolor_category(cat2.id, None).color == PALETTE[1]
    with pytest.raises(ProjectError, match="already exists"):
        project.rename_category(cat2.id, "CAR")
    renamed = project.rename_category(car.id, "truck")
    assert renamed.id == car.id and renamed.synonyms == ("automobile", "vehicle")
    with pytest.raises(ProjectError):
        project.get_or_create_category("  |  ")
    im = project.add_images(project.image_root)[0]
    project.add_annotation(im.id, car.id, np.ones((im.height, im.width), bool))
    assert project.delete_category(car.id) == 1
    assert project.count_annotations() == 0
    assert project.get_or_create_category("car").id == 3  # ids are never reused


def test_annotation_crud(project: Project):
    im = project.add_images([project.image_root / "a.png"])[0]
    cat = project.get_or_create_category("x")
    m = np.zeros((48, 64), bool)
    m[0, 0] = True
    a = project.add_annotation(im.id, cat.id, m, source="sam")
    assert not a.edited and a.area == 1 and a.bbox == (0, 0, 1, 1)
    m2 = np.zeros_like(m)
    m2[40:48, 50:64] = True
    b = project.update_mask(a.id, m2)
    assert b.edited and b.area == 8 * 14 and np.array_equal(project.get_mask(a.id), m2)
    crop, bbox = project.get_mask_crop(a.id)
    assert bbox == (50, 40, 14, 8) and crop.all()
    manual = project.add_annotation(im.id, cat.id, m)
    assert manual.edited  # a person drew it
    assert [x.id for x in project.list_annotations(im.id)] == [a.id, manual.id]
    with pytest.raises(MaskError, match="64x48"):
        project.add_annotation(im.id, cat.id, np.zeros((10, 10), bool))
    with pytest.raises(ProjectError, match="source"):
        project.add_annotation(im.id, cat.id, m, source="magic")
    with pytest.raises(ProjectError, match="category"):
        project.add_annotation(im.id, 42, m)
    project.delete_annotation(a.id)
    with pytest.raises(ProjectError):
        project.get_mask(a.id)
    assert project.count_annotations(im.id) == 1


def test_batch_is_all_or_nothing(project: Project):
    im = project.add_images([project.image_root / "a.png"])[0]
    cat = project.get_or_create_category("x")
    with pytest.raises(RuntimeError), project.batch():
        project.add_annotation(im.id, cat.id, np.ones((48, 64), bool))
        project.set_image_status(im.id, "reviewed")
        raise RuntimeError("boom")
    assert project.count_annotations() == 0 and project.get_image(im.id).status == "new"


def test_settings(project: Project):
    assert project.get_setting("missing", 5) == 5
    project.set_setting("concepts", {"recent": ["猫", "sky | heaven"]})
    assert project.get_setting("concepts") == {"recent": ["猫", "sky | heaven"]}
    project.set_setting("concepts", None)
    assert project.get_setting("concepts") is None
    with pytest.raises(ProjectError):
        project.set_setting("bad", object())


def test_relink_by_content_hash(project: Project, tmp_path: Path):
    old_root = project.image_root
    project.add_images(old_root)
    new_root = tmp_path / "moved"
    (new_root / "renamed").mkdir(parents=True)
    (old_root / "a.png").rename(new_root / "a.png")  # same relative path
    (old_root / "sub" / "b.png").rename(new_root / "renamed" / "bee.png")  # moved and renamed
    report = project.relink(new_root)
    assert (report.found_by_path, report.found_by_hash, report.missing) == (1, 1, ["Straße/猫 ü.png"])
    b = project.find_image("renamed/bee.png")
    assert b is not None and project.image_path(b.id).is_file()
    assert project.image_root == new_root.resolve()


def test_image_root_follows_project_moved_with_images(project: Project, tmp_path: Path):
    project.add_images(project.image_root)
    project.close()
    moved = tmp_path / "moved_all"
    moved.mkdir()
    (tmp_path / "p.cardb").rename(moved / "p.cardb")
    (tmp_path / "images").rename(moved / "images")
    with Project.open(moved / "p.cardb") as p:
        assert p.image_root == (moved / "images").resolve()
        assert p.image_path(p.find_image("a.png").id).is_file()


def test_review_queue(project: Project):
    ims = project.add_images(project.image_root)
    cat = project.get_or_create_category("x")
    for im, score in zip(ims, (0.9, 0.2, 0.5)):
        m = np.zeros((im.height, im.width), bool)
        m[:4, :4] = True
        project.add_annotation(im.id, cat.id, m, score, "car")
        project.set_image_status(im.id, "auto")
    assert [(im.id, s) for im, s in project.review_queue()] == [(ims[1].id, 0.2), (ims[2].id, 0.5),
                                                                 (ims[0].id, 0.9)]


def _vm_steps(project: Project, fn) -> int:
    """SQLite virtual-machine steps (in thousands) that ``fn`` costs: work done, whatever the clock says."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    project._conn.set_progress_handler(count, 1000)
    try:
        fn()
    finally:
        project._conn.set_progress_handler(None, 0)
    return steps[0]


def test_per_image_reads_are_indexed_and_fast(tmp_path: Path):
    """Listing an image's annotations and saving one mask cost the same in a project of 20 000 masks as
    in one of 10: both go through the image index, never a scan of the table."""
    with Project.create(tmp_path / "big.cardb", tmp_path) as p:
        cat = p.get_or_create_category("x")
        m = np.zeros((32, 32), bool)
        m[4:12, 4:12] = True
        with p.batch():
            ids = [p.add_image_entry(f"img{i:05d}.png", 32, 32, f"h{i}").id for i in range(2000)]
            for i in ids:
                for _ in range(10):
                    p.add_annotation(i, cat.id, m, 0.5, "car")
        plan = " ".join(str(r) for r in p._read(
            "EXPLAIN QUERY PLAN SELECT id FROM annotations WHERE image_id = ? ORDER BY id", (5,)))
        assert "annotations_image" in plan
        listing = _vm_steps(p, lambda: [p.list_annotations(i) for i in ids[:200]])
        a = p.list_annotations(ids[100])[3]
        saving = _vm_steps(p, lambda: [p.update_mask(a.id, ~m) for _ in range(20)])
        # The same reads without the index: every listing scans all 20 000 rows.
        with p.batch() as conn:
            conn.execute("DROP INDEX annotations_image")
        scanning = _vm_steps(p, lambda: [p.list_annotations(i) for i in ids[:200]])
        assert listing * 20 < scanning, (listing, scanning)
        assert saving * 20 < scanning, (saving, scanning)
