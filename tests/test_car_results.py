"""Applying CaR results to a project (annotations.car_results), the provenance record, the auto-label
record (annotations.auto_labels), and the schema upgrade that brings older projects to them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from car_desktop.annotations import MaskError, Project, mask_codec, schema
from car_desktop.annotations.auto_labels import AUTO_LABELS_SETTING, auto_mask, read_auto_labels
from car_desktop.annotations.car_results import REMOVED_SETTING, apply_car_result, force_keep, removed_concepts
from car_desktop.annotations.provenance import FORCED, KEPT, KEPT_ALONE, Provenance
from car_desktop.annotations.review import ReviewFilter, review_items
from car_desktop.engine.results import CaRResult
from fakes import car_result

H, W = 48, 64


def box(y0: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, 5:20] = True
    return m


def result(*rows: tuple[str, np.ndarray | None, float]) -> CaRResult:
    """A CaR result: (concept text, mask or None for removed, score) per concept, in order."""
    return car_result(list(rows), steps=2, sam_iou=0.91, model_names={"proposal": "p"},
                      config={"preset": "objects", "eta": 0.4, "theta": 0.6, "device": "cpu"})


@pytest.fixture
def project(tmp_path: Path):
    with Project.create(tmp_path / "p.cardb", tmp_path) as p:
        p.add_image_entry("a.png", W, H)
        yield p


def test_apply_stores_masks_provenance_removed_concepts_and_status(project: Project):
    im = project.find_image("a.png")
    applied = apply_car_result(project, im.id, result(("car | automobile", box(0, 5), 0.9), ("absent", None, 0.12),
                                                      ("road", box(10, 20), 0.8)), origin="window")
    assert applied.status_changed and project.get_image(im.id).status == "auto"
    assert [c.name for c in project.list_categories()] == ["car", "absent", "road"]   # typed order
    assert project.list_categories()[0].synonyms == ("automobile",)
    car, road = project.list_annotations(im.id)
    assert np.array_equal(project.get_mask(car.id), box(0, 5)) and car.score == pytest.approx(0.9)
    assert car.provenance == Provenance(concept="car | automobile", status=KEPT, status_text="kept (score 0.90)",
                                        sam_accepted=True, sam_iou=0.91, models={"proposal": "p"},
                                        config={"preset": "objects", "eta": 0.4, "theta": 0.6}, steps=2,
                                        origin="window")
    assert [(r.concept, r.status_text, r.score) for r in removed_concepts(project, im.id)] == \
        [("absent", "removed at step 2 (score 0.12)", 0.12)]
    assert [a.annotation.id for a in applied.added] == [car.id, road.id]
    # The auto-label record: every concept asked, in typed order, with CaR's verdict, score and mask.
    record = read_auto_labels(project, im.id)
    assert [(c.concept, c.status, c.score, c.kept) for c in record.concepts] == [
        ("car | automobile", KEPT, 0.9, True), ("absent", "removed", 0.12, False), ("road", KEPT, 0.8, True)]
    assert np.array_equal(record.concepts[2].mask(H, W), box(10, 20)) and not record.concepts[1].mask(H, W).any()
    assert record.settings == {"preset": "objects", "eta": 0.4, "theta": 0.6} and record.lost == ()
    # It survives a person deleting a wrongly kept mask (the row goes, what CaR said stays).
    project.delete_annotation(road.id)
    assert read_auto_labels(project, im.id) == record


def test_unreadable_or_oversized_record_is_ignored(project: Project):
    im = project.find_image("a.png")
    apply_car_result(project, im.id, result(("car", box(0, 5), 0.9)), origin="window")
    good = project.get_setting(f"{AUTO_LABELS_SETTING}{im.id}")
    small = mask_codec.encode(np.ones((5, 5), bool)).rle.decode("ascii")    # valid RLE, not this image's size
    for bad in ({**good, "size": [99999, 99999]}, {**good, "format": 99},
                {**good, "concepts": [{**good["concepts"][0], "rle": small}]},
                {**good, "concepts": [{**good["concepts"][0], "rle": "0a"}]},
                {**good, "concepts": [{"status": "kept"}]}):
        project.set_setting(f"{AUTO_LABELS_SETTING}{im.id}", bad)
        assert read_auto_labels(project, im.id) is None
        assert auto_mask(project, project.list_annotations(im.id)[0].id) is None


def test_person_edits_are_protected_by_category(project: Project):
    """A re-run replaces unedited CaR masks, never a person's: an edited CaR mask keeps its concept
    (by category, whatever the layer is called), manual masks are untouched; all or nothing."""
    im = project.find_image("a.png")
    first = apply_car_result(project, im.id, result(("car", box(0, 5), 0.9), ("road", box(10, 20), 0.8),
                                                    ("sky", np.zeros((H, W), bool), 0.1)), origin="autolabel")
    assert len(first.added) == 2                       # the empty sky mask is not stored...
    assert [r.concept for r in first.removed] == ["sky"]    # ...but listed as removed ("empty mask")
    assert "empty mask" in first.removed[0].status_text
    car_ann, road_ann = (a.annotation for a in first.added)
    edited = project.update_mask(car_ann.id, box(1, 6))
    manual = project.add_annotation(im.id, road_ann.category_id, box(30, 40))
    second = apply_car_result(project, im.id, result(("car", box(0, 8), 0.95), ("road", box(12, 22), 0.7)),
                              origin="window")
    ids = {a.id for a in project.list_annotations(im.id)}
    assert edited.id in ids and manual.id in ids and road_ann.id not in ids
    assert second.deleted == [road_ann.id] and second.protected == ["car"]
    assert [(a.category.name, a.annotation.score) for a in second.added] == [("road", 0.7)]
    assert np.array_equal(project.get_mask(edited.id), box(1, 6))
    # The mask CaR made survives the person's edit and the re-run (the edited mask descends from the
    # first run's); the edited one is what the project shows.
    assert np.array_equal(auto_mask(project, edited.id), box(0, 5))
    assert auto_mask(project, manual.id) is None
    record = read_auto_labels(project, im.id)
    assert [c.concept for c in record.concepts] == ["car", "road"]    # the second run's concepts
    assert np.array_equal(record.find("road").mask(H, W), box(12, 22))
    before = sorted(a.id for a in project.list_annotations(im.id))
    bad = result(("road", box(0, 3), 0.5))
    bad.concepts[0].mask = np.ones((5, 5), bool)
    with pytest.raises(MaskError):                     # one bad mask: nothing of the call is applied
        apply_car_result(project, im.id, bad, origin="window")
    assert sorted(a.id for a in project.list_annotations(im.id)) == before
    project.set_image_status(im.id, "reviewed")
    apply_car_result(project, im.id, result(("road", box(0, 3), 0.5)), origin="window")
    assert project.get_image(im.id).status == "reviewed"


def test_skip_if_writes_nothing(project: Project):
    im = project.find_image("a.png")
    applied = apply_car_result(project, im.id, result(("car", box(0, 5), 0.9)), origin="autolabel",
                               skip_if=lambda: "reviewed by a person")
    assert applied.skipped == "reviewed by a person" and not applied.added
    assert project.count_annotations() == 0 and project.get_image(im.id).status == "new"


def test_force_keep_is_a_person_decision(project: Project):
    im = project.find_image("a.png")
    apply_car_result(project, im.id, result(("car", box(0, 5), 0.9), ("wet floor", None, 0.2)), origin="window")
    added = force_keep(project, im.id, result(("wet floor", box(20, 30), 1.0)), "wet floor", origin="window")
    assert added is not None and added.annotation.edited and added.category.name == "wet floor"
    assert added.annotation.provenance.status == FORCED
    assert added.annotation.provenance.status_text.startswith("force-kept (")
    assert np.array_equal(auto_mask(project, added.annotation.id), box(20, 30))
    entry = read_auto_labels(project, im.id).find("wet floor")
    assert entry.status == FORCED and not entry.kept          # CaR removed it: the person decided
    assert removed_concepts(project, im.id) == []
    # A later run leaves the forced mask alone (its category is protected).
    again = apply_car_result(project, im.id, result(("car", box(0, 5), 0.9), ("wet floor", None, 0.2)),
                             origin="window")
    assert again.protected == ["wet floor"] and removed_concepts(project, im.id) == []
    assert read_auto_labels(project, im.id).find("wet floor") == entry     # the record keeps the decision
    assert force_keep(project, im.id, result(("wet floor", np.zeros((H, W), bool), 1.0)), "wet floor",
                      origin="window") is None


def test_provenance_json_is_tolerant_and_minimal():
    p = Provenance(concept="a | b", status=KEPT_ALONE, models={"m": "x"}, steps=3)
    assert Provenance.from_json(p.to_json()) == p
    assert json.loads(Provenance().to_json()) == {"version": 2}
    assert Provenance.from_json("not json") == Provenance()
    assert Provenance.from_json('{"status": 5, "concept": "x", "extra": 1}') == Provenance(concept="x")


def _v1_project(path: Path) -> None:
    """A project file as version 1 wrote it, with both old provenance shapes and a removed list: a.png
    has an unedited window mask and an import, b.png an edited folder-loop mask, c.png a force-kept one."""
    conn = sqlite3.connect(path, isolation_level=None)
    schema.MIGRATIONS[0](conn)
    conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO meta VALUES ('image_root', ?)", (str(path.parent),))
    for name in ("a.png", "b.png", "c.png"):
        conn.execute("INSERT INTO images (rel_path, width, height, status, added_at) VALUES (?, ?, ?, 'auto', 0)",
                     (name, W, H))
    conn.execute("INSERT INTO categories (name, synonyms, created_at) VALUES ('car', '[\"automobile\"]', 0)")
    enc = mask_codec.encode(box(0, 5))
    old = [  # the window's shape, the folder loop's shape (edited), a force-kept one, an import
        (1, {"concept": "car, automobile", "status": "kept_without_competition",
             "status_text": "kept without competition", "config": {"preset": "objects", "eta": 0.4},
             "models": {"proposal": "p"}}, "car", 0),
        (2, {"concept": "car", "query_text": "car, automobile", "score": 0.8, "status": "kept",
             "thresholds": {"theta": 0.6}, "preset": "objects", "sam_mode": "off", "run_key": "k",
             "origin": "autolabel"}, "car", 1),
        (3, {"concept": "car, automobile", "forced": True}, "car", 1),
        (1, {"imported_from": "coco", "coco_id": 7, "iscrowd": 1}, "import", 1),
    ]
    for image_id, prov, source, edited in old:
        x, y, w, h = enc.bbox
        conn.execute("INSERT INTO annotations (image_id, category_id, height, width, rle, crop_rle, bbox_x, bbox_y, "
                     "bbox_w, bbox_h, area, parts, holes, score, source, edited, provenance, created_at, updated_at) "
                     "VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 0, 0.8, ?, ?, ?, 0, 0)",
                     (image_id, H, W, enc.rle, enc.crop_rle, x, y, w, h, enc.area, source, edited, json.dumps(prov)))
    conn.execute("INSERT INTO settings VALUES ('ui.removed_concepts.1', ?)", (json.dumps(
        [{"name": "wet floor", "query_text": "wet floor, puddle", "status_text": "removed at step 2 (score 0.10)",
          "score": 0.1, "color": [1, 2, 3]}]),))
    conn.close()


def test_upgrade_from_version_1(tmp_path: Path):
    path = tmp_path / "old.cardb"
    _v1_project(path)
    with Project.open(path) as p:
        assert p.schema_version == schema.SCHEMA_VERSION == 4
        window, imported = p.list_annotations(1)
        (loop,), (forced,) = p.list_annotations(2), p.list_annotations(3)
        assert window.provenance == Provenance(concept="car | automobile", status=KEPT_ALONE,
                                               status_text="kept without competition", models={"proposal": "p"},
                                               config={"preset": "objects", "eta": 0.4}, origin="window")
        assert loop.provenance == Provenance(concept="car | automobile", status=KEPT, run_key="k", origin="autolabel",
                                             config={"theta": 0.6, "preset": "objects", "sam_mode": "off"})
        assert forced.provenance.status == FORCED and forced.provenance.concept == "car | automobile"
        assert imported.provenance == Provenance(origin="coco", coco_id=7, iscrowd=True)
        assert [(r.concept, r.score) for r in removed_concepts(p, 1)] == [("wet floor | puddle", 0.1)]
        assert p.get_setting("ui.removed_concepts.1") is None and p.get_setting(f"{REMOVED_SETTING}1")
        # The auto-label records, rebuilt as far as the old file allows: an unedited CaR mask is its own
        # first version and the removed list says what CaR removed; an edited mask's first version is
        # gone (the record says so); a force-kept concept was removed by CaR.
        a = read_auto_labels(p, 1)
        assert [(c.concept, c.status, c.kept) for c in a.concepts] == [
            ("car | automobile", KEPT_ALONE, True), ("wet floor | puddle", "removed", False)]
        assert a.lost == () and a.settings == {"preset": "objects", "eta": 0.4}
        assert np.array_equal(auto_mask(p, window.id), box(0, 5)) and auto_mask(p, imported.id) is None
        b = read_auto_labels(p, 2)
        assert b.concepts == () and b.lost == ("car | automobile",) and auto_mask(p, loop.id) is None
        c = read_auto_labels(p, 3)
        assert [(e.status, e.kept) for e in c.concepts] == [(FORCED, False)] and auto_mask(p, forced.id) is None
        # The review queue reads the verdict from the record alone (no text matching).
        alone = review_items(p, ReviewFilter(car_statuses=(KEPT_ALONE,), image_statuses=(), sources=()))
        assert [it.annotation_id for it in alone] == [window.id] and alone[0].score_text == "alone"
        assert [it.status_short for it in review_items(p, ReviewFilter(car_statuses=(FORCED,), image_statuses=(),
                                                                        sources=()))] == ["force-kept"]
