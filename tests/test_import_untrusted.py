"""Issue 13, COCO import of an untrusted file: names that leave --images, huge or non-finite
coordinates, wrong types, over-long names and absurdly nested JSON are each refused with a per-entry
message while the rest is imported; no file outside --images is read; importing twice adds nothing;
progress is reported; and what is written back out is strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from car_desktop.annotations import Project, coco_import, export_coco, import_coco
from car_desktop.annotations.provenance import Provenance
from car_desktop.cli import main
from safety_helpers import tree_bytes

H, W = 60, 80
SQUARE = [10, 10, 30, 10, 30, 20, 10, 20]  # pixel-edge square: x 10..30, y 10..20


@pytest.fixture
def setup(tmp_path: Path):
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    Image.new("RGB", (W, H), (50, 60, 70)).save(imgs / "a.png")
    Image.new("RGB", (W, H), (70, 60, 50)).save(imgs / "sub" / "b.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (W, H), (1, 2, 3)).save(outside / "secret.png")
    (imgs / "link.png").symlink_to(outside / "secret.png")
    project = Project.create(tmp_path / "p.cardb", imgs)
    yield project, imgs, outside
    project.close()


def _coco(images: list, annotations: list | None = None, categories: list | None = None) -> dict:
    return {"images": images, "annotations": annotations or [],
            "categories": categories if categories is not None else [{"id": 1, "name": "cat"}]}


def _problems(report) -> dict:
    return {p.entry_id: p.message for p in report.problems}


def test_file_names_must_stay_inside_the_images_folder(setup, monkeypatch):
    project, imgs, outside = setup
    read: list[Path] = []
    real_size, real_hash = coco_import.imagefiles.image_size, coco_import.file_hash
    monkeypatch.setattr(coco_import.imagefiles, "image_size", lambda p: read.append(Path(p)) or real_size(p))
    monkeypatch.setattr(coco_import, "file_hash", lambda p: read.append(Path(p)) or real_hash(p))
    bad_names = ["../outside/secret.png", str(outside / "secret.png"), "sub/../../outside/secret.png", ".", "..",
                 "a\x00.png", "a\n.png", "http://example.com/a.png", "file:///etc/passwd", "x" * 300 + ".png", "",
                 "link.png", "C:\\windows\\a.png", "..\\outside\\secret.png"]
    images = [{"id": i + 10, "file_name": n, "width": W, "height": H} for i, n in enumerate(bad_names)]
    images.append({"id": 1, "file_name": "sub/./b.png", "width": W, "height": H})
    before = tree_bytes(imgs, outside)
    report = import_coco(project, _coco(images), imgs)
    assert sorted(_problems(report)) == list(range(10, 10 + len(bad_names)))
    assert "outside the image folder" in _problems(report)[10] and "URL" in _problems(report)[17]
    assert "leads outside" in _problems(report)[21] and "255 bytes" in _problems(report)[19]
    assert [im.rel_path for im in project.list_images()] == ["sub/b.png"]
    assert read and all(p.resolve().is_relative_to(imgs.resolve()) for p in read)
    assert tree_bytes(imgs, outside) == before


def test_coordinates_are_bounded_before_rasterising(setup):
    project, imgs, _ = setup
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1e30, 5, 20, 5, 20, 15]]},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [[5e7, 5, 20, 5, 20, 15, 5, 5e7]]},
        {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [[-1e30, 0, 1, 0, 1, 1]]},
        # Within the tolerance: clipped onto the image, so the mask is the whole right-hand strip.
        {"id": 4, "image_id": 1, "category_id": 1,
         "segmentation": [[70, -1.5, W + 1.5, -1.5, W + 1.5, H + 1, 70, H + 1]]},
        {"id": 5, "image_id": 1, "category_id": 1, "segmentation": [SQUARE]},
    ]
    report = import_coco(project, _coco([{"id": 1, "file_name": "a.png"}], anns), imgs)
    assert set(_problems(report)) == {1, 2, 3}
    assert all("outside the 80x60 image" in m for m in _problems(report).values())
    masks = [project.get_mask(a.id) for a in project.list_annotations(project.find_image("a.png").id)]
    strip = np.zeros((H, W), bool)
    strip[:, 70:] = True
    square = np.zeros((H, W), bool)
    square[10:20, 10:30] = True
    assert len(masks) == 2 and np.array_equal(masks[0], strip) and np.array_equal(masks[1], square)


def test_non_finite_numbers_wrong_types_and_nesting_are_per_entry(setup, tmp_path):
    project, imgs, _ = setup
    deep = "[" * 100_000 + "]" * 100_000  # deeper than Python's JSON parser goes
    text = (
        '{"images": [{"id": 1, "file_name": "a.png"}, {"id": [2], "file_name": "sub/b.png"},'
        ' {"id": {"x": 3}, "file_name": "sub/b.png"}, {"id": true, "file_name": "sub/b.png"},'
        ' {"id": "4", "file_name": "sub/b.png"}, {"id": 4.0, "file_name": "sub/b.png"},'
        ' {"id": 5, "file_name": "missing.png", "width": "80", "height": 60},'
        ' {"id": 6, "file_name": "huge.png", "width": 1000000, "height": 1000000}],'
        ' "categories": [{"id": 1, "name": "cat", "synonyms": [1, 2]}, {"id": [7], "name": "dog"}],'
        ' "annotations": ['
        '  {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[10, 10, NaN, 10, 30, 20]]},'
        '  {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [[10, 10, Infinity, 10, 30, 20]]},'
        '  {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [[10, 10, 1e400, 10, 30, 20]]},'
        '  {"id": 4, "image_id": [1], "category_id": 1, "segmentation": [[10, 10, 30, 10, 30, 20]]},'
        '  {"id": 5, "image_id": 1, "category_id": 1, "iscrowd": "yes", "segmentation": [[10, 10, 30, 10, 30, 20]]},'
        f'  {{"id": 6, "image_id": 1, "category_id": 1, "segmentation": {deep}}},'
        '  {"id": 7, "image_id": 1, "category_id": 1, "segmentation": [[[[[[[[1]]]]]]]]},'
        '  {"id": 8, "image_id": 1, "category_id": 1, "segmentation": {"size": [60, 80], "counts": [4800, true]}},'
        '  {"id": 9, "image_id": 1, "category_id": 1, "segmentation": [' + json.dumps(SQUARE) + '],'
        '   "score": Infinity}'
        ']}'
    )
    path = tmp_path / "hostile.json"
    path.write_text(text)
    report = import_coco(project, path, imgs)
    kinds = {(p.kind, p.entry_id) for p in report.problems}
    assert kinds == {("image", "<list>"), ("image", "<dict>"), ("image", True), ("image", "4"), ("image", 4.0),
                     ("image", 5), ("image", 6), ("category", "<list>"), ("annotation", 1), ("annotation", 2),
                     ("annotation", 3), ("annotation", 4), ("annotation", 5), ("annotation", 6), ("annotation", 7),
                     ("annotation", 8)}
    msgs = {(p.kind, p.entry_id): p.message for p in report.problems}
    assert "not finite" in msgs[("annotation", 1)] and "not finite" in msgs[("annotation", 3)]
    assert "nested more than" in msgs[("annotation", 6)] and "must be an integer" in msgs[("image", "4")]
    assert "too large" in msgs[("image", 6)] and "iscrowd" in msgs[("annotation", 5)]
    assert any("synonyms" in n for n in report.notes) and any("score" in n for n in report.notes)
    (ann,) = project.list_annotations(project.find_image("a.png").id)
    assert ann.score is None and project.get_category(ann.category_id).name == "cat"


def test_reimporting_the_same_file_adds_nothing(setup, tmp_path, capsys):
    project, imgs, _ = setup
    coco = _coco([{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "sub/b.png"}],
                 [{"id": i, "image_id": 1 + i % 2, "category_id": 1, "segmentation": [[10 + i, 10, 30, 10, 30, 20]]}
                  for i in range(6)])
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coco))
    project.close()
    assert main(["import", str(tmp_path / "p.cardb"), str(path), "--images", str(imgs)]) == 0
    first = capsys.readouterr()
    assert "6 annotations (0 already in the project, skipped)" in first.out
    assert "annotations" in first.err and "100.0%" in first.err  # progress on stderr
    assert main(["import", str(tmp_path / "p.cardb"), str(path), "--images", str(imgs)]) == 0
    assert "0 annotations (6 already in the project, skipped)" in capsys.readouterr().out
    with Project.open(tmp_path / "p.cardb") as p:
        assert p.count_annotations() == 6 and p.count_images() == 2


def test_progress_reports_every_stage(setup, tmp_path):
    project, imgs, _ = setup
    path = tmp_path / "c.json"
    anns = [{"id": i, "image_id": 1, "category_id": 1, "segmentation": [[i % 40, 10, 40, 10, 40, 20]]}
            for i in range(2500)]
    path.write_text(json.dumps(_coco([{"id": 1, "file_name": "a.png"}], anns)))
    stages: list[tuple[str, int]] = []
    calls: list[tuple[int, int]] = []
    report = import_coco(project, path, imgs, progress=lambda d, t: calls.append((d, t)),
                         stage=lambda s, t: stages.append((s, t)))
    assert [s for s, _ in stages] == ["reading", "parsing", "images", "annotations"]
    assert (path.stat().st_size, path.stat().st_size) in calls and calls[-1] == (2500, 2500)
    assert (1000, 2500) in calls and report.annotations_added == 40 and report.annotations_skipped == 2460


def test_unreadable_file_leaves_project_and_images_unchanged(setup, tmp_path, capsys):
    project, imgs, _ = setup
    project.close()
    proj = tmp_path / "p.cardb"
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [' * 10 + "oops")
    pipe = tmp_path / "pipe.json"
    import os

    os.mkfifo(pipe)
    before = tree_bytes(proj, imgs)
    for coco in (bad, pipe, tmp_path):
        assert main(["import", str(proj), str(coco), "--images", str(imgs)]) == 2
        err = capsys.readouterr().err
        assert "COCO" in err and "Traceback" not in err
    assert tree_bytes(proj, imgs) == before


def test_scores_that_are_not_finite_never_reach_a_file(setup, tmp_path):
    project, imgs, _ = setup
    project.add_images(imgs / "a.png")
    im = project.find_image("a.png")
    cat = project.get_or_create_category("cat")
    m = np.zeros((H, W), bool)
    m[5:9, 5:9] = True
    a = project.add_annotation(im.id, cat.id, m, score=float("inf"), provenance=Provenance(sam_iou=float("nan")))
    assert a.score is None and a.provenance.sam_iou is None
    project.set_annotation_score(a.id, float("-inf"))
    project.set_setting("odd", {"x": float("nan")})
    export_coco(project, tmp_path / "out.json")
    text = (tmp_path / "out.json").read_text()

    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    data = json.loads(text, parse_constant=refuse)
    assert "score" not in data["annotations"][0] and project.get_setting("odd") == {"x": None}
