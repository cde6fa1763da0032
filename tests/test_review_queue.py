"""The review queue (annotations/review.py): order by doubt, filters, paging, and reads beside writes."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from car_desktop.annotations import Project, review
from car_desktop.annotations.provenance import KEPT_ALONE, Provenance
from car_desktop.annotations.review import ReviewFilter, queue_concepts, review_items, review_page

H, W = 12, 16


def _mask(i: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[1 + i % 8: 4 + i % 8, 2:10] = True
    return m


def _car(project: Project, image_id: int, concept: str, score: float | None, status: str = "kept",
         sam: bool | None = None, iou: float | None = None, edited: bool = False, source: str = "car") -> int:
    cat = project.get_or_create_category(concept)
    prov = Provenance(concept=concept, status=status, sam_accepted=sam, sam_iou=iou,
                      status_text="kept without competition" if status == KEPT_ALONE else "")
    ann = project.add_annotation(image_id, cat.id, _mask(image_id), score=score, source=source, provenance=prov,
                                 edited=edited)
    return ann.id


@pytest.fixture
def known(tmp_path: Path):
    """Three auto-labelled images, one reviewed, one new; scores chosen so the order is known."""
    p = Project.create(tmp_path / "q.cardb", tmp_path)
    ids = {name: p.add_image_entry(f"{name}.png", W, H, status=st).id
           for name, st in (("a", "auto"), ("b", "auto"), ("c", "auto"), ("r", "reviewed"), ("n", "new"))}
    a = {
        "a_cat": _car(p, ids["a"], "cat", 0.61, sam=True, iou=0.93),
        "a_dog": _car(p, ids["a"], "dog", 0.35, sam=True, iou=0.88),
        "b_sky": _car(p, ids["b"], "sky", 1.0, status=KEPT_ALONE),
        "c_cat": _car(p, ids["c"], "cat", 0.35, sam=False, iou=0.41),     # same score as a_dog, SAM refused
        "c_dog": _car(p, ids["c"], "dog", 0.90),                          # SAM not run
        "c_cat2": _car(p, ids["c"], "cat", 0.20, edited=True),
        "c_manual": p.add_annotation(ids["c"], p.get_or_create_category("cup").id, _mask(3), source="manual").id,
        "r_cat": _car(p, ids["r"], "cat", 0.05),
        "c_imp": _car(p, ids["c"], "cup", 0.50, status=None, source="import"),
    }
    yield p, ids, a
    p.close()


def _ids(items):
    return [it.annotation_id for it in items]


def test_default_order_kept_alone_then_score_then_sam(known):
    p, _, a = known
    items = review_items(p)
    # kept-alone first (score 1 is no confidence), then ascending score; at 0.35 SAM's refusal
    # comes before SAM's acceptance; the reviewed image, the new image and the manual mask are out.
    assert _ids(items) == [a["b_sky"], a["c_cat2"], a["c_cat"], a["a_dog"], a["c_imp"], a["a_cat"], a["c_dog"]]
    first = items[0]
    assert first.kept_alone and first.score_text == "alone" and first.car_text == "kept without competition"
    by_id = {it.annotation_id: it for it in items}
    assert by_id[a["c_cat"]].sam_accepted is False and by_id[a["c_cat"]].sam_text == "rejected (0.41)"
    assert by_id[a["a_cat"]].sam_text == "accepted (0.93)" and by_id[a["c_dog"]].sam_text == "—"
    assert by_id[a["a_dog"]].rel_path == "a.png" and by_id[a["a_dog"]].category_name == "dog"
    assert by_id[a["c_cat2"]].edited and not by_id[a["c_cat"]].edited


def test_filters_concept_status_sam_edited(known):
    p, _, a = known
    cat = p.find_category("cat").id
    assert _ids(review_items(p, ReviewFilter(category_ids=(cat,)))) == [a["c_cat2"], a["c_cat"], a["a_cat"]]
    every = ReviewFilter(image_statuses=())
    assert _ids(review_items(p, ReviewFilter(category_ids=(cat,), image_statuses=()))) == [
        a["r_cat"], a["c_cat2"], a["c_cat"], a["a_cat"]]
    assert _ids(review_items(p, ReviewFilter(image_statuses=("reviewed",)))) == [a["r_cat"]]
    assert _ids(review_items(p, ReviewFilter(sam=("rejected",)))) == [a["c_cat"]]
    assert _ids(review_items(p, ReviewFilter(sam=("accepted",)))) == [a["a_dog"], a["a_cat"]]
    assert _ids(review_items(p, ReviewFilter(edited=True))) == [a["c_cat2"]]
    assert _ids(review_items(p, ReviewFilter(car_statuses=(KEPT_ALONE,)))) == [a["b_sky"]]
    # Manual masks carry no score: listed only when asked for.
    assert a["c_manual"] not in _ids(review_items(p, every))
    manual = review_items(p, ReviewFilter(image_statuses=(), sources=("manual",), scored_only=False))
    assert _ids(manual) == [a["c_manual"]] and manual[0].score_text == "—"
    with pytest.raises(ValueError):
        review_items(p, ReviewFilter(sam=("maybe",)))


def test_sorts_and_paging(known):
    p, _, a = known
    by_concept = review_items(p, sort="concept")
    assert [it.category_name for it in by_concept] == ["cat", "cat", "cat", "cup", "dog", "dog", "sky"]
    assert _ids(by_concept)[:3] == [a["c_cat2"], a["c_cat"], a["a_cat"]]
    by_image = review_items(p, sort="image")
    assert [it.rel_path for it in by_image] == ["a.png", "a.png", "b.png", "c.png", "c.png", "c.png", "c.png"]
    assert _ids(by_image)[:2] == [a["a_dog"], a["a_cat"]]
    assert _ids(review_items(p, sort="score_desc"))[0] == a["c_dog"]
    page = review_page(p, limit=3)
    assert page.total == 7 and len(page.items) == 3 and page.has_more
    rest = review_page(p, limit=3, offset=6)
    assert _ids(rest.items) == [a["c_dog"]] and not rest.has_more
    assert _ids(page.items) + _ids(review_page(p, limit=3, offset=3).items) + _ids(rest.items) == _ids(review_items(p))
    with pytest.raises(ValueError):
        review_page(p, sort="random")


def test_queue_follows_status_changes_and_concepts(known):
    p, ids, a = known
    assert [(n, c) for _id, n, c in queue_concepts(p)] == [("cat", 3), ("cup", 1), ("dog", 2), ("sky", 1)]
    p.set_image_status(ids["c"], "reviewed")
    assert _ids(review_items(p)) == [a["b_sky"], a["a_dog"], a["a_cat"]]
    # A broken provenance row does not break the queue.
    with p.batch() as conn:
        conn.execute("UPDATE annotations SET provenance = 'not json' WHERE id = ?", (a["a_cat"],))
    items = review_items(p)
    assert _ids(items) == [a["b_sky"], a["a_dog"], a["a_cat"]] and items[-1].car_status is None


def test_reads_from_a_thread_while_the_project_writes(known):
    p, ids, _a = known
    errors: list[Exception] = []
    seen: list[int] = []

    def reader():
        try:
            for _ in range(20):
                seen.append(review_page(p, limit=50).total)
        except Exception as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(20):
        _car(p, ids["a"], "bird", 0.5 + i / 100)
    t.join()
    assert not errors and all(7 <= n <= 27 for n in seen)
    assert review_page(p).total == 27


def test_big_project_page_is_fast(tmp_path: Path, monkeypatch):
    """20 000 masks: a page of the queue is one sorted scan in SQLite, never a Python list of every mask."""
    p = Project.create(tmp_path / "big.cardb", tmp_path)
    cat = p.get_or_create_category("thing").id
    rng = np.random.default_rng(0)
    with p.batch():
        for i in range(200):
            p.add_image_entry(f"im{i:04d}.png", W, H, status="auto")
    imgs = [im.id for im in p.list_images()]
    m = _mask(0)
    with p.batch():
        first = p.add_annotation(imgs[0], cat, m, score=0.5, source="car", provenance=Provenance(status="kept"))
    # Copy the encoded row many times in SQL: building 20 000 masks through the API would dominate the test.
    with p.batch() as conn:
        for k in range(1, 20000):
            conn.execute(
                "INSERT INTO annotations (image_id, category_id, height, width, rle, crop_rle, bbox_x, bbox_y, "
                "bbox_w, bbox_h, area, parts, holes, score, source, edited, provenance, created_at, updated_at) "
                "SELECT ?, category_id, height, width, rle, crop_rle, bbox_x, bbox_y, bbox_w, bbox_h, area, parts, "
                "holes, ?, source, 0, ?, created_at, updated_at FROM annotations WHERE id = ?",
                (imgs[k % len(imgs)], float(rng.random()), '{"status": "kept", "sam_accepted": true}', first.id))
    built = []
    real = review._item
    monkeypatch.setattr(review, "_item", lambda row: built.append(row) or real(row))
    page = review_page(p, limit=200)
    assert page.total == 20000 and len(page.items) == 200
    scores = [it.score for it in page.items]
    assert scores == sorted(scores)
    assert len(built) == 200          # the sorting and counting stay in SQLite: one Python item per row shown
    p.close()
