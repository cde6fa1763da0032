"""Semantic label maps: one palette PNG per image plus a labels file, the second export format.

Pixel value 0 is background; value k is the category with id k (so values are stable across
exports, like COCO category ids); the PNG palette holds each category's colour. Where masks overlap,
the smaller one is drawn last and wins, so small objects are not buried under large regions. Files
mirror the images' relative paths with a .png suffix; each is written to a temporary name and renamed.
``labels.txt`` ("value name" per line) and ``labels.json`` (value, name, synonyms, colour) describe them.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import ExportError
from .models import ExportReport
from .store import Project

log = logging.getLogger(__name__)

MAX_CATEGORY_ID = 255  # one byte per pixel


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def export_label_pngs(project: Project, out_dir: str | os.PathLike, *, image_ids: Sequence[int] | None = None,
                      progress: Callable[[int, int], Any] | None = None) -> ExportReport:
    """Write a palette PNG per image (images without annotations get an all-background map)."""
    out = Path(out_dir)
    report = ExportReport(path=str(out))
    categories = project.list_categories()
    too_big = [c for c in categories if c.id > MAX_CATEGORY_ID]
    if too_big:
        raise ExportError(f"label PNGs hold category ids up to {MAX_CATEGORY_ID}; '{too_big[0].name}' has id "
                          f"{too_big[0].id}. Use COCO export instead")
    palette = np.zeros((256, 3), np.uint8)
    for c in categories:
        palette[c.id] = c.color
    images = project.list_images()
    if image_ids is not None:
        wanted = set(image_ids)
        images = [im for im in images if im.id in wanted]
    try:
        for n, im in enumerate(images, 1):
            label = np.zeros((im.height, im.width), np.uint8)
            anns = sorted(project.list_annotations(im.id), key=lambda a: -a.area)
            for a in anns:
                if a.area == 0:
                    report.empty_skipped += 1
                    continue
                crop, (x, y, w, h) = project.get_mask_crop(a.id)
                label[y:y + h, x:x + w][crop] = a.category_id
                report.annotations += 1
            img = Image.fromarray(label, mode="P")
            img.putpalette(palette.ravel().tolist())
            target = out / (str(Path(im.rel_path).with_suffix("")) + ".png")
            _atomic_write(target, lambda fh: img.save(fh, format="PNG", optimize=False))
            report.images += 1
            if progress is not None:
                progress(n, len(images))
        lines = ["0 background"] + [f"{c.id} {c.name}" for c in categories]
        _atomic_write(out / "labels.txt", lambda fh: fh.write("\n".join(lines) + "\n"), "w")
        meta = [{"value": 0, "name": "background", "color": [0, 0, 0]}] + [
            {"value": c.id, "name": c.name, "synonyms": list(c.synonyms), "color": list(c.color)}
            for c in categories]
        _atomic_write(out / "labels.json", lambda fh: json.dump(meta, fh, ensure_ascii=False, indent=1), "w")
    except OSError as exc:
        raise ExportError(f"cannot write label maps to {out}: {exc.strerror or exc}") from None
    report.categories = len(categories)
    if report.empty_skipped:
        report.notes.append(f"{report.empty_skipped} empty mask(s) skipped")
    return report
