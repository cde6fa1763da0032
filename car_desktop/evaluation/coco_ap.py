"""Instance-level mask AP through pycocotools' COCOeval (iouType 'segm'), on paired label sets.

Both sides are rebuilt as in-memory COCO objects with the GT's category ids, so the numbers are exactly
COCOeval's: AP averaged over IoU 0.50:0.95, AP50, AP75, and AP per category (area 'all', 100 detections).
CaR gives one mask per concept and image, not one per object, so its AP is a lower bound of what an
instance model would get on the same pixels; it is reported because it is what COCO tools compare.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .labels import CategorySpec, ImageLabels
from .metrics import nan_to_none


@dataclass
class ApResult:
    ap: float
    ap50: float
    ap75: float
    per_class: dict[str, float] = field(default_factory=dict)
    gt_instances: int = 0
    predictions: int = 0

    def to_dict(self) -> dict:
        return {"ap": nan_to_none(self.ap), "ap50": nan_to_none(self.ap50), "ap75": nan_to_none(self.ap75),
                "per_class": {k: nan_to_none(v) for k, v in self.per_class.items()},
                "gt_instances": self.gt_instances, "predictions": self.predictions}


def _stat(value: float) -> float:
    return math.nan if value is None or value < 0 else float(value)


def _str_rle(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def mask_ap(pairs: Sequence[tuple[ImageLabels, ImageLabels]], gt_categories: Sequence[CategorySpec],
            pred_to_gt: dict[int, int], gt_ignore: frozenset[int] = frozenset()) -> ApResult:
    """COCOeval segm AP of the predictions in ``pairs`` [(gt image, predicted image)] against GT.

    ``pred_to_gt`` maps predicted category indices to GT ones (unmatched predictions are left out);
    GT categories in ``gt_ignore`` are not scored.
    """
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    scored = [i for i in range(len(gt_categories)) if i not in gt_ignore]
    gt_ds: dict = {"images": [], "annotations": [],
                   "categories": [{"id": i + 1, "name": gt_categories[i].name} for i in scored]}
    dts: list[dict] = []
    for n, (gt_im, pred_im) in enumerate(pairs, 1):
        gt_ds["images"].append({"id": n, "height": gt_im.height, "width": gt_im.width})
        for inst in gt_im.instances:
            if inst.category in gt_ignore:
                continue
            rle = _str_rle(inst.rle)
            area = float(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))
            bbox = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).tolist()
            gt_ds["annotations"].append({"id": len(gt_ds["annotations"]) + 1, "image_id": n,
                                         "category_id": inst.category + 1, "segmentation": rle, "area": area,
                                         "bbox": bbox, "iscrowd": int(inst.iscrowd)})
        for inst in pred_im.instances:
            gi = pred_to_gt.get(inst.category)
            if gi is None or gi in gt_ignore or inst.score is None:
                continue
            dts.append({"image_id": n, "category_id": gi + 1, "segmentation": _str_rle(inst.rle),
                        "score": float(inst.score)})
    result = ApResult(math.nan, math.nan, math.nan, gt_instances=len(gt_ds["annotations"]), predictions=len(dts))
    if not gt_ds["annotations"]:
        return result  # nothing to find: AP is undefined
    if not dts:
        result.ap = result.ap50 = result.ap75 = 0.0
        result.per_class = {gt_categories[i].name: 0.0 for i in scored}
        return result
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = gt_ds
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dts)
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    result.ap, result.ap50, result.ap75 = (_stat(v) for v in ev.stats[:3])
    precision = ev.eval["precision"]  # (IoU thresholds, recall points, categories, areas, max dets)
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        result.per_class[gt_categories[cat_id - 1].name] = float(np.mean(p)) if p.size else math.nan
    return result
