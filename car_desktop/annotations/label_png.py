"""Semantic label maps: one palette PNG per image plus a labels file, the second export format.

Pixel value 0 is background; value k is the category with id k (so values are stable across
exports, like COCO category ids); the PNG palette holds each category's colour. Where masks overlap,
the smaller one is drawn last and wins, so small objects are not buried under large regions.
``labels.txt`` ("value name" per line; names are single lines, control characters turned into
spaces) and ``labels.json`` (value, name, synonyms, colour) describe them.

File names are derived safely (``label_names``): the image's relative path with a .png suffix
(``photos/a.jpg`` -> ``photos/a.png``), normalised and always inside the output folder. When two
images would get the same name (``a.jpg`` and ``a.png``, or names differing only in case), each keeps
its extension (``a.jpg.png``, ``a.png.png``); a clash left after that gets the image id. The names
depend on the project's images only, so they are the same in every export. A stored path that is not
a plain relative one is skipped with a note. Before anything is written, the folder and every target
pass the project's ``OutputGuard``: never the image folder itself, never inside it without ``force``,
never an input image or the project. Each file is written with ``fileio.atomic_open``.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import imagefiles
from ..fileio import atomic_open, atomic_write, to_strict_json
from ..safepaths import OutputRefusedError, UnsafePathError, safe_relative_path
from .errors import ExportError
from .models import ExportReport, ImageRecord
from .store import Project, single_line

log = logging.getLogger(__name__)

MAX_CATEGORY_ID = 255  # one byte per pixel


def label_names(images: Sequence[ImageRecord]) -> tuple[dict[int, str], list[str]]:
    """{image id: label file name relative to the output folder} for ``images``, and a note per
    image left out because its stored path is not a plain relative path."""
    notes: list[str] = []
    safe: dict[int, str] = {}
    for im in images:
        try:
            safe[im.id] = safe_relative_path(im.rel_path)
        except UnsafePathError as exc:
            notes.append(f"image {im.id}: no label map written: {exc}")
    plain = {i: posixpath.splitext(rel)[0] + ".png" for i, rel in safe.items()}
    names = dict(plain)
    for _ in range(8):  # a clash first keeps the extensions, then adds the image id
        groups: dict[str, list[int]] = defaultdict(list)
        for i, name in names.items():
            groups[name.casefold()].append(i)  # casefold: case-insensitive file systems
        clashes = [i for ids in groups.values() if len(ids) > 1 for i in ids]
        if not clashes:
            return names, notes
        for i in clashes:
            names[i] = safe[i] + ".png" if names[i] == plain[i] else f"{safe[i]}-{i}.png"
    return {i: f"{safe[i]}-{i}.png" for i in names}, notes


def export_label_pngs(project: Project, out_dir: str | os.PathLike, *, image_ids: Sequence[int] | None = None,
                      progress: Callable[[int, int], Any] | None = None, include_failed: bool = False,
                      force: bool = False) -> ExportReport:
    """Write a palette PNG per image (images without annotations get an all-background map; those
    whose auto-labelling failed are left out unless ``include_failed``). Raises OutputRefusedError
    before writing anything when the folder or a target is refused (see the module docstring)."""
    guard = project.output_guard(force)
    out = guard.check_dir(out_dir, "label PNG folder")
    report = ExportReport(path=str(out))
    categories = project.list_categories()
    too_big = [c for c in categories if c.id > MAX_CATEGORY_ID]
    if too_big:
        raise ExportError(f"label PNGs hold category ids up to {MAX_CATEGORY_ID}; '{too_big[0].name}' has id "
                          f"{too_big[0].id}. Use COCO export instead")
    palette = np.zeros((256, 3), np.uint8)
    for c in categories:
        palette[c.id] = c.color
    all_images = project.list_images()
    names, notes = label_names(all_images)
    report.notes.extend(notes)
    images = [im for im in all_images if im.id in names]
    if image_ids is not None:
        wanted = set(image_ids)
        images = [im for im in images if im.id in wanted]
    if not include_failed:
        failed = project.failed_image_ids()
        report.failed_left_out = sum(im.id in failed for im in images)
        images = [im for im in images if im.id not in failed]
    limit = imagefiles.max_pixels()
    too_large = [im for im in images if im.width * im.height > limit]
    for im in too_large:
        report.notes.append(f"{im.rel_path}: {im.width}x{im.height} is over the pixel limit; no label map written")
    images = [im for im in images if im.width * im.height <= limit]

    # Every target is checked before the first file is written: a refusal leaves the folder as it was.
    out_resolved = out.resolve()
    targets: dict[int, Path] = {}
    for im in images:
        target = out / names[im.id]
        if not target.resolve().is_relative_to(out_resolved):
            raise OutputRefusedError(f"refusing to write {target}: a folder on its way leads outside {out} "
                                     "(a symbolic link); nothing was written")
        targets[im.id] = guard.check_file(target, "label PNG")
    for extra in ("labels.txt", "labels.json"):
        guard.check_file(out / extra, extra)

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
            targets[im.id].parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(targets[im.id], "wb") as fh:
                img.save(fh, format="PNG", optimize=False)
            report.images += 1
            if progress is not None:
                progress(n, len(images))
        lines = ["0 background"] + [f"{c.id} {single_line(c.name)}" for c in categories]
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "labels.txt", lambda fh: fh.write("\n".join(lines) + "\n"), "w")
        meta = [{"value": 0, "name": "background", "color": [0, 0, 0]}] + [
            {"value": c.id, "name": c.name, "synonyms": list(c.synonyms), "color": list(c.color)}
            for c in categories]
        atomic_write(out / "labels.json",
                     lambda fh: json.dump(to_strict_json(meta), fh, ensure_ascii=False, indent=1, allow_nan=False), "w")
    except OSError as exc:
        raise ExportError(f"cannot write label maps to {out}: {exc.strerror or exc}") from None
    report.categories = len(categories)
    if report.empty_skipped:
        report.notes.append(f"{report.empty_skipped} empty mask(s) skipped")
    if report.failed_left_out:
        report.notes.append(f"{report.failed_left_out} image(s) whose auto-labelling failed were left out; see "
                            "'car-desktop failures', or export with --include-failed")
    return report
