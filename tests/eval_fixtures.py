"""Small COCO label sets shared by the evaluation tests (masks on a 20x30 image, written as JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

H, W = 20, 30


def rect(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode("ascii")}


def coco(images: dict[str, list[tuple[int, np.ndarray, float | None]]],
         categories=(("cat", []), ("dog | puppy", []))) -> dict:
    data = {"images": [], "annotations": [],
            "categories": [{"id": i + 1, "name": n, "synonyms": s} for i, (n, s) in enumerate(categories)]}
    for iid, (name, anns) in enumerate(images.items(), 1):
        data["images"].append({"id": iid, "file_name": name, "width": W, "height": H})
        for cid, mask, score in anns:
            ann = {"id": len(data["annotations"]) + 1, "image_id": iid, "category_id": cid,
                   "segmentation": rle(mask), "area": int(mask.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0}
            if score is not None:
                ann["score"] = score
            data["annotations"].append(ann)
    return data


def write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


GT_IMAGES = {
    "a.png": [(1, rect(2, 10, 2, 12), None), (2, rect(12, 18, 15, 28), None)],
    "b.png": [(2, rect(0, 20, 0, 10), None)],
}


PRED_IMAGES = {
    "a.png": [(1, rect(2, 12, 2, 12), 0.9), (2, rect(12, 18, 10, 28), 0.6), (1, rect(0, 3, 0, 30), 0.3)],
    "b.png": [(2, rect(0, 20, 0, 12), 0.8), (1, rect(0, 5, 20, 30), 0.4)],
}


