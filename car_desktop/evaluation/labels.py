"""The two sides of an evaluation in one in-memory form, read from a COCO JSON or a ``.cardb`` project,
and the rules that pair them up.

A ``LabelSet`` holds categories (name + synonyms) and, per image (keyed by its file name relative to the
image folder, '/'-separated), the instances as compressed COCO RLE with their scores. Masks stay
compressed until one image is painted into a label map, so a set of any size costs about its file size.

Pairing: images by file name (the exact relative name, else the bare file name when that is unique on
both sides); categories by name, where "car | automobile" (or a COCO ``synonyms`` list) makes every
synonym a name, and two categories match when they share one (case-insensitive). GT categories called
``void`` / ``ignore`` / ``border`` / ``unlabeled`` (or a COCO category whose id equals the ignore index, as
VOC's 255) mark pixels that are not scored. A category called ``background`` is skipped.

Every number read from a file is checked before it sizes memory: file size, image sizes (at most
``imagefiles.max_pixels()``), the number of categories (the confusion matrix is its square).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..annotations.coco_import import BACKGROUND_NAMES, file_convention, read_coco_json, segmentation_rle
from ..annotations.errors import ProjectError
from ..annotations.mask_codec import decode_full_rle
from ..annotations.provenance import Provenance
from ..errors import CaRDesktopError
from ..imagefiles import max_pixels
from .errors import EvaluationError

log = logging.getLogger(__name__)

#: Largest COCO JSON read: parsing costs several times the file size in memory.
MAX_JSON_BYTES = 2 << 30
#: Most categories one side may have: the confusion matrix is (n + 1)^2 counts.
MAX_CATEGORIES = 2000
#: GT category names whose pixels are not scored (VOC's border, COCO-Stuff's "unlabeled").
IGNORE_NAMES = frozenset({"void", "ignore", "ignored", "border", "unlabeled", "unlabelled"})
#: Label value of ignored pixels in painted GT maps (class values are 0..n-1).
IGNORE = -1


@dataclass(frozen=True)
class CategorySpec:
    """A category: display name, synonyms, and its id in the file it came from."""

    name: str
    synonyms: tuple[str, ...] = ()
    source_id: Any = None

    @classmethod
    def parse(cls, text: str, synonyms: Iterable[str] = (), source_id: Any = None) -> CategorySpec:
        """'car | automobile' (plus any extra synonyms) -> name 'car', synonyms ('automobile',)."""
        parts = [p.strip() for p in str(text).split("|")]
        for s in synonyms:
            parts.extend(p.strip() for p in str(s).split("|"))
        seen: list[str] = []
        for p in parts:
            if p and p.casefold() not in {s.casefold() for s in seen}:
                seen.append(p)
        if not seen:
            raise EvaluationError("a category has an empty name")
        return cls(seen[0], tuple(seen[1:]), source_id)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(n.casefold() for n in (self.name, *self.synonyms))

    @property
    def label(self) -> str:
        return " | ".join((self.name, *self.synonyms))


@dataclass
class Instance:
    """One mask: a category index of its LabelSet, a compressed RLE of the whole image, a score."""

    category: int
    rle: dict
    score: float | None = None
    iscrowd: bool = False


@dataclass
class ImageLabels:
    name: str                       # file name relative to the image folder, '/'-separated
    height: int
    width: int
    instances: list[Instance] = field(default_factory=list)
    path: Path | None = None        # the image file, when known (report pictures)


@dataclass
class LabelSet:
    """One side of an evaluation."""

    source: str
    categories: list[CategorySpec]
    images: dict[str, ImageLabels]
    ignore: frozenset[int] = frozenset()   # category indices whose pixels are not scored (GT only)
    notes: list[str] = field(default_factory=list)

    @property
    def has_scores(self) -> bool:
        """True when every instance has a score (and there is at least one): AP can be computed."""
        found = False
        for im in self.images.values():
            for inst in im.instances:
                if inst.score is None:
                    return False
                found = True
        return found


# ------------------------------------------------------------------------------------------ loading
def load_labels(path: str | os.PathLike, *, images_dir: str | os.PathLike | None = None,
                reviewed_only: bool = False, ignore_index: int | None = 255) -> LabelSet:
    """A COCO JSON or a ``.cardb`` project (told apart by their first bytes, not their suffix)."""
    p = Path(path)
    if not p.is_file():
        raise EvaluationError(f"{p} does not exist or is not a file")
    with open(p, "rb") as fh:
        head = fh.read(16)
    if head.startswith(b"SQLite format 3"):
        return load_project(p, reviewed_only=reviewed_only)
    return load_coco(p, images_dir=images_dir, ignore_index=ignore_index)


def _check_size(what: str, width: Any, height: Any) -> tuple[int, int]:
    if not (isinstance(width, int) and isinstance(height, int)) or width <= 0 or height <= 0:
        raise ValueError(f"{what} has no valid width/height ({width!r} x {height!r})")
    if width * height > max_pixels():
        raise ValueError(f"{what} claims {width}x{height} pixels, above the {max_pixels() // 1_000_000} MP limit")
    return width, height


def _name_key(file_name: str) -> str:
    return PurePosixPath(str(file_name).replace("\\", "/")).as_posix()


def _categories(entries: Sequence[Any], source: str) -> tuple[list[CategorySpec], dict[Any, int], set[Any], list[str]]:
    """Categories of a COCO file: specs, COCO id -> index, background ids, notes."""
    if len(entries) > MAX_CATEGORIES:
        raise EvaluationError(f"{source} has {len(entries)} categories; at most {MAX_CATEGORIES} are supported")
    specs: list[CategorySpec] = []
    index: dict[Any, int] = {}
    background: set[Any] = set()
    notes: list[str] = []
    for cat in entries:
        cid = cat.get("id") if isinstance(cat, dict) else None
        name = cat.get("name") if isinstance(cat, dict) else None
        if cid is None or not isinstance(name, str) or not name.strip():
            notes.append(f"category {cid!r} without an id or a name: skipped")
            continue
        if name.strip().casefold() in BACKGROUND_NAMES:
            background.add(cid)
            continue
        if cid in index:
            notes.append(f"duplicate category id {cid!r}: the first is used")
            continue
        synonyms = [s for s in (cat.get("synonyms") or []) if isinstance(s, str)]
        index[cid] = len(specs)
        specs.append(CategorySpec.parse(name, synonyms, cid))
    return specs, index, background, notes


def load_coco(path: str | os.PathLike, *, images_dir: str | os.PathLike | None = None,
              ignore_index: int | None = 255) -> LabelSet:
    """A COCO JSON (instances or results with an ``images`` list). Polygons become RLE here."""
    p = Path(path)
    size = p.stat().st_size
    if size > MAX_JSON_BYTES:
        raise EvaluationError(f"{p} is {size / 2**30:.1f} GiB; COCO files above {MAX_JSON_BYTES >> 30} GiB "
                              "are not read (split it by images)")
    try:
        data, _cut = read_coco_json(p)
    except (CaRDesktopError, ValueError, TypeError, AttributeError) as exc:  # CocoImportError or odd JSON
        raise EvaluationError(f"{p} is not a COCO JSON file with an 'images' list: {exc}") from None
    specs, cat_index, background, notes = _categories(data.get("categories") or [], str(p))
    root = Path(images_dir) if images_dir is not None else None
    convention = file_convention(data)
    images: dict[str, ImageLabels] = {}
    by_id: dict[Any, ImageLabels] = {}
    for im in data["images"]:
        iid = im.get("id") if isinstance(im, dict) else None
        name = im.get("file_name") if isinstance(im, dict) else None
        if iid is None or not isinstance(name, str) or not name:
            notes.append(f"image {iid!r} without an id or a file_name: skipped")
            continue
        try:
            width, height = _check_size(f"image {name}", im.get("width"), im.get("height"))
        except ValueError as exc:
            notes.append(f"{exc}: skipped")
            continue
        key = _name_key(name)
        if key in images or iid in by_id:
            notes.append(f"image {name} (id {iid!r}) appears twice: the first is used")
            continue
        entry = ImageLabels(key, height, width, path=(root / key) if root is not None else None)
        images[key] = entry
        by_id[iid] = entry
    ignore = {cat_index[c] for c in cat_index if specs[cat_index[c]].name.casefold() in IGNORE_NAMES
              or (ignore_index is not None and c == ignore_index)}
    bad = 0
    for ann in data.get("annotations") or []:
        if not isinstance(ann, dict) or ann.get("category_id") in background:
            continue
        owner = by_id.get(ann.get("image_id"))
        cat = cat_index.get(ann.get("category_id"))
        if owner is None or cat is None:
            bad += 1
            continue
        try:
            rle = segmentation_rle(ann.get("segmentation"), owner.height, owner.width, convention)
        except (ValueError, TypeError, OverflowError):
            bad += 1
            continue
        score = ann.get("score")
        owner.instances.append(Instance(cat, rle, float(score) if isinstance(score, (int, float)) else None,
                                        bool(ann.get("iscrowd"))))
    if bad:
        notes.append(f"{bad} annotation(s) with an unknown image or category or a broken segmentation: skipped")
    del data
    return LabelSet(str(p), specs, images, frozenset(ignore), notes)


def load_project(path: str | os.PathLike, *, reviewed_only: bool = False) -> LabelSet:
    """A ``.cardb`` project: every image (only 'reviewed' ones with ``reviewed_only``), every annotation."""
    from ..annotations.store import Project

    p = Path(path)
    try:
        project = Project.open(p)
    except ProjectError as exc:
        raise EvaluationError(str(exc)) from None
    try:
        cats = project.list_categories()
        if len(cats) > MAX_CATEGORIES:
            raise EvaluationError(f"{p} has {len(cats)} categories; at most {MAX_CATEGORIES} are supported")
        specs = [CategorySpec(c.name, tuple(c.synonyms), c.id) for c in cats]
        cat_index = {c.id: i for i, c in enumerate(cats)}
        root = project.image_root
        records = project.list_images("reviewed" if reviewed_only else None)
        images: dict[str, ImageLabels] = {}
        by_id: dict[int, ImageLabels] = {}
        for rec in records:
            if rec.width * rec.height > max_pixels():   # a damaged row must not size an allocation
                continue
            entry = ImageLabels(_name_key(rec.rel_path), rec.height, rec.width, path=root / rec.rel_path)
            images[entry.name] = entry
            by_id[rec.id] = entry
        ids = list(by_id) if reviewed_only else None
        if ids is None or ids:
            for image_id, category_id, height, width, rle, score, prov in project.iter_annotation_rows(
                    ids, "image_id, category_id, height, width, rle, score, provenance"):
                owner = by_id.get(image_id)
                if owner is None or (height, width) != (owner.height, owner.width):
                    continue
                crowd = Provenance.from_json(prov).iscrowd
                owner.instances.append(Instance(cat_index[category_id], {"size": [height, width], "counts": rle},
                                                score, crowd))
        ignore = frozenset(i for i, s in enumerate(specs) if s.name.casefold() in IGNORE_NAMES)
        return LabelSet(str(p), specs, images, ignore)
    finally:
        project.close()


# ------------------------------------------------------------------------------------------ pairing
def match_images(pred: LabelSet, gt: LabelSet) -> tuple[list[tuple[str, str]], list[str]]:
    """[(gt name, pred name)] in GT order, and notes on what could not be paired."""
    notes: list[str] = []
    pairs: list[tuple[str, str]] = []
    pred_by_base: dict[str, list[str]] = {}
    for name in pred.images:
        pred_by_base.setdefault(PurePosixPath(name).name, []).append(name)
    gt_base_count: dict[str, int] = {}
    for name in gt.images:
        base = PurePosixPath(name).name
        gt_base_count[base] = gt_base_count.get(base, 0) + 1
    used: set[str] = set()
    missing = 0
    for name in gt.images:
        if name in pred.images:
            pairs.append((name, name))
            used.add(name)
            continue
        base = PurePosixPath(name).name
        candidates = pred_by_base.get(base, [])
        if len(candidates) == 1 and gt_base_count[base] == 1 and candidates[0] not in used:
            pairs.append((name, candidates[0]))
            used.add(candidates[0])
        else:
            missing += 1
    if missing:
        notes.append(f"{missing} GT image(s) have no prediction entry: not scored")
    extra = len(pred.images) - len(used)
    if extra:
        notes.append(f"{extra} predicted image(s) are not in GT: not scored")
    return pairs, notes


def match_categories(pred: Sequence[CategorySpec], gt: Sequence[CategorySpec]) -> tuple[dict[int, int], list[str]]:
    """{pred index: gt index} for categories sharing a name or synonym (exact names first), and notes."""
    notes: list[str] = []
    out: dict[int, int] = {}
    for i, pc in enumerate(pred):
        exact = [j for j, gc in enumerate(gt) if gc.name.casefold() == pc.name.casefold()]
        shared = exact or [j for j, gc in enumerate(gt) if gc.names & pc.names]
        if not shared:
            continue
        if len(shared) > 1:
            notes.append(f"predicted '{pc.label}' matches several GT categories "
                         f"({', '.join(gt[j].name for j in shared)}); '{gt[shared[0]].name}' is used")
        out[i] = shared[0]
    return out, notes


def classes_for_concepts(gt: LabelSet, concepts: Sequence[CategorySpec]) -> tuple[dict[int, int], list[str]]:
    """{GT category index: concept index + 1} for the GT categories that match a concept, and notes.

    GT categories matching no concept are not drawn (their pixels count as background: CaR was not
    asked about them); ignored categories stay ignored."""
    mapping, notes = match_categories(concepts, gt.categories)
    class_of = {g: c + 1 for c, g in mapping.items()}
    unmatched = [gt.categories[g].name for g in range(len(gt.categories)) if g not in class_of and g not in gt.ignore]
    if unmatched:
        notes.append("GT categories matching none of the concepts (counted as background): " + ", ".join(unmatched))
    return class_of, notes


# ------------------------------------------------------------------------------------------ painting
def decode(rle: dict) -> np.ndarray:
    h, w = (int(v) for v in rle["size"])
    return decode_full_rle(h, w, rle["counts"])


def paint(entry: ImageLabels, class_of: dict[int, int], *, by_score: bool,
          ignore: Iterable[int] = ()) -> tuple[np.ndarray, set[int]]:
    """(label map, present classes) of one image: int32, 0 background, ``class_of[category]`` elsewhere.

    Overlaps: with ``by_score`` the higher score wins (the engine's rule), otherwise the smaller mask
    wins (drawn last, as the label PNG export does). Categories in ``ignore`` are drawn last as IGNORE;
    categories missing from ``class_of`` are not drawn. Present = classes with at least one non-empty mask.
    """
    from pycocotools import mask as mask_utils

    label = np.zeros((entry.height, entry.width), np.int32)
    ignore = set(ignore)
    drawn = [inst for inst in entry.instances if inst.category in class_of and inst.category not in ignore]
    if by_score:
        drawn.sort(key=lambda inst: (inst.score if inst.score is not None else -np.inf))
    else:
        drawn.sort(key=lambda inst: -float(mask_utils.area(_bytes_rle(inst.rle))))
    present: set[int] = set()
    for inst in drawn:
        mask = decode(inst.rle)
        if mask.any():
            label[mask] = class_of[inst.category]
            present.add(class_of[inst.category])
    for inst in entry.instances:
        if inst.category in ignore:
            label[decode(inst.rle)] = IGNORE
    return label, present


def _bytes_rle(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
