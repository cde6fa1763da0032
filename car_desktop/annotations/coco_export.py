"""Export a project (or some of its images) to COCO JSON, following the COCO rules of the product card.

Ids: image and category ids are the project's own (1-based, never reused, so stable across exports);
annotation ids are numbered 1..N in (image, annotation) order. No background category, and no
category without an annotation in this export unless ``keep_empty_categories`` (the ids of the others
do not change). ``file_name`` is relative to the image root. area and bbox come from pycocotools on the
mask, never from a polygon. Formats: 'rle' (compressed, column-major, counts as str), 'polygon' (rings
in ``polygon_convention``: along pixel edges by default, exact in pycocotools, or through pixel
centres, exact in OpenCV-based readers such as supervision; see polygons.py; holes are reported as
lost, or refused with ``on_holes='refuse'``), 'auto' (polygon when the mask has no holes and at most
``auto_max_parts`` parts, else RLE). The convention used is written in ``info.polygon_convention``.
Modes: 'instance' (one annotation per stored annotation, the instances as the annotator split them),
'components' (one per 8-connected part of every mask) and 'semantic' (one per category per image: the
union). Images whose auto-labelling failed and that have no annotation are left out (an image with
no annotation tells a model "nothing here", which nobody checked) unless ``include_failed``.

The output path passes the project's ``OutputGuard`` first (never the project, an input image, or the
image folder without ``force``). The file is written through ``fileio.atomic_open``, so a crash never
leaves half a file and an error leaves the previous file as it was; it is strict JSON (a score that
is not finite is left out, never written as Infinity or NaN). Large exports trace their polygons in
worker processes (``workers``), batch by batch and in order: the file is the same byte for byte as a
single-process export.
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .. import __version__
from ..fileio import atomic_open, finite_or_none
from . import mask_codec
from .errors import ExportError
from .models import ExportReport, ImageRecord
from .polygons import CONVENTION_TEXT, CONVENTIONS, PIXEL_EDGES, outer_rings
from .store import Project

log = logging.getLogger(__name__)

FORMATS = ("auto", "polygon", "rle")
MODES = ("instance", "components", "semantic")
AUTO_MAX_PARTS = 4

ProgressFn = Callable[[int, int], Any]

#: Exports with at least this many annotation rows trace polygons in worker processes (starting
#: them costs about a second; below this a single process is as fast).
PARALLEL_MIN_ROWS = 20_000
_BATCH = 256  # pieces per job sent to a worker

_ROW_COLS = ("id, image_id, category_id, height, width, rle, crop_rle, bbox_x, bbox_y, bbox_w, bbox_h, "
             "area, parts, holes, score, provenance")


@dataclass
class _Piece:
    """One instance to write: a crop of the mask plus what is already known about it."""

    image_id: int
    category_id: int
    height: int
    width: int
    bbox: tuple[int, int, int, int]         # x, y, w, h
    area: int
    parts: int
    holes: int
    score: float | None
    iscrowd: int = 0
    rle: bytes | None = None                # full-image counts when already known
    crop_rle: bytes | None = None
    crop: np.ndarray | None = None

    def get_crop(self) -> np.ndarray:
        if self.crop is None:
            self.crop = mask_codec.decode_crop(self.crop_rle or b"", self.bbox)
        return self.crop

    def full_rle(self) -> bytes:
        if self.rle is None:
            x, y, w, h = self.bbox
            full = np.zeros((self.height, self.width), bool)
            full[y:y + h, x:x + w] = self.get_crop()
            self.rle = mask_utils.encode(mask_codec.fortran_u8(full))["counts"]
        return self.rle


def _piece_from_crop(image_id: int, category_id: int, height: int, width: int, crop: np.ndarray,
                     ox: int, oy: int, score: float | None, iscrowd: int) -> _Piece:
    """Measure a crop with pycocotools (area, bbox) and OpenCV (parts, holes)."""
    rle = mask_utils.encode(mask_codec.fortran_u8(crop))
    area = int(mask_utils.area(rle))
    bx, by, bw, bh = (int(round(v)) for v in mask_utils.toBbox(rle))
    tight = np.ascontiguousarray(crop[by:by + bh, bx:bx + bw])
    parts, holes = mask_codec.topology(tight)
    return _Piece(image_id, category_id, height, width, (ox + bx, oy + by, bw, bh), area, parts, holes,
                  score, iscrowd, crop=tight)


def _iscrowd(provenance_text: str) -> int:
    if '"iscrowd"' not in provenance_text:  # skip JSON parsing for the common case
        return 0
    try:
        return 1 if json.loads(provenance_text).get("iscrowd") else 0
    except ValueError:
        return 0


def _row_piece(row: tuple) -> _Piece:
    (_, image_id, category_id, h, w, rle, crop_rle, bx, by, bw, bh, area, parts, holes, score, prov) = row
    return _Piece(image_id, category_id, h, w, (bx, by, bw, bh), area, parts, holes, score,
                  _iscrowd(prov), rle=rle, crop_rle=crop_rle)


def _components(piece: _Piece) -> list[_Piece]:
    if piece.parts <= 1:
        return [piece]
    crop = piece.get_crop()
    n, labels = cv2.connectedComponents(crop.view(np.uint8), connectivity=8)
    x, y, _, _ = piece.bbox
    return [_piece_from_crop(piece.image_id, piece.category_id, piece.height, piece.width, labels == i, x, y,
                             piece.score, piece.iscrowd) for i in range(1, n)]


def _union(pieces: list[_Piece]) -> _Piece:
    if len(pieces) == 1:
        return pieces[0]
    x0 = min(p.bbox[0] for p in pieces)
    y0 = min(p.bbox[1] for p in pieces)
    x1 = max(p.bbox[0] + p.bbox[2] for p in pieces)
    y1 = max(p.bbox[1] + p.bbox[3] for p in pieces)
    canvas = np.zeros((y1 - y0, x1 - x0), bool)
    for p in pieces:
        x, y, w, h = p.bbox
        canvas[y - y0:y - y0 + h, x - x0:x - x0 + w] |= p.get_crop()
    scores = [p.score for p in pieces if p.score is not None]
    first = pieces[0]
    # The union's score is the best of its parts: the concept is present with that confidence.
    return _piece_from_crop(first.image_id, first.category_id, first.height, first.width, canvas, x0, y0,
                            max(scores) if scores else None, max(p.iscrowd for p in pieces))


def _pieces(rows: Iterable[tuple], mode: str) -> Iterable[_Piece]:
    if mode == "instance":
        yield from (_row_piece(r) for r in rows)
    elif mode == "components":
        for r in rows:
            yield from _components(_row_piece(r))
    else:  # semantic: rows come ordered by image, so group per image then by category
        current: int | None = None
        groups: dict[int, list[_Piece]] = {}
        for r in rows:
            piece = _row_piece(r)
            if piece.image_id != current:
                for cat in sorted(groups):
                    yield _union(groups[cat])
                groups, current = {}, piece.image_id
            if piece.area:
                groups.setdefault(piece.category_id, []).append(piece)
        for cat in sorted(groups):
            yield _union(groups[cat])


def _hole_pixels(crop: np.ndarray) -> int:
    bg = np.pad(~crop, 1, constant_values=True).view(np.uint8)
    _, labels = cv2.connectedComponents(bg, connectivity=4)
    return int(((labels != labels[0, 0]) & (bg == 1)).sum())


def _dumps(obj: Any) -> str:
    # allow_nan=False: strict JSON; every float written here was checked to be finite.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _trace_many(jobs: list[tuple[bytes, tuple[int, int, int, int]]], convention: str = PIXEL_EDGES) -> list[str | None]:
    """Worker: the JSON text of the outer rings of each (crop RLE, bbox), or None when it has none."""
    out = []
    for crop_rle, bbox in jobs:
        rings = outer_rings(mask_codec.decode_crop(crop_rle, bbox), bbox[:2], convention)
        out.append(_dumps(rings) if rings else None)
    return out


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return min(n, 8)


def _traced_in_workers(pieces: Iterable[_Piece], wanted: Callable[[_Piece], bool],
                       workers: int, convention: str = PIXEL_EDGES) -> Iterator[tuple[_Piece, str | None]]:
    """(piece, JSON text of its rings, or None) in the order of ``pieces``; the rings of the pieces
    ``wanted`` says need them are traced in ``workers`` spawned processes, batch by batch, a few
    batches ahead of the consumer (output order stays that of ``pieces``). Other pieces get None.
    If the workers cannot be started or die, the rest is traced in this process."""
    pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    pending: collections.deque[tuple[list[_Piece], Future | None]] = collections.deque()

    def submit(batch: list[_Piece]) -> None:
        nonlocal pool
        jobs = [(p.crop_rle or b"", p.bbox) for p in batch if wanted(p)]
        future = None
        if jobs and pool is not None:
            try:
                future = pool.submit(_trace_many, jobs, convention)
            except (BrokenProcessPool, OSError, RuntimeError) as exc:
                log.warning("COCO export: worker processes unavailable (%s); tracing here", exc)
                pool = None
        pending.append((batch, future))

    def drain() -> Iterator[tuple[_Piece, str | None]]:
        nonlocal pool
        batch, future = pending.popleft()
        jobs = [p for p in batch if wanted(p)]
        traced: list[str | None] | None = None
        if future is not None:
            try:
                traced = future.result()
            except (BrokenProcessPool, OSError) as exc:
                log.warning("COCO export: a worker process failed (%s); tracing here", exc)
                pool = None
        if traced is None:
            traced = _trace_many([(p.crop_rle or b"", p.bbox) for p in jobs], convention)
        found = dict(zip(map(id, jobs), traced))
        for p in batch:
            yield p, found.get(id(p))

    try:
        batch: list[_Piece] = []
        for piece in pieces:
            batch.append(piece)
            if len(batch) == _BATCH:
                submit(batch)
                batch = []
                while len(pending) > 2 * workers:
                    yield from drain()
        if batch:
            submit(batch)
        while pending:
            yield from drain()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def write_json_atomically(head: dict, annotations: Iterable[dict | str], tail: Callable[[], dict],
                           out_path: Path) -> None:
    """Write {**head, "annotations": [...], **tail()} through ``fileio.atomic_open`` (``tail`` is
    built after the annotations, so it can depend on them).

    Annotations are encoded one at a time as they are produced (json.dumps uses the C encoder), so
    memory stays flat however large the export is.
    """
    out_path = Path(out_path)
    folder = out_path.parent if str(out_path.parent) else Path(".")
    dumps = _dumps
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(out_path, "w") as fh:
            fh.write("{" + ",".join(f"{dumps(k)}:{dumps(v)}" for k, v in head.items()) + ',"annotations":[')
            for n, ann in enumerate(annotations):
                text = ann if isinstance(ann, str) else dumps(ann)  # str: already encoded
                fh.write("," + text if n else text)
            fh.write("]" + "".join(f",{dumps(k)}:{dumps(v)}" for k, v in tail().items()) + "}")
    except OSError as exc:
        raise ExportError(f"cannot write {out_path}: {exc.strerror or exc}") from None


def export_coco(project: Project, out_path: str | os.PathLike, *, image_ids: Sequence[int] | None = None,
                fmt: str = "auto", mode: str = "instance", include_score: bool = True,
                on_holes: Literal["report", "refuse"] = "report", auto_max_parts: int = AUTO_MAX_PARTS,
                progress: ProgressFn | None = None, workers: int | None = None,
                polygon_convention: str = PIXEL_EDGES, keep_empty_categories: bool = False,
                include_failed: bool = False, force: bool = False,
                image_fields: Callable[[ImageRecord], Mapping[str, Any]] | None = None,
                annotation_fields: Callable[[int, int], Mapping[str, Any]] | None = None) -> ExportReport:
    """Write the project (or ``image_ids``) as COCO JSON to ``out_path`` and report what was written.

    ``progress(done, total)`` is called now and then with annotation rows processed. Raises
    OutputRefusedError for an output path the guard refuses (``force`` allows one inside the image
    folder), ExportError for a bad option, an unwritable target, or a hole with
    ``on_holes='refuse'``; in every error case the previous ``out_path`` (if any) is untouched.
    Reads a snapshot of what is committed when it starts (changes inside an open
    ``project.batch()`` are not included).

    ``workers``: processes that trace polygons (formats 'polygon' and 'auto', instance mode); None
    picks one per CPU when the export has at least PARALLEL_MIN_ROWS rows, 0 or 1 traces here. The
    output is the same either way.

    The frames of clips are exported only when named in ``image_ids`` (``video_store``).
    ``image_fields(image)`` and ``annotation_fields(image_id, category_id)`` add (or replace) keys of
    each image and annotation entry (the video export adds frame numbers and track ids).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if mode not in MODES:
        raise ExportError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if on_holes not in ("report", "refuse"):
        raise ExportError(f"on_holes must be 'report' or 'refuse', not {on_holes!r}")
    if polygon_convention not in CONVENTIONS:
        raise ExportError(f"unknown polygon convention {polygon_convention!r}; use one of {', '.join(CONVENTIONS)}")
    out_path = project.output_guard(force).check_file(out_path, "COCO file")
    report = ExportReport(path=str(out_path))
    all_images = project.list_images(include_frames=image_ids is not None)
    if image_ids is not None:
        wanted = {int(i) for i in image_ids}
        unknown = wanted - {im.id for im in all_images}
        if unknown:
            raise ExportError(f"no image with id {min(unknown)} in this project")
        all_images = [im for im in all_images if im.id in wanted]
    if not include_failed:
        failed = project.failed_image_ids()
        report.failed_left_out = sum(im.id in failed for im in all_images)
        all_images = [im for im in all_images if im.id not in failed]
    images = sorted(all_images, key=lambda im: im.id)
    categories = project.list_categories()
    cat_names = {c.id: c.name for c in categories}
    names = {im.id: im.rel_path for im in images}

    subset = (image_ids is not None or report.failed_left_out > 0
              or project.count_images(include_frames=True) > len(names))  # clips' frames are not exported
    total = project.count_annotations() if not subset else sum(project.count_annotations(i) for i in names)
    rows_done = 0
    used_categories: set[int] = set()

    def rows() -> Iterable[tuple]:
        nonlocal rows_done
        for r in project.iter_annotation_rows(list(names) if subset else None, _ROW_COLS):
            rows_done += 1
            if progress is not None and rows_done % 1000 == 0:
                progress(rows_done, total)
            yield r

    def use_polygon(piece: _Piece) -> bool:
        if piece.iscrowd or piece.area == 0:  # crowd regions are RLE by COCO convention
            return False
        return fmt == "polygon" or (fmt == "auto" and piece.holes == 0 and piece.parts <= auto_max_parts)

    n_workers = workers if workers is not None else (_default_workers() if total >= PARALLEL_MIN_ROWS else 0)
    parallel = n_workers > 1 and fmt != "rle" and mode == "instance"

    def traced() -> Iterable[tuple[_Piece, str | None]]:
        if not parallel:
            return ((p, None) for p in _pieces(rows(), mode))
        return _traced_in_workers(_pieces(rows(), mode), lambda p: use_polygon(p) and p.crop is None,
                                  n_workers, polygon_convention)

    def annotations() -> Iterable[dict[str, Any] | str]:
        count = 0
        for piece, rings_json in traced():
            if piece.area == 0:
                report.empty_skipped += 1
                continue
            segmentation: Any = None
            if use_polygon(piece):
                if parallel and piece.crop is None:
                    rings: Any = rings_json  # JSON text from a worker, or None (no ring)
                else:
                    rings = outer_rings(piece.get_crop(), piece.bbox[:2], polygon_convention)
                if rings and piece.holes:
                    if on_holes == "refuse":
                        raise ExportError(
                            f"{names[piece.image_id]}: a '{cat_names.get(piece.category_id)}' mask has "
                            f"{piece.holes} hole(s), which polygons cannot express; export with format 'rle' "
                            "or 'auto', or fill the holes first")
                    report.holes_lost += 1
                    report.hole_pixels_lost += _hole_pixels(piece.get_crop())
                if rings:
                    segmentation = rings
                    report.polygons += 1
            if segmentation is None:
                segmentation = {"size": [piece.height, piece.width], "counts": piece.full_rle().decode("ascii")}
                report.rles += 1
            count += 1
            used_categories.add(piece.category_id)
            ann: dict[str, Any] = {
                "id": count, "image_id": piece.image_id, "category_id": piece.category_id,
                "segmentation": segmentation, "area": piece.area, "bbox": list(piece.bbox),
                "iscrowd": piece.iscrowd,
            }
            if annotation_fields is not None:
                ann.update(annotation_fields(piece.image_id, piece.category_id))
            score = finite_or_none(piece.score) if include_score else None
            if score is not None:
                ann["score"] = round(score, 6)
            if isinstance(segmentation, str):  # rings already encoded by a worker: splice them in
                ann["segmentation"] = None
                head, _, rest = _dumps(ann).partition(',"segmentation":null,')
                yield f'{head},"segmentation":{segmentation},{rest}'
            else:
                yield ann
        report.annotations = count
        if progress is not None:
            progress(rows_done, total)

    head = {
        "info": {"description": "CaR Desktop export", "version": __version__,
                 "date_created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                 "segmentation_format": fmt, "mode": mode, "polygon_convention": polygon_convention,
                 "polygon_convention_text": CONVENTION_TEXT[polygon_convention]},
        "licenses": [],
        "images": [{"id": im.id, "file_name": im.rel_path, "width": im.width, "height": im.height,
                    **(image_fields(im) if image_fields is not None else {})} for im in images],
    }
    written = list(categories)

    def tail() -> dict[str, Any]:
        written[:] = [c for c in categories if keep_empty_categories or c.id in used_categories]
        return {"categories": [{"id": c.id, "name": c.name, "supercategory": "", "synonyms": list(c.synonyms)}
                               for c in written]}

    write_json_atomically(head, annotations(), tail, Path(out_path))
    report.images = len(images)
    report.categories = len(written)
    report.categories_left_out = len(categories) - len(written)
    if report.failed_left_out:
        report.notes.append(f"{report.failed_left_out} image(s) whose auto-labelling failed were left out (not "
                            "exported as images with nothing on them); see 'car-desktop failures', or export "
                            "with --include-failed")
    if report.categories_left_out:
        report.notes.append(f"{report.categories_left_out} categor{'y' if report.categories_left_out == 1 else 'ies'} "
                            "without annotations left out (ids of the others unchanged); --keep-empty-categories "
                            "keeps them")
    if report.empty_skipped:
        report.notes.append(f"{report.empty_skipped} empty mask(s) skipped")
    if report.holes_lost:
        report.notes.append(f"{report.holes_lost} polygon(s) lost their holes ({report.hole_pixels_lost} "
                            "pixels filled); use format 'rle' or 'auto' to keep them")
    log.info("exported %d annotations of %d images to %s", report.annotations, report.images, out_path)
    return report
