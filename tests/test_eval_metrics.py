"""Evaluation metrics against hand-computed answers: confusion matrix and IoU of a 3-class toy, presence
precision / recall on a scripted case, COCOeval AP on cases with a known AP, PRED = GT, and the same
numbers from COCO files and from .cardb projects holding the same labels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from car_desktop.annotations import Project, import_coco
from car_desktop.evaluation import metrics
from car_desktop.evaluation.errors import EvaluationError
from car_desktop.evaluation.evaluate import (
    SegmentationEvaluator,
    evaluate_label_sets,
    format_table,
)
from car_desktop.evaluation.labels import CategorySpec, load_labels, match_categories
from eval_fixtures import GT_IMAGES, PRED_IMAGES, H, W, coco, rect, write

# ------------------------------------------------------------------------------------- toy label maps
GT = np.array([[0, 0, 1, 1],
               [0, 2, 2, 1],
               [255, 255, 255, 255]])
PRED = np.array([[0, 1, 1, 1],
                 [2, 2, 2, 0],
                 [1, 1, 1, 1]])


def test_confusion_matrix_of_three_class_toy_skips_ignore_index():
    conf = metrics.confusion_matrix(GT, PRED, 3, ignore_index=255)
    np.testing.assert_array_equal(conf, [[1, 1, 1],
                                         [1, 2, 0],
                                         [0, 0, 2]])


def test_iou_miou_and_accuracy_of_toy():
    conf = metrics.confusion_matrix(GT, PRED, 3, ignore_index=255)
    iou = metrics.iou_per_class(conf)
    np.testing.assert_allclose(iou, [1 / 4, 2 / 4, 2 / 3])
    assert metrics.mean_iou(iou) == pytest.approx((0.25 + 0.5 + 2 / 3) / 3)
    assert metrics.pixel_accuracy(conf) == pytest.approx(5 / 8)
    # The released code's "-20" variant drops background's row and column: classes 1 and 2 are perfect.
    assert metrics.mean_iou(metrics.iou_per_class(metrics.drop_background(conf))) == pytest.approx(1.0)


def test_class_absent_from_both_sides_has_no_iou():
    conf = metrics.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int), 3)
    iou = metrics.iou_per_class(conf)
    assert iou[0] == 1.0 and math.isnan(iou[1]) and math.isnan(iou[2])
    assert metrics.mean_iou(iou) == 1.0


def test_prediction_outside_class_range_is_refused():
    with pytest.raises(ValueError):
        metrics.confusion_matrix(np.zeros((2, 2), int), np.full((2, 2), 5), 3)


def test_evaluator_accumulates_confusion_over_images_not_mean_of_images():
    ev = SegmentationEvaluator(["background", "a", "b"])
    ev.add("one", GT.copy(), PRED.copy())
    ev.add("two", np.where(GT == 255, -1, GT), PRED.copy())  # same image, ignore given as -1
    res = ev.result()
    np.testing.assert_array_equal(res.confusion, 2 * np.array([[1, 1, 1], [1, 2, 0], [0, 0, 2]]))
    assert res.miou == pytest.approx((0.25 + 0.5 + 2 / 3) / 3)


# ------------------------------------------------------------------------------------- presence
def test_presence_precision_recall_on_scripted_case():
    # Concepts a (1) and b (2) over four images; each map is 1x2: pixel 0 says a, pixel 1 says b.
    #            pred a, gt a, pred b, gt b
    script = [(True, True, True, False),     # a tp, b fp
              (False, True, False, False),   # a fn, b tn
              (True, True, False, True),     # a tp, b fn
              (True, False, True, True)]     # a fp, b tp
    ev = SegmentationEvaluator(["background", "a", "b"])
    for k, (pa, ga, pb, gb) in enumerate(script):
        gt = np.array([[1 if ga else 0, 2 if gb else 0]])
        pred = np.array([[1 if pa else 0, 2 if pb else 0]])
        ev.add(f"im{k}", gt, pred)
    res = ev.result()
    a, b, total = res.presence["a"], res.presence["b"], res.presence_total
    assert (a.tp, a.fp, a.fn, a.tn) == (2, 1, 1, 0)
    assert a.precision == pytest.approx(2 / 3) and a.recall == pytest.approx(2 / 3) and a.f1 == pytest.approx(2 / 3)
    assert (b.tp, b.fp, b.fn, b.tn) == (1, 1, 1, 1)
    assert b.precision == pytest.approx(0.5) and b.recall == pytest.approx(0.5)
    assert (total.tp, total.fp, total.fn, total.tn) == (3, 2, 2, 1)
    assert total.precision == pytest.approx(0.6) and total.f1 == pytest.approx(0.6)


def test_undefined_precision_is_nan_not_zero():
    p = metrics.PresenceCounts(tn=3)
    assert math.isnan(p.precision) and math.isnan(p.recall)
    assert p.to_dict()["precision"] is None


def test_worst_images_are_the_lowest_scoring_ones():
    ev = SegmentationEvaluator(["background", "a"], worst=2)
    gt = np.array([[1, 1, 1, 1]])
    for k, hits in enumerate([4, 1, 3, 2]):   # IoU 1, 0.25, 0.75, 0.5
        pred = np.array([[1] * hits + [0] * (4 - hits)])
        ev.add(f"im{k}", gt, pred)
    res = ev.result()
    assert [w.name for w in res.worst] == ["im1", "im3"]
    assert [w.miou for w in res.worst] == [pytest.approx(0.25), pytest.approx(0.5)]
    assert [s.miou for s in res.images] == pytest.approx([1.0, 0.25, 0.75, 0.5])



def test_pred_equal_to_gt_gives_miou_one_and_ap_one(tmp_path):
    gt = write(tmp_path / "gt.json", coco(GT_IMAGES))
    pred = write(tmp_path / "pred.json", coco({k: [(c, m, 1.0) for c, m, _ in v] for k, v in GT_IMAGES.items()}))
    res = evaluate_label_sets(load_labels(pred), load_labels(gt))
    assert res.miou == pytest.approx(1.0)
    np.testing.assert_allclose(res.iou, [1.0, 1.0, 1.0])
    assert res.ap is not None and res.ap.ap == pytest.approx(1.0) and res.ap.ap50 == pytest.approx(1.0)
    assert res.presence_total.f1 == pytest.approx(1.0) and res.presence_total.tn == 1  # cat absent from b
    assert "mIoU 1.000" in format_table(res)


def test_coco_eval_ap_with_one_false_positive_ranked_first_is_half(tmp_path):
    gt = write(tmp_path / "gt.json", coco({"a.png": [(1, rect(2, 10, 2, 12), None)]}))
    pred = write(tmp_path / "pred.json", coco({"a.png": [(1, rect(12, 20, 20, 30), 0.95),   # wrong place
                                                          (1, rect(2, 10, 2, 12), 0.90)]}))  # exact
    res = evaluate_label_sets(load_labels(pred), load_labels(gt))
    # Ranked FP then TP: precision 0.5 at recall 1 for every IoU threshold -> AP 0.5 exactly.
    assert res.ap.ap == pytest.approx(0.5)
    assert res.ap.per_class["cat"] == pytest.approx(0.5)


def test_coco_eval_ap_with_half_the_objects_found(tmp_path):
    gt = write(tmp_path / "gt.json", coco({"a.png": [(1, rect(2, 10, 2, 12), None)],
                                           "b.png": [(1, rect(5, 15, 5, 15), None)]}))
    pred = write(tmp_path / "pred.json", coco({"a.png": [(1, rect(2, 10, 2, 12), 0.8)], "b.png": []}))
    res = evaluate_label_sets(load_labels(pred), load_labels(gt))
    # Precision 1 up to recall 0.5: 51 of COCO's 101 recall points.
    assert res.ap.ap == pytest.approx(51 / 101)


def test_no_scores_no_ap_and_a_note(tmp_path):
    gt = write(tmp_path / "gt.json", coco(GT_IMAGES))
    pred = write(tmp_path / "pred.json", coco(GT_IMAGES))
    res = evaluate_label_sets(load_labels(pred), load_labels(gt))
    assert res.ap is None and any("no scores" in n for n in res.notes)


def test_synonyms_match_and_void_is_ignored(tmp_path):
    # GT calls the class "puppy" and marks a void region; the prediction calls it "dog | puppy".
    gt = write(tmp_path / "gt.json", coco({"a.png": [(1, rect(0, 10, 0, 10), None), (2, rect(0, 20, 20, 30), None)]},
                                          categories=(("puppy", []), ("void", []))))
    pred = write(tmp_path / "pred.json", coco({"a.png": [(2, rect(0, 10, 0, 10), 0.9),
                                                          (1, rect(0, 20, 20, 30), 0.8)]}))  # "cat" on void
    res = evaluate_label_sets(load_labels(pred), load_labels(gt))
    assert res.class_names == ["background", "puppy", "cat"]
    assert res.iou[1] == pytest.approx(1.0) and res.iou[0] == pytest.approx(1.0)
    assert math.isnan(res.iou[2])                 # not in GT: no IoU of its own
    assert res.pixels_gt.sum() == H * W - 20 * 10  # the void pixels are not counted


def test_category_matching_by_shared_synonym():
    pred = [CategorySpec.parse("car | automobile"), CategorySpec.parse("tree")]
    gt = [CategorySpec.parse("Automobile"), CategorySpec.parse("person")]
    mapping, _ = match_categories(pred, gt)
    assert mapping == {0: 0}


def test_images_matched_by_bare_file_name(tmp_path):
    gt = write(tmp_path / "gt.json", coco({"val/a.png": GT_IMAGES["a.png"]}))
    pred = write(tmp_path / "pred.json", coco({"a.png": [(c, m, 1.0) for c, m, _ in GT_IMAGES["a.png"]]}))
    res = evaluate_label_sets(load_labels(pred), load_labels(gt))
    assert res.n_images == 1 and res.miou == pytest.approx(1.0)


def test_no_common_image_is_a_clear_error(tmp_path):
    gt = write(tmp_path / "gt.json", coco({"a.png": []}))
    pred = write(tmp_path / "pred.json", coco({"z.png": []}))
    with pytest.raises(EvaluationError, match="file name"):
        evaluate_label_sets(load_labels(pred), load_labels(gt))


def test_absurd_image_size_in_json_is_skipped_before_allocating(tmp_path):
    data = coco({"a.png": GT_IMAGES["a.png"]})
    data["images"].append({"id": 99, "file_name": "huge.png", "width": 200_000, "height": 200_000})
    labels = load_labels(write(tmp_path / "gt.json", data))
    assert "huge.png" not in labels.images and any("huge.png" in n for n in labels.notes)


def test_not_a_coco_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(EvaluationError, match="not a COCO JSON"):
        load_labels(bad)


# ------------------------------------------------------------------------------------- .cardb == COCO
def _project(tmp_path: Path, name: str, coco_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    path = tmp_path / f"{name}.cardb"
    with Project.create(path, folder) as p:
        report = import_coco(p, coco_path, folder)
        assert not report.problems
    return path


def test_coco_and_cardb_inputs_give_the_same_numbers(tmp_path):
    gt_json = write(tmp_path / "gt.json", coco(GT_IMAGES))
    pred_json = write(tmp_path / "pred.json", coco(PRED_IMAGES))
    gt_db, pred_db = _project(tmp_path, "gt", gt_json), _project(tmp_path, "pred", pred_json)
    from_json = evaluate_label_sets(load_labels(pred_json), load_labels(gt_json)).to_dict()
    from_db = evaluate_label_sets(load_labels(pred_db), load_labels(gt_db)).to_dict()
    mixed = evaluate_label_sets(load_labels(pred_db), load_labels(gt_json)).to_dict()
    assert from_json["miou"] is not None and 0 < from_json["miou"] < 1
    assert from_json["mask_ap"]["ap"] is not None
    for other in (from_db, mixed):
        for key in ("miou", "pixel_accuracy", "classes", "confusion", "presence", "mask_ap", "per_image"):
            assert other[key] == from_json[key], key


def test_evaluation_package_imports_neither_qt_nor_torch():
    import subprocess
    import sys

    modules = ["metrics", "labels", "coco_ap", "evaluate", "report", "datasets", "tuning", "quality"]
    code = ("import sys\n" + "".join(f"import car_desktop.evaluation.{m}\n" for m in modules)
            + "bad = [m for m in ('torch', 'PySide6', 'open_clip') if m in sys.modules]\nprint(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
