"""Benchmark loaders on tiny generated folders in the datasets' published layouts (VOC palette PNGs with
255 borders and ImageSets lists, Pascal Context as mmsegmentation converts it, COCO instances), and
``car-desktop eval-dataset`` end to end on the mini VOC with the tiny test models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from car_desktop.cli import main
from car_desktop.cli.segment import palette
from car_desktop.evaluation.datasets import (
    COCO_CLASSES,
    DATASETS,
    dataset_images,
    read_label_png,
)
from car_desktop.evaluation.errors import EvaluationError

H, W = 40, 56
CAT, PERSON = 8, 15


def voc_palette() -> list[int]:
    return palette(255).ravel().tolist()


def label_map(k: int) -> np.ndarray:
    """Background, a cat box and (on odd images) a person box, each ringed by a 2-pixel 255 border."""
    lab = np.zeros((H, W), np.uint8)
    lab[4:24, 4:30] = 255
    lab[6:22, 6:28] = CAT
    if k % 2:
        lab[20:38, 34:54] = 255
        lab[22:36, 36:52] = PERSON
    return lab


def make_voc(root: Path, ids=("2007_000001", "2007_000002", "2007_000003"), label_dir="SegmentationClass",
             sets="Segmentation") -> Path:
    for d in ("JPEGImages", label_dir, f"ImageSets/{sets}"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k, image_id in enumerate(ids):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
        png = Image.fromarray(label_map(k), mode="P")
        png.putpalette(voc_palette())
        png.save(root / label_dir / f"{image_id}.png")
    (root / f"ImageSets/{sets}/val.txt").write_text("\n".join(ids) + "\n")
    (root / f"ImageSets/{sets}/train.txt").write_text(ids[0] + "\n")
    return root


def test_voc_loader_reads_the_split_and_turns_borders_into_unscored_pixels(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    spec, images, inputs = dataset_images("voc2012", root, "val")
    assert [im.name for im in images] == ["2007_000001", "2007_000002", "2007_000003"]
    assert spec.class_names[CAT] == "cat" and spec.class_names[PERSON] == "person"
    assert spec.concepts[PERSON - 1] == "person with clothes | people | human"
    gt = images[1].load_gt()
    assert gt.dtype == np.int32 and gt.shape == (H, W)
    assert gt[10, 10] == CAT and gt[30, 40] == PERSON and gt[0, 0] == 0
    assert gt[4, 4] == -1 and gt[21, 35] == -1                    # the 255 rings
    assert set(np.unique(gt)) == {-1, 0, CAT, PERSON}
    assert len(dataset_images("voc2012", root, "train")[1]) == 1
    assert root / "JPEGImages" in inputs


def test_voc_loader_errors_name_what_is_missing(tmp_path):
    with pytest.raises(EvaluationError, match="SegmentationClass"):
        (tmp_path / "VOC2012" / "JPEGImages").mkdir(parents=True)
        dataset_images("voc2012", tmp_path / "VOC2012", "val")
    root = make_voc(tmp_path / "ok")
    with pytest.raises(EvaluationError, match="no split"):
        dataset_images("voc2012", root, "test")
    with pytest.raises(EvaluationError, match="unknown dataset"):
        dataset_images("ade", root, "val")


def test_rgb_png_is_not_a_label_map(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    with pytest.raises(EvaluationError, match="not a label map"):
        read_label_png(path, 20)


def test_context_loader_uses_the_mmseg_layout(tmp_path):
    root = make_voc(tmp_path / "VOC2010", ids=("2008_000002",), label_dir="SegmentationClassContext",
                    sets="SegmentationContext")
    spec, images, _ = dataset_images("context59", root, "val")
    assert spec.drop_background and len(spec.classes) == 59
    gt = images[0].load_gt()
    assert gt[10, 10] == CAT and gt[4, 4] == -1   # 255 is above 59 classes: not scored


def test_coco_object_loader_paints_instances_in_class_order(tmp_path):
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "val2017" / "000000000001.jpg")
    big = np.zeros((H, W), np.uint8)
    big[:, :30] = 1
    small = np.zeros((H, W), np.uint8)
    small[5:15, 5:15] = 1

    def seg(m):
        r = mask_utils.encode(np.asfortranarray(m))
        return {"size": r["size"], "counts": r["counts"].decode()}

    cats = [{"id": i + 1 + (i >= 11), "name": n} for i, n in enumerate(COCO_CLASSES)]  # ids have gaps, as COCO's
    data = {"images": [{"id": 1, "file_name": "000000000001.jpg", "width": W, "height": H}], "categories": cats,
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": seg(big), "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 18, "segmentation": seg(small), "iscrowd": 0}]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    _spec, images, _ = dataset_images("coco-object", root, "val")
    gt = images[0].load_gt()
    dog = COCO_CLASSES.index("dog") + 1                  # category id 18 is the 17th class ("dog")
    assert gt[10, 10] == dog and gt[30, 20] == 1 and gt[0, 50] == 0


@pytest.mark.slow
def test_eval_dataset_runs_on_mini_voc_with_test_models(tmp_path, capsys):
    root = make_voc(tmp_path / "VOCdevkit" / "VOC2012")
    out = tmp_path / "out"
    assert main(["--test-models", "eval-dataset", "voc2012", "--root", str(root), "--split", "val",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "67.6" in text
    preds = sorted((out / "predictions").glob("*.png"))
    assert [p.stem for p in preds] == ["2007_000001", "2007_000002", "2007_000003"]
    for p in preds:
        arr = np.asarray(Image.open(p))
        assert arr.shape == (H, W) and arr.max() <= 20
    data = json.loads((out / "metrics.json").read_text())
    assert data["images"] == 3 and len(data["classes"]) == 21 and data["background_included"]
    # The confusion matrix counts every pixel but the 255 rings.
    rings = sum(int((label_map(k) == 255).sum()) for k in range(3))
    assert sum(map(sum, data["confusion"]["matrix"])) == 3 * H * W - rings
    assert (out / "report" / "index.html").is_file()
    assert DATASETS["voc2012"].paper_miou["without SAM"] == 67.6


def test_eval_dataset_refuses_an_output_inside_the_dataset(tmp_path, capsys):
    root = make_voc(tmp_path / "VOC2012")
    assert main(["--test-models", "eval-dataset", "voc2012", "--root", str(root),
                 "--out", str(root / "JPEGImages")]) == 2
    assert "inside the dataset" in capsys.readouterr().err
