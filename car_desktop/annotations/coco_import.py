"""Import a COCO JSON file into a project so a labelled dataset can be continued.

Accepts polygons, compressed and uncompressed RLE and iscrowd. Categories are matched by name
(created when new; a 'background' category is skipped). Images are matched by their path relative
to the project's image root; a missing image file is still imported from the JSON size (noted).
Every broken or unknown entry is reported in ``ImportReport.problems`` and the rest is imported;
only an unreadable file raises CocoImportError. The whole import is one transaction.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from . import mask_codec
from .errors import CocoImportError, ProjectError
from .models import ImportProblem, ImportReport
from .provenance import ORIGIN_COCO, Provenance
from .store import Project, file_hash, read_image_size

log = logging.getLogger(__name__)

BACKGROUND_NAMES = frozenset({"background", "__background__", "_background_", "bg"})

ProgressFn = Callable[[int, int], Any]


def _load(coco_json: str | os.PathLike | dict) -> dict:
    if isinstance(coco_json, dict):
        return coco_json
    path = Path(coco_json)
    # json.load of a large file makes millions of objects; with the cyclic GC running meanwhile,
    # every collection rescans them all and the load grows faster than the file.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh, object_hook=_compact_polygons)
    except FileNotFoundError:
        raise CocoImportError(f"COCO file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CocoImportError(f"{path} is not a readable COCO JSON file: {exc}") from None
    finally:
        if gc_was_enabled:
            gc.enable()
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CocoImportError(f"{path} is not COCO JSON: no 'images' list at the top level")
    return data


def _compact_polygons(obj: dict) -> dict:
    """json object_hook: an annotation's polygon rings become float64 arrays as soon as it is parsed,
    so a large file does not hold every vertex as a Python int (36 bytes each, against 8). A ring
    that is not a flat list of numbers is left as it is, for _segmentation_rle to report."""
    seg = obj.get("segmentation")
    if isinstance(seg, list):
        for i, ring in enumerate(seg):
            if isinstance(ring, list):
                try:
                    arr = np.asarray(ring, dtype=np.float64)
                except (TypeError, ValueError, OverflowError):
                    continue
                if arr.ndim == 1:
                    seg[i] = arr
    return obj


def _segmentation_rle(seg: Any, height: int, width: int) -> dict:
    """A compressed RLE for any COCO segmentation; ValueError with a reason when it is broken."""
    if isinstance(seg, list):
        if not seg:
            raise ValueError("empty polygon list")
        rings = []
        for ring in seg:
            try:
                arr = np.asarray(ring, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError("a polygon ring is not a list of numbers") from None
            if arr.ndim != 1 or not np.isfinite(arr).all():
                raise ValueError("a polygon ring is not a flat list of finite numbers")
            if len(arr) % 2 or len(arr) < 6:
                raise ValueError(f"a polygon ring has {len(arr)} numbers; at least 3 points (6 numbers) needed")
            rings.append(arr)
        return mask_utils.merge(mask_utils.frPyObjects(rings, height, width))
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        size = [int(v) for v in seg["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} does not match the image ({height}x{width})")
        counts = seg["counts"]
        if isinstance(counts, list):  # uncompressed RLE (iscrowd annotations usually)
            if sum(int(c) for c in counts) != height * width:
                raise ValueError("uncompressed RLE counts do not add up to the image size")
            return mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
        if isinstance(counts, str):
            return {"size": size, "counts": counts.encode("ascii")}
        raise ValueError("RLE counts are neither a string nor a list")
    raise ValueError("segmentation is neither polygons nor RLE")


def import_coco(project: Project, coco_json: str | os.PathLike | dict, images_dir: str | os.PathLike, *,
                progress: ProgressFn | None = None) -> ImportReport:
    """Import ``coco_json`` whose ``file_name`` entries are relative to ``images_dir`` (which must be
    inside the project's image root). Returns the report; see the module docstring."""
    data = _load(coco_json)
    report = ImportReport()
    root = project.image_root.resolve()
    images_dir = Path(images_dir).resolve()
    try:
        prefix = images_dir.relative_to(root)
    except ValueError:
        raise CocoImportError(f"the images folder {images_dir} is not inside the project's image folder "
                              f"{root}; re-link the project or import into a project made for {images_dir}") from None

    def problem(kind: str, entry_id: Any, message: str) -> None:
        report.problems.append(ImportProblem(kind, entry_id, message))  # type: ignore[arg-type]
        log.warning("COCO import: %s %s: %s", kind, entry_id, message)

    # --- categories: by name, so ids of another tool never clash with ours
    cat_map: dict[Any, int] = {}
    background: set[Any] = set()
    known_before = {c.name.casefold() for c in project.list_categories()}
    with project.batch():
        for cat in data.get("categories") or []:
            cid = cat.get("id") if isinstance(cat, dict) else None
            name = cat.get("name") if isinstance(cat, dict) else None
            if cid is None or not isinstance(name, str) or not name.strip():
                problem("category", cid, "category without an id or a name")
                continue
            if name.strip().casefold() in BACKGROUND_NAMES:
                background.add(cid)
                continue
            synonyms = [s for s in cat.get("synonyms") or [] if isinstance(s, str)]
            created = project.get_or_create_category(name, synonyms)
            if created.name.casefold() not in known_before:
                known_before.add(created.name.casefold())
                report.categories_added += 1
            cat_map[cid] = created.id

        # --- images
        img_map: dict[Any, tuple[int, int, int]] = {}  # coco id -> (project id, height, width)
        for im in data["images"]:
            iid = im.get("id") if isinstance(im, dict) else None
            name = im.get("file_name") if isinstance(im, dict) else None
            if iid is None or not isinstance(name, str) or not name:
                problem("image", iid, "image without an id or a file_name")
                continue
            if iid in img_map:
                problem("image", iid, "duplicate image id")
                continue
            rel = (prefix / name).as_posix() if str(prefix) != "." else Path(name).as_posix()
            width, height = im.get("width"), im.get("height")
            full = root / rel
            digest = None
            if full.is_file():
                try:
                    fw, fh = read_image_size(full)
                    digest = file_hash(full)
                except (ProjectError, OSError) as exc:
                    problem("image", iid, f"{name}: {exc}")
                    continue
                if (width, height) not in ((fw, fh), (None, None)):
                    problem("image", iid, f"{name}: the JSON says {width}x{height} but the file is {fw}x{fh}")
                    continue
                width, height = fw, fh
            elif not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
                problem("image", iid, f"{name}: file not found and no valid width/height in the JSON")
                continue
            else:
                report.notes.append(f"{name}: image file not found under {images_dir}; imported from the JSON size")
            existing = project.find_image(rel)
            if existing is not None:
                report.images_existing += 1
                record = existing
            else:
                record = project.add_image_entry(rel, width, height, digest)
                report.images_added += 1
            img_map[iid] = (record.id, record.height, record.width)

        # --- annotations
        anns = data.get("annotations") or []
        for n, ann in enumerate(anns, 1):
            aid = ann.get("id") if isinstance(ann, dict) else None
            if not isinstance(ann, dict):
                problem("annotation", aid, "annotation is not an object")
                continue
            if ann.get("image_id") not in img_map:
                problem("annotation", aid, f"unknown image_id {ann.get('image_id')!r}")
                continue
            if ann.get("category_id") in background:
                continue
            if ann.get("category_id") not in cat_map:
                problem("annotation", aid, f"unknown category_id {ann.get('category_id')!r}")
                continue
            image_id, height, width = img_map[ann["image_id"]]
            try:
                rle = _segmentation_rle(ann.get("segmentation"), height, width)
                enc = mask_codec.encode_rle(rle)
            except (ValueError, TypeError, OverflowError) as exc:
                problem("annotation", aid, str(exc))
                continue
            if enc.area == 0:
                problem("annotation", aid, "empty mask")
                continue
            score = ann.get("score")
            provenance = Provenance(origin=ORIGIN_COCO, coco_id=aid, iscrowd=bool(ann.get("iscrowd")))
            project.add_encoded_annotation(image_id, cat_map[ann["category_id"]], enc,
                                    float(score) if isinstance(score, (int, float)) else None,
                                    "import", provenance, edited=True)
            report.annotations_added += 1
            if progress is not None and n % 1000 == 0:
                progress(n, len(anns))
    if progress is not None:
        progress(len(data.get("annotations") or []), len(data.get("annotations") or []))
    return report
