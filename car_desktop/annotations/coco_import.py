"""Import a COCO JSON file into a project so a labelled dataset can be continued.

Accepts polygons, compressed and uncompressed RLE and iscrowd. Categories are matched by name
(created when new; a 'background' category is skipped). Images are matched by their path relative
to the project's image root; a missing image file is still imported from the JSON size (noted).

Nothing in the file is trusted. A ``file_name`` must be a plain relative path that resolves inside
``images_dir`` (no ``..`` leaving it, no absolute path, URL, control character or over-long name;
see ``safepaths.safe_relative_path``), so no file outside that folder is ever read. Ids must be
integers; sizes must be positive integers within the pixel limit; numbers must be finite; polygon
vertices more than ``VERTEX_TOLERANCE`` pixels outside the image are refused and the rest are clipped
to it before anything is rasterised (a vertex at 1e30 once crashed pycocotools); RLE counts are
checked before pycocotools reads them. JSON nested deeper than Python's parser allows is cut at
``MAX_DEPTH`` and the entries holding such values are refused. Every refused entry is reported in
``ImportReport.problems`` with its reason and the rest is imported; only an unreadable file raises
CocoImportError.

Importing is idempotent: an annotation whose image, category and mask are already in the project is
skipped and counted (``annotations_skipped``), so importing a file twice adds nothing the second
time. That also makes the import safe to commit in chunks (about half a second each), so a long
import never holds the project's write lock for long: another process writing to the project waits
at most one chunk, and an interrupted import is completed by running it again.

A file written with the pixel-centre polygon convention (``info.polygon_convention``, see
polygons.py) is rasterised as OpenCV does, so our own exports of either kind come back exactly.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .. import imagefiles
from ..engine.errors import ImageLoadError
from ..fileio import finite_or_none, regular_file
from ..safepaths import UnsafePathError, safe_relative_path
from . import mask_codec
from .errors import CocoImportError, ProjectError
from .models import ImportProblem, ImportReport
from .polygons import PIXEL_CENTRES, convention_of
from .provenance import ORIGIN_COCO, Provenance
from .store import Project, file_hash, single_line

log = logging.getLogger(__name__)

BACKGROUND_NAMES = frozenset({"background", "__background__", "_background_", "bg"})

#: Polygon vertices may lie this many pixels outside the image (rounding in other tools); further
#: out, the annotation is refused. Those within are clipped to the image before rasterising.
VERTEX_TOLERANCE = 2.0
#: JSON nesting kept when the file is too deep for Python's parser (COCO itself needs 5 levels).
MAX_DEPTH = 32
#: A long import commits about this often, so other writers to the project wait at most this long.
CHUNK_SECONDS = 0.5
#: After a chunk that took that long, pause this much, so a waiting writer gets the project.
YIELD_SECONDS = 0.15
_INT64 = 2 ** 63
_TOO_DEEP = "\x00car-desktop: nested too deeply\x00"

ProgressFn = Callable[[int, int], Any]
StageFn = Callable[[str, int], Any]


class EntryError(ValueError):
    """One entry of the file cannot be used; the message says why."""


# ------------------------------------------------------------------------------------- reading
def read_coco_json(coco_json: str | os.PathLike | dict, stage: StageFn | None = None,
                   progress: ProgressFn | None = None) -> tuple[dict, bool]:
    """A COCO file parsed as this module reads every COCO file (a FIFO or folder refused, nesting cut
    at ``MAX_DEPTH``): (data, cut), ``cut`` when values nested too deeply were replaced by the marker.
    Raises CocoImportError when the file cannot be read or has no ``images`` list."""
    if isinstance(coco_json, dict):
        data, cut = coco_json, False
    else:
        data, cut = parse_json_file(Path(coco_json), stage, progress)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        name = "the data" if isinstance(coco_json, dict) else str(coco_json)
        raise CocoImportError(f"{name} is not COCO JSON: no 'images' list at the top level")
    return data, cut


def parse_json_file(path: Path, stage: StageFn | None, progress: ProgressFn | None) -> tuple[Any, bool]:
    """A JSON file read safely (regular file only, progress, nesting cut at ``MAX_DEPTH``): (data, cut)."""
    st, problem = regular_file(path)
    if st is None or problem:  # a pipe would block, a folder cannot be read
        raise CocoImportError(f"COCO file {path} {problem}; nothing was imported")
    total = st.st_size
    if stage is not None:
        stage("reading", total)
    chunks: list[bytes] = []
    done = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(8 << 20):
                chunks.append(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        text = b"".join(chunks).decode("utf-8-sig")
    except OSError as exc:
        raise CocoImportError(f"{path} is not a readable COCO JSON file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CocoImportError(f"{path} is not a readable COCO JSON file: not UTF-8 text ({exc})") from None
    del chunks
    if stage is not None:
        stage("parsing", 0)
    try:
        return _json_loads(text), False
    except RecursionError:
        log.warning("COCO import: %s is nested deeper than Python's JSON parser allows; deep values are cut", path)
        try:
            return _json_loads(_cut_deep(text)), True
        except (RecursionError, json.JSONDecodeError) as exc:
            raise CocoImportError(f"{path} is not a readable COCO JSON file: nested too deeply ({exc})") from None
    except json.JSONDecodeError as exc:
        raise CocoImportError(f"{path} is not a readable COCO JSON file: {exc}") from None


def file_convention(data: dict) -> str:
    """The polygon convention a COCO file names in ``info.polygon_convention`` ('' for none)."""
    info = data.get("info")
    return convention_of(info.get("polygon_convention")) if isinstance(info, dict) else ""


def _json_loads(text: str) -> Any:
    # json.loads of a large file makes millions of objects; with the cyclic GC running meanwhile,
    # every collection rescans them all and the load grows faster than the file.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return json.loads(text, object_hook=_compact_polygons)
    finally:
        if gc_was_enabled:
            gc.enable()


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _cut_deep(text: str) -> str:
    """``text`` with every value nested deeper than MAX_DEPTH replaced by a marker string, so it can be
    parsed and the entries holding such values refused one by one. Only used after the parser gave up."""
    out: list[str] = []
    depth = 0
    pos = 0
    cut_from = -1
    for m in _TOKENS.finditer(text):
        tok = m.group()
        if tok[0] == '"':
            continue
        if tok in "[{":
            depth += 1
            if depth == MAX_DEPTH + 1 and cut_from < 0:
                out.append(text[pos:m.start()])
                cut_from = m.start()
        else:
            if depth == MAX_DEPTH + 1 and cut_from >= 0:
                out.append(json.dumps(_TOO_DEEP))
                pos = m.end()
                cut_from = -1
            depth -= 1
    out.append(text[pos:] if cut_from < 0 else text[pos:cut_from])
    return "".join(out)


def _compact_polygons(obj: dict) -> dict:
    """json object_hook: an annotation's polygon rings become float64 arrays as soon as it is parsed,
    so a large file does not hold every vertex as a Python int (36 bytes each, against 8). A ring
    that is not a flat list of numbers is left as it is, for segmentation_rle to report."""
    seg = obj.get("segmentation")
    if isinstance(seg, list):
        for i, ring in enumerate(seg):
            if isinstance(ring, list) and not any(isinstance(v, bool) for v in ring):
                try:
                    arr = np.asarray(ring, dtype=np.float64)
                except (TypeError, ValueError, OverflowError):
                    continue
                if arr.ndim == 1:
                    seg[i] = arr
    return obj


# ------------------------------------------------------------------------------------- checking
def _contains_marker(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return value == _TOO_DEEP
    if depth > MAX_DEPTH + 2:
        return False
    if isinstance(value, dict):
        return any(_contains_marker(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_contains_marker(v, depth + 1) for v in value)
    return False


def _entry_id(value: Any, what: str = "id") -> int:
    """An integer id (a 64-bit one); EntryError for bools, floats, strings, lists, objects, ..."""
    if isinstance(value, bool) or not isinstance(value, int):
        shown = "missing" if value is None else f"a {type(value).__name__} ({str(value)[:40]})"
        raise EntryError(f"its {what} must be an integer, not {shown}")
    if not -_INT64 <= value < _INT64:
        raise EntryError(f"its {what} {value} is too large")
    return value


def _shown_id(value: Any) -> Any:
    """How an entry's id is shown in a problem: as it is when it is a plain value, else abbreviated."""
    if value is None or (isinstance(value, (int, float, str)) and len(str(value)) <= 40):
        return value
    return f"<{type(value).__name__}>"


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value >= _INT64:
        return None
    return value


def _clip_ring(arr: np.ndarray, height: int, width: int, convention: str) -> np.ndarray:
    """Refuse vertices far outside the image, clip the others onto it."""
    xs, ys = arr[0::2], arr[1::2]
    hi_x, hi_y = (width - 1, height - 1) if convention == PIXEL_CENTRES else (width, height)
    bad = (xs < -VERTEX_TOLERANCE) | (xs > hi_x + VERTEX_TOLERANCE)
    bad |= (ys < -VERTEX_TOLERANCE) | (ys > hi_y + VERTEX_TOLERANCE)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EntryError(f"a polygon vertex ({xs[i]:.6g}, {ys[i]:.6g}) lies outside the {width}x{height} image")
    out = arr.copy()
    np.clip(out[0::2], 0, hi_x, out=out[0::2])
    np.clip(out[1::2], 0, hi_y, out=out[1::2])
    return out


def segmentation_rle(seg: Any, height: int, width: int, convention: str = "") -> dict:
    """A compressed RLE for any COCO segmentation (polygons rasterised with ``convention``, RLE checked
    before pycocotools reads it); EntryError (a ValueError) with a reason when it is broken."""
    if isinstance(seg, list):
        if not seg:
            raise EntryError("empty polygon list")
        rings = []
        for ring in seg:
            if isinstance(ring, list) and any(isinstance(v, bool) for v in ring):
                raise EntryError("a polygon ring holds true/false, not numbers")
            try:
                arr = np.asarray(ring, dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                raise EntryError("a polygon ring is not a list of numbers") from None
            if arr.ndim != 1:
                raise EntryError("a polygon ring is not a flat list of numbers")
            if not np.isfinite(arr).all():
                raise EntryError("a polygon ring holds a number that is not finite (Infinity, NaN or too large)")
            if len(arr) % 2 or len(arr) < 6:
                raise EntryError(f"a polygon ring has {len(arr)} numbers; at least 3 points (6 numbers) needed")
            rings.append(_clip_ring(arr, height, width, convention))
        if convention == PIXEL_CENTRES:
            canvas = np.zeros((height, width), np.uint8)
            cv2.fillPoly(canvas, [np.rint(r).astype(np.int32).reshape(-1, 2) for r in rings], 1)
            return mask_utils.encode(mask_codec.fortran_u8(canvas.view(bool)))
        return mask_utils.merge(mask_utils.frPyObjects(rings, height, width))
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        size = seg["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(_positive_int(v) for v in size)):
            raise EntryError("RLE size is not a pair of positive integers")
        if size != [height, width]:
            raise EntryError(f"RLE size {size} does not match the image ({height}x{width})")
        counts = seg["counts"]
        if isinstance(counts, list):  # uncompressed RLE (iscrowd annotations usually)
            if len(counts) > height * width + 1 or not all(
                    isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= height * width for c in counts):
                raise EntryError("uncompressed RLE counts must be non-negative integers")
            if sum(counts) != height * width:
                raise EntryError("uncompressed RLE counts do not add up to the image size")
            return mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
        if isinstance(counts, str):
            try:
                raw = counts.encode("ascii")
                runs = mask_codec.rle_counts(raw)  # checked here, before pycocotools reads it
            except (UnicodeEncodeError, ValueError):
                raise EntryError("malformed compressed RLE counts") from None
            if int(runs.sum()) != height * width:
                raise EntryError("compressed RLE counts do not add up to the image size")
            return {"size": [height, width], "counts": raw}
        raise EntryError("RLE counts are neither a string nor a list")
    raise EntryError("segmentation is neither polygons nor RLE")


# ------------------------------------------------------------------------------------- import
class _Importer:
    """One import run: the report, the id maps, and the chunked transactions."""

    def __init__(self, project: Project, data: dict, cut: bool, images_dir: Path, progress: ProgressFn | None,
                 stage: StageFn | None) -> None:
        self.project = project
        self.data = data
        self.cut = cut
        self.report = ImportReport()
        self.progress = progress
        self.stage = stage
        self.root = project.image_root.resolve()
        self.images_dir = images_dir
        self.images_dir_resolved = images_dir.resolve()
        try:
            self.prefix = self.images_dir_resolved.relative_to(self.root)
        except ValueError:
            raise CocoImportError(
                f"the images folder {images_dir} is not inside the project's image folder {self.root}; "
                f"re-link the project or import into a project made for {images_dir}") from None
        self.convention = file_convention(data)
        self.cat_map: dict[int, int] = {}
        self.background: set[int] = set()
        self.img_map: dict[int, tuple[int, int, int]] = {}  # coco id -> (project id, height, width)
        self.image_ids_seen: set[int] = set()

    def problem(self, kind: str, entry_id: Any, message: str) -> None:
        entry_id = _shown_id(entry_id)
        if message == _TOO_DEEP or _TOO_DEEP in message:
            message = f"nested more than {MAX_DEPTH} levels deep"
        self.report.problems.append(ImportProblem(kind, entry_id, message))  # type: ignore[arg-type]
        log.info("COCO import: %s %s: %s", kind, entry_id, message)

    def entries(self, key: str) -> list:
        value = self.data.get(key) or []
        if not isinstance(value, list):
            self.problem("file", key, f"'{key}' is not a list; none of it was imported")
            return []
        return value

    def checked(self, kind: str, entries: list, check: Callable[[Any], Any]) -> Iterator[tuple[int, Any]]:
        """(1-based position, ``check(entry)``) for each entry; an entry ``check`` refuses is reported
        as a problem of ``kind`` and comes out as None."""
        for n, entry in enumerate(entries, 1):
            try:
                yield n, check(entry)
            except EntryError as exc:
                self.problem(kind, entry.get("id") if isinstance(entry, dict) else None, str(exc))
                yield n, None

    def run(self) -> ImportReport:
        with self.project.batch():
            self.categories()
        self.images()
        self.annotations()
        return self.report

    # ------------------------------------------------------------------ categories
    def _category_entry(self, cat: Any) -> tuple[int, str, dict]:
        if not isinstance(cat, dict):
            raise EntryError("a category is not an object")
        if self.cut and _contains_marker(cat):
            raise EntryError(_TOO_DEEP)
        cid = _entry_id(cat.get("id"))
        name = cat.get("name")
        if not isinstance(name, str) or not single_line(name):
            raise EntryError("category without a name")
        if cid in self.cat_map or cid in self.background:
            raise EntryError("duplicate category id")
        return cid, name, cat

    def categories(self) -> None:
        known_before = {c.name.casefold() for c in self.project.list_categories()}
        for _, entry in self.checked("category", self.entries("categories"), self._category_entry):
            if entry is None:
                continue
            cid, name, cat = entry
            if single_line(name).casefold() in BACKGROUND_NAMES:
                self.background.add(cid)
                continue
            raw_syn = cat.get("synonyms")
            synonyms: list[str] = []
            if raw_syn is not None:
                if isinstance(raw_syn, list) and all(isinstance(s, str) for s in raw_syn):
                    synonyms = raw_syn
                else:
                    self.report.notes.append(f"category {cid} ({single_line(name)[:60]}): its synonyms are not a list "
                                             "of text and were left out")
            try:
                created = self.project.get_or_create_category(name, synonyms)
            except ProjectError as exc:
                self.problem("category", cid, str(exc))
                continue
            if created.name.casefold() not in known_before:
                known_before.add(created.name.casefold())
                self.report.categories_added += 1
            self.cat_map[cid] = created.id

    # ------------------------------------------------------------------ images
    def images(self) -> None:
        images = self.entries("images")
        if self.stage is not None:
            self.stage("images", len(images))
        pending: list[tuple[int, str, int, int, str | None]] = []
        for n, entry in self.checked("image", images, self._image_entry):
            if entry is not None:
                pending.append(entry)
            if len(pending) >= 500 or (n == len(images) and pending):
                self._add_images(pending)
                pending = []
            if self.progress is not None and (n % 1000 == 0 or n == len(images)):
                self.progress(n, len(images))

    def _image_entry(self, im: Any) -> tuple[int, str, int, int, str | None] | None:
        """(coco id, rel path in the project, width, height, content hash) of one image entry."""
        if not isinstance(im, dict):
            raise EntryError("an image is not an object")
        if self.cut and _contains_marker(im):
            raise EntryError(_TOO_DEEP)
        iid = _entry_id(im.get("id"))
        if iid in self.image_ids_seen:
            raise EntryError("duplicate image id")
        self.image_ids_seen.add(iid)
        try:
            name = safe_relative_path(im.get("file_name"))
        except UnsafePathError as exc:
            raise EntryError(f"file_name: {exc}") from None
        full = self.images_dir / name
        try:
            inside = full.resolve().is_relative_to(self.images_dir_resolved)
            present = full.exists() or full.is_symlink()
        except (OSError, RuntimeError) as exc:
            raise EntryError(f"{name}: cannot be looked up ({exc})") from None
        if present and not inside:
            raise EntryError(f"{name} leads outside the images folder (a symbolic link); it is not read")
        rel = name if str(self.prefix) == "." else (self.prefix / name).as_posix()
        width, height = im.get("width"), im.get("height")
        if present:
            try:
                fw, fh = imagefiles.image_size(full)
                digest = file_hash(full)
            except ImageLoadError as exc:
                raise EntryError(str(exc)) from None
            except OSError as exc:
                raise EntryError(f"{name}: cannot be read ({exc.strerror or exc})") from None
            if (width, height) not in ((fw, fh), (None, None)):
                raise EntryError(f"{name}: the JSON says {width}x{height} but the file is {fw}x{fh}")
            return iid, rel, fw, fh, digest
        w, h = _positive_int(width), _positive_int(height)
        if w is None or h is None:
            raise EntryError(f"{name}: file not found and no valid width/height in the JSON")
        if w * h > imagefiles.max_pixels():
            raise EntryError(imagefiles.too_big_message(Path(name), (w, h)))
        self.report.notes.append(f"{name}: image file not found under {self.images_dir}; imported from the JSON size")
        return iid, rel, w, h, None

    def _add_images(self, entries: list[tuple[int, str, int, int, str | None]]) -> None:
        with self.project.batch():
            for iid, rel, width, height, digest in entries:
                existing = self.project.find_image(rel)
                if existing is not None:
                    self.report.images_existing += 1
                    record = existing
                else:
                    try:
                        record = self.project.add_image_entry(rel, width, height, digest)
                    except ProjectError as exc:
                        self.problem("image", iid, str(exc))
                        continue
                    self.report.images_added += 1
                self.img_map[iid] = (record.id, record.height, record.width)

    # ------------------------------------------------------------------ annotations
    def annotations(self) -> None:
        anns = self.entries("annotations")
        total = len(anns)
        if self.stage is not None:
            self.stage("annotations", total)
        batch: list[tuple[int, int, mask_codec.EncodedMask, float | None, dict[str, Any]]] = []
        started = time.monotonic()
        for n, item in self.checked("annotation", anns, self._annotation):
            if item is not None:
                batch.append(item)
            if batch and (n == total or time.monotonic() - started >= CHUNK_SECONDS):
                took = self._store(batch)
                batch = []
                if took >= CHUNK_SECONDS and n < total:
                    time.sleep(YIELD_SECONDS)  # let a writer that waited for the lock have it
                started = time.monotonic()
            if self.progress is not None and (n % 1000 == 0 or n == total):
                self.progress(n, total)

    def _annotation(self, ann: Any) -> tuple[int, int, mask_codec.EncodedMask, float | None, Provenance] | None:
        if not isinstance(ann, dict):
            raise EntryError("annotation is not an object")
        if self.cut and _contains_marker(ann):
            raise EntryError(_TOO_DEEP)
        aid = ann.get("id")
        if aid is not None:
            aid = _entry_id(aid)
        image_key = _entry_id(ann.get("image_id"), "image_id")
        cat_key = _entry_id(ann.get("category_id"), "category_id")
        if image_key not in self.img_map:
            raise EntryError(f"unknown image_id {image_key}")
        if cat_key in self.background:
            return None
        if cat_key not in self.cat_map:
            raise EntryError(f"unknown category_id {cat_key}")
        iscrowd = ann.get("iscrowd", 0)
        if isinstance(iscrowd, bool) or iscrowd not in (0, 1):
            raise EntryError(f"iscrowd must be 0 or 1, not {str(iscrowd)[:20]}")
        image_id, height, width = self.img_map[image_key]
        try:
            rle = segmentation_rle(ann.get("segmentation"), height, width, self.convention)
            enc = mask_codec.encode_rle(rle)
        except EntryError:
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            raise EntryError(str(exc)) from None
        if enc.area == 0:
            raise EntryError("empty mask")
        raw_score = ann.get("score")
        score = finite_or_none(raw_score)
        if raw_score is not None and score is None:
            self.report.notes.append(f"annotation {aid}: its score {str(raw_score)[:20]} is not a finite number; "
                                     "imported without a score")
        provenance = Provenance(origin=ORIGIN_COCO, coco_id=aid, iscrowd=bool(iscrowd))
        return image_id, self.cat_map[cat_key], enc, score, provenance

    def _store(self, batch: list) -> float:
        t0 = time.monotonic()
        with self.project.batch():
            for image_id, category_id, enc, score, provenance in batch:
                if self.project.find_same_annotation(image_id, category_id, enc) is not None:
                    self.report.annotations_skipped += 1
                    continue
                self.project.add_encoded_annotation(image_id, category_id, enc, score, "import", provenance,
                                                    edited=True)
                self.report.annotations_added += 1
        return time.monotonic() - t0


def import_coco(project: Project, coco_json: str | os.PathLike | dict, images_dir: str | os.PathLike, *,
                progress: ProgressFn | None = None, stage: StageFn | None = None) -> ImportReport:
    """Import ``coco_json`` whose ``file_name`` entries are relative to ``images_dir`` (which must be
    inside the project's image root). Returns the report; see the module docstring.

    ``progress(done, total)`` reports bytes read, then images, then annotations; ``stage(name, total)``
    announces each of 'reading', 'parsing', 'images' and 'annotations' as it starts.
    """
    images_dir = Path(images_dir)
    data, cut = read_coco_json(coco_json, stage, progress)
    return _Importer(project, data, cut, images_dir, progress, stage).run()
