"""COCO export and import: every export is loaded with pycocotools (COCO(), annToMask) and compared
with the stored masks (exact for RLE, IoU >= 0.95 for polygons of shapes over 100 px), the COCO rules
(ids, no background, relative names, area and bbox from the mask, rings of >= 3 points), the awkward
masks (holes, several parts, one pixel, image border, empty), non-ASCII names, round trips,
per-entry import problems, label PNGs, and the CLI."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from car_desktop.annotations import CocoImportError, ExportError, Project, export_coco, export_label_pngs, import_coco
from car_desktop.annotations.provenance import Provenance
from car_desktop.cli import main as cli_main

H, W = 60, 80


def _quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _masks() -> dict[str, np.ndarray]:
    def blank():
        return np.zeros((H, W), bool)

    out = {}
    m = blank(); cv2.ellipse(m.view(np.uint8), (40, 30), (25, 15), 20, 0, 360, 1, -1); out["ellipse"] = m
    m = blank(); m[10:40, 10:40] = True; m[18:30, 18:30] = False; out["holes"] = m
    m = blank(); m[2:12, 50:70] = True; m[40:55, 5:25] = True; m[45:58, 60:78] = True; out["parts"] = m
    m = blank(); m[33, 44] = True; out["pixel"] = m
    m = blank(); m[0:H, 0:12] = True; m[50:H, 0:W] = True; out["border"] = m
    m = blank(); np.fill_diagonal(m[:, 20:], True); out["diagonal"] = m
    out["empty"] = blank()
    return out


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "Bilder"
    for rel in ("straße/猫 1.png", "b.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(root / rel)
    with Project.create(tmp_path / "p.cardb", root) as p:
        p.add_images(root)
        yield p


def _fill(project: Project) -> dict[int, np.ndarray]:
    """Store the awkward masks; returns annotation id -> mask."""
    cat_kase = project.get_or_create_category("Käse | cheese")
    cat_cat = project.get_or_create_category("猫")
    im1 = project.find_image("straße/猫 1.png")
    im2 = project.find_image("b.png")
    stored = {}
    for i, (name, m) in enumerate(_masks().items()):
        a = project.add_annotation(im1.id if i % 2 == 0 else im2.id, cat_kase.id if i % 3 else cat_cat.id, m,
                                   score=0.5 + i / 20, source="car", provenance=Provenance(concept=name))
        stored[a.id] = m
    return stored


def _filled(m: np.ndarray) -> np.ndarray:
    bg = np.pad(~m, 1, constant_values=True).view(np.uint8)
    _, labels = cv2.connectedComponents(bg, connectivity=4)
    return (labels != labels[0, 0])[1:-1, 1:-1] | m


def _check_rules(data: dict, coco: COCO, project: Project) -> None:
    assert set(data) == {"info", "licenses", "images", "annotations", "categories"}
    for key in ("images", "annotations", "categories"):
        ids = [e["id"] for e in data[key]]
        assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i >= 1 for i in ids)
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
    assert not any(c["name"].lower() in ("background", "__background__") for c in data["categories"])
    assert {c["id"]: c["name"] for c in data["categories"]} == {c.id: c.name for c in project.list_categories()}
    for im in data["images"]:
        assert set(im) >= {"id", "file_name", "width", "height"} and not Path(im["file_name"]).is_absolute()
    for a in data["annotations"]:
        assert set(a) >= {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}
        assert a["iscrowd"] == 0
        seg = a["segmentation"]
        if isinstance(seg, list):
            assert all(len(r) >= 6 and len(r) % 2 == 0 and len(r) != 4 for r in seg)
        else:
            assert seg["size"] == [H, W] and isinstance(seg["counts"], str)
        m = coco.annToMask(a).astype(bool)
        if isinstance(seg, dict):
            assert a["area"] == int(m.sum())
            assert a["bbox"] == [int(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(
                m.astype(np.uint8))))]


@pytest.mark.parametrize("fmt", ["rle", "polygon", "auto"])
def test_instance_export_matches_masks(project: Project, tmp_path: Path, fmt: str):
    stored = _fill(project)
    out = tmp_path / "out" / f"{fmt}.json"
    report = export_coco(project, out, fmt=fmt)
    assert report.empty_skipped == 1 and any("empty" in n for n in report.notes)
    data = json.loads(out.read_text(encoding="utf-8"))
    coco = _quiet_coco(out)
    _check_rules(data, coco, project)
    assert {im["file_name"] for im in data["images"]} == {"straße/猫 1.png", "b.png"}
    # Instance mode writes annotations in stored order, empty ones skipped.
    by_image = {a.id: a.image_id for im in project.list_images() for a in project.list_annotations(im.id)}
    expected = [stored[i] for i in sorted(stored, key=lambda i: (by_image[i], i)) if stored[i].any()]
    assert len(data["annotations"]) == len(expected)
    for ann, m in zip(data["annotations"], expected):
        got = coco.annToMask(ann).astype(bool)
        assert ann["area"] == int(m.sum())  # area and bbox from the mask even for polygons
        assert ann["bbox"] == [int(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(
            m.astype(np.uint8))))]
        assert "score" in ann
        if isinstance(ann["segmentation"], dict):
            assert np.array_equal(got, m)
        else:
            assert np.array_equal(got, _filled(m))  # exact outline: only holes are lost
            if m.sum() > 100 and np.array_equal(_filled(m), m):  # holes are reported as lost instead
                assert (got & m).sum() / (got | m).sum() >= 0.95
    if fmt == "polygon":
        assert report.holes_lost == 1 and report.hole_pixels_lost == 144
    if fmt == "auto":
        assert report.rles == 1 and report.polygons == len(expected) - 1  # only the holed mask is RLE
    if fmt == "rle":
        assert report.polygons == 0


def test_one_pixel_polygon_has_a_valid_ring(project: Project, tmp_path: Path):
    cat = project.get_or_create_category("dot")
    im = project.find_image("b.png")
    m = np.zeros((H, W), bool)
    m[0, W - 1] = True  # one pixel in the corner
    project.add_annotation(im.id, cat.id, m)
    export_coco(project, tmp_path / "dot.json", fmt="polygon")
    data = json.loads((tmp_path / "dot.json").read_text())
    ring = data["annotations"][0]["segmentation"][0]
    assert len(ring) == 8  # four corners, never a 4-number ring (read as a box)
    assert np.array_equal(_quiet_coco(tmp_path / "dot.json").annToMask(data["annotations"][0]).astype(bool), m)


def test_polygon_iou_random_shapes(project: Project, tmp_path: Path):
    rng = np.random.default_rng(0)
    cat = project.get_or_create_category("blob")
    im = project.find_image("b.png")
    masks = []
    for _ in range(40):
        m = np.zeros((H, W), np.uint8)
        cv2.ellipse(m, (int(rng.integers(0, W)), int(rng.integers(0, H))),
                    (int(rng.integers(6, 30)), int(rng.integers(6, 20))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        masks.append(m.astype(bool))
        project.add_annotation(im.id, cat.id, masks[-1])
    export_coco(project, tmp_path / "poly.json", fmt="polygon")
    coco = _quiet_coco(tmp_path / "poly.json")
    for ann, m in zip(coco.dataset["annotations"], masks):
        got = coco.annToMask(ann).astype(bool)
        if m.sum() > 100:
            assert (got & m).sum() / (got | m).sum() >= 0.95


def test_polygon_rings_are_exact_pixel_outlines():
    """The tracer on awkward pixel patterns (noise: one-pixel lines, parts touching at a corner,
    pixels hanging by a corner): every ring runs along pixel edges (axis-aligned steps, straight
    runs merged) and the rings together enclose exactly the parts with their holes filled."""
    from car_desktop.annotations.polygons import outer_rings

    rng = np.random.default_rng(3)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 25, 2))
        m = rng.random((h, w)) < rng.uniform(0.1, 0.9)
        rings = outer_rings(m, (7, 3))
        enclosed = 0
        for ring in rings:
            p = np.asarray(ring, np.int64).reshape(-1, 2) - (7, 3)
            q = np.roll(p, -1, axis=0)
            assert len(p) >= 4 and np.all((p[:, 0] == q[:, 0]) ^ (p[:, 1] == q[:, 1]))
            r = np.roll(q, -1, axis=0)
            assert np.all((q - p)[:, 0] * (r - q)[:, 1] - (q - p)[:, 1] * (r - q)[:, 0] != 0)
            enclosed += abs(int((p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]).sum())) // 2
        assert enclosed == int(_filled(m).sum())
    assert outer_rings(np.zeros((3, 4), bool)) == [] and outer_rings(np.zeros((0, 4), bool)) == []


def test_encode_rle_cuts_the_crop_from_the_runs():
    """Import path: the crop RLE, bbox, area, parts and holes cut from a full-image RLE equal those
    of encoding the mask itself; non-canonical counts are read; counts of the wrong total are refused."""
    from car_desktop.annotations import mask_codec

    rng = np.random.default_rng(4)
    for i in range(300):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        m = np.zeros((h, w), bool)
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        m[y:y + int(rng.integers(1, h + 1)), x:x + int(rng.integers(1, w + 1))] = True
        m &= rng.random((h, w)) < (1.0 if i % 5 == 0 else rng.uniform(0.2, 0.9))
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert mask_codec.encode_rle(dict(rle)) == mask_codec.encode(m)
        assert mask_codec.encode_rle({"size": [h, w], "counts": rle["counts"].decode()}) == mask_codec.encode(m)
    odd = mask_utils.frPyObjects({"size": [4, 3], "counts": [5, 1, 0, 1, 0, 0, 1, 4]}, 4, 3)  # empty runs
    got, ref = mask_codec.encode_rle(odd), mask_codec.encode(mask_utils.decode(odd))
    assert (got.crop_rle, got.bbox, got.area, got.parts, got.holes) == (ref.crop_rle, ref.bbox, ref.area,
                                                                        ref.parts, ref.holes)
    with pytest.raises(ValueError):
        mask_codec.encode_rle({"size": [4, 3], "counts": b"52"})  # 7 pixels, not 12


def test_refuse_holes_leaves_previous_file(project: Project, tmp_path: Path):
    _fill(project)
    out = tmp_path / "x.json"
    out.write_text("previous")
    with pytest.raises(ExportError, match="hole"):
        export_coco(project, out, fmt="polygon", on_holes="refuse")
    assert out.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []
    with pytest.raises(ExportError, match="unknown format"):
        export_coco(project, out, fmt="svg")


def test_worker_processes_give_the_same_file(project: Project, tmp_path: Path):
    """Polygons traced in worker processes (large exports) come out byte for byte as traced here,
    in the same order; a refused hole still raises and leaves the previous file."""
    stored = _fill(project)
    cat = project.get_or_create_category("blob")
    im = project.find_image("b.png")
    rng = np.random.default_rng(1)
    for _ in range(300):  # more than one batch of work
        m = np.zeros((H, W), np.uint8)
        cv2.ellipse(m, (int(rng.integers(0, W)), int(rng.integers(0, H))),
                    (int(rng.integers(2, 30)), int(rng.integers(2, 20))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        stored[project.add_annotation(im.id, cat.id, m.astype(bool)).id] = m.astype(bool)
    for fmt in ("auto", "polygon"):
        here = export_coco(project, tmp_path / f"{fmt}0.json", fmt=fmt, workers=0)
        there = export_coco(project, tmp_path / f"{fmt}2.json", fmt=fmt, workers=2)
        assert (here.polygons, here.rles, here.holes_lost, here.hole_pixels_lost) == \
            (there.polygons, there.rles, there.holes_lost, there.hole_pixels_lost)
        a, b = ((tmp_path / f"{fmt}{w}.json").read_text(encoding="utf-8") for w in (0, 2))
        assert a[a.index('"segmentation_format"'):] == b[b.index('"segmentation_format"'):]
    _check_rules(json.loads(b), _quiet_coco(tmp_path / "polygon2.json"), project)
    out = tmp_path / "x.json"
    out.write_text("previous")
    with pytest.raises(ExportError, match="hole"):
        export_coco(project, out, fmt="polygon", on_holes="refuse", workers=2)
    assert out.read_text() == "previous"


def test_semantic_and_components_modes(project: Project, tmp_path: Path):
    stored = _fill(project)
    im1 = project.find_image("straße/猫 1.png")
    for mode in ("semantic", "components"):
        out = tmp_path / f"{mode}.json"
        export_coco(project, out, fmt="rle", mode=mode)
        data = json.loads(out.read_text())
        coco = _quiet_coco(out)
        _check_rules(data, coco, project)
        for cat in project.list_categories():
            anns = [a for a in project.list_annotations(im1.id) if a.category_id == cat.id]
            union = np.zeros((H, W), bool)
            for a in anns:
                union |= stored[a.id]
            got = [x for x in data["annotations"] if x["image_id"] == im1.id and x["category_id"] == cat.id]
            if mode == "semantic":
                assert len(got) == (1 if union.any() else 0)
            else:
                n_parts = sum(cv2.connectedComponents(stored[a.id].view(np.uint8), connectivity=8)[0] - 1
                              for a in anns)
                assert len(got) == n_parts
                assert all(cv2.connectedComponents(coco.annToMask(x), connectivity=8)[0] == 2 for x in got)
            total = np.zeros((H, W), bool)
            for x in got:
                total |= coco.annToMask(x).astype(bool)
            assert np.array_equal(total, union)


def test_subset_export(project: Project, tmp_path: Path):
    _fill(project)
    im2 = project.find_image("b.png")
    export_coco(project, tmp_path / "s.json", image_ids=[im2.id])
    data = json.loads((tmp_path / "s.json").read_text())
    assert [i["id"] for i in data["images"]] == [im2.id]
    assert data["annotations"] and {a["image_id"] for a in data["annotations"]} == {im2.id}
    with pytest.raises(ExportError):
        export_coco(project, tmp_path / "s.json", image_ids=[999])


def _strip(data: dict) -> tuple:
    names = {c["id"]: c["name"] for c in data["categories"]}
    files = {i["id"]: i["file_name"] for i in data["images"]}
    anns = sorted((files[a["image_id"]], names[a["category_id"]], json.dumps(a["segmentation"]), a["area"],
                   a["bbox"], a.get("score")) for a in data["annotations"])
    return sorted(files.values()), sorted(names.values()), anns


def test_coco_project_coco_round_trip(project: Project, tmp_path: Path):
    _fill(project)
    first = tmp_path / "first.json"
    export_coco(project, first, fmt="rle")
    with Project.create(tmp_path / "q.cardb", project.image_root) as q:
        report = import_coco(q, first, project.image_root)
        assert report.problems == [] and report.annotations_added == 6 and report.images_added == 2
        second = tmp_path / "second.json"
        export_coco(q, second, fmt="rle")
        assert _strip(json.loads(first.read_text())) == _strip(json.loads(second.read_text()))
        again = import_coco(q, first, project.image_root)  # images are recognised, not duplicated
        assert again.images_existing == 2 and again.images_added == 0


def test_import_formats_and_problems(project: Project, tmp_path: Path):
    m = np.zeros((H, W), bool)
    m[5:15, 5:25] = True
    m2 = np.zeros((H, W), bool)
    m2[20:30, 30:50] = True
    rle = mask_utils.encode(np.asfortranarray(m2.astype(np.uint8)))
    flat = m.ravel(order="F").astype(int)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]) != 0))
    counts = [int(np.flatnonzero(flat)[0]), *runs.tolist()]
    assert sum(counts) == H * W
    coco = {
        "images": [{"id": 10, "file_name": "b.png", "width": W, "height": H},
                   {"id": 11, "file_name": "gone/新.png", "width": W, "height": H},
                   {"id": 12, "file_name": "b.png"}, {"id": 13},
                   {"id": 14, "file_name": "straße/猫 1.png", "width": 5, "height": 5}],
        "categories": [{"id": 1, "name": "background"}, {"id": 7, "name": "Käse"}, {"id": 8}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 7,
             "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}, "score": 0.25},
            {"id": 3, "image_id": 11, "category_id": 7, "segmentation": {"size": [H, W], "counts": counts},
             "iscrowd": 1},
            {"id": 4, "image_id": 10, "category_id": 7, "segmentation": [[1, 2, 3, 4]]},
            {"id": 5, "image_id": 99, "category_id": 7, "segmentation": [[5, 5, 25, 5, 25, 15]]},
            {"id": 6, "image_id": 10, "category_id": 42, "segmentation": [[5, 5, 25, 5, 25, 15]]},
            {"id": 7, "image_id": 10, "category_id": 7, "segmentation": {"size": [3, 3], "counts": "abc"}},
            {"id": 8, "image_id": 10, "category_id": 1, "segmentation": [[5, 5, 25, 5, 25, 15]]},
            {"id": 9, "image_id": 10, "category_id": 7},
            {"id": 10, "image_id": 10, "category_id": 7, "segmentation": {"size": [H, W], "counts": [5, 3]}},
            # The same image, category and mask as id 1: already there, skipped (and counted).
            {"id": 11, "image_id": 10, "category_id": 7, "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]]},
        ],
    }
    with Project.create(tmp_path / "imp.cardb", project.image_root) as q:
        report = import_coco(q, coco, project.image_root)
        problems = {(p.kind, p.entry_id) for p in report.problems}
        assert problems == {("image", 13), ("image", 14), ("category", 8), ("annotation", 4),
                            ("annotation", 5), ("annotation", 6), ("annotation", 7), ("annotation", 9),
                            ("annotation", 10)}
        assert report.annotations_added == 3 and report.images_added == 2 and report.annotations_skipped == 1
        assert report.images_existing == 1  # id 12 names the same file as id 10: same project image
        assert any("新.png" in n for n in report.notes)
        assert [c.name for c in q.list_categories()] == ["Käse"]
        anns = q.list_annotations(q.find_image("b.png").id)
        assert [a.score for a in anns] == [None, 0.25]
        assert np.array_equal(q.get_mask(anns[0].id), m) and np.array_equal(q.get_mask(anns[1].id), m2)
        crowd = q.list_annotations(q.find_image("gone/新.png").id)[0]
        assert crowd.provenance.iscrowd and crowd.provenance.origin == "coco"
        assert np.array_equal(q.get_mask(crowd.id), m)
        export_coco(q, tmp_path / "re.json")
        data = json.loads((tmp_path / "re.json").read_text())
        assert sorted(a["iscrowd"] for a in data["annotations"]) == [0, 0, 1]


def test_import_unreadable_file(project: Project, tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CocoImportError, match="not a readable COCO"):
        import_coco(project, bad, project.image_root)
    bad.write_text("[]")
    with pytest.raises(CocoImportError, match="no 'images'"):
        import_coco(project, bad, project.image_root)
    with pytest.raises(CocoImportError, match="not inside"):
        import_coco(project, {"images": []}, tmp_path)


def test_label_pngs(project: Project, tmp_path: Path):
    stored = _fill(project)
    out = tmp_path / "labels"
    report = export_label_pngs(project, out)
    assert report.images == 2 and report.empty_skipped == 1
    png = Image.open(out / "straße" / "猫 1.png")
    assert png.mode == "P"
    values = np.array(png)
    im1 = project.find_image("straße/猫 1.png")
    anns = project.list_annotations(im1.id)
    smallest = min((a for a in anns if a.area), key=lambda a: a.area)
    assert (values[stored[smallest.id]] == smallest.category_id).all()  # small objects stay on top
    covered = np.zeros((H, W), bool)
    for a in anns:
        covered |= stored[a.id]
    assert (values[~covered] == 0).all() and (values[covered] > 0).all()
    cat = project.get_category(smallest.category_id)
    assert tuple(png.getpalette()[3 * cat.id:3 * cat.id + 3]) == cat.color
    lines = (out / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "0 background" and "1 Käse" in lines and "2 猫" in lines


def test_cli_export_and_import(project: Project, tmp_path: Path, capsys):
    _fill(project)
    project.close()
    out = tmp_path / "cli.json"
    assert cli_main(["export", str(tmp_path / "p.cardb"), "--coco", str(out), "--format", "rle",
                     "--mode", "semantic", "--label-pngs", str(tmp_path / "png")]) == 0
    assert "note: 1 empty mask(s) skipped" in capsys.readouterr().out
    data = _quiet_coco(out).dataset
    assert data["info"]["mode"] == "semantic" and (tmp_path / "png" / "b.png").is_file()
    assert cli_main(["import", str(tmp_path / "new.cardb"), str(out), "--images",
                     str(tmp_path / "Bilder")]) == 0
    with Project.open(tmp_path / "new.cardb") as q:
        assert q.count_annotations() == len(data["annotations"])
    assert cli_main(["export", str(tmp_path / "missing.cardb"), "--coco", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
