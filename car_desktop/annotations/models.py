"""Plain data the annotation layer hands out: image, category and annotation rows, mask edits,
and the reports of export, import and relink. Frozen dataclasses with no behaviour beyond small
conveniences, so the GUI can hold them across threads without touching the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .provenance import Provenance

ImageStatus = Literal["new", "auto", "reviewed"]
Source = Literal["car", "sam", "manual", "import"]

IMAGE_STATUSES: tuple[str, ...] = ("new", "auto", "reviewed")
SOURCES: tuple[str, ...] = ("car", "sam", "manual", "import")


@dataclass(frozen=True)
class ImageRecord:
    """One image of the project. ``rel_path`` uses '/' and is relative to ``Project.image_root``."""

    id: int
    rel_path: str
    width: int
    height: int
    content_hash: str | None
    status: ImageStatus


@dataclass(frozen=True)
class Category:
    """A concept. ``name`` is the display name (first synonym); ``synonyms`` are the others.
    ``color`` is the user's choice or, by default, ``palette.color_for_id(id)``."""

    id: int
    name: str
    synonyms: tuple[str, ...]
    color: tuple[int, int, int]

    @property
    def label(self) -> str:
        """The user's form of the concept, name first: 'car | automobile' (as provenance stores it)."""
        return " | ".join((self.name, *self.synonyms))


@dataclass(frozen=True)
class Annotation:
    """An annotation without its mask (the mask is fetched with ``Project.get_mask(id)``).

    ``bbox`` is COCO [x, y, w, h] and ``area`` the pixel count, both from pycocotools on the mask.
    ``edited`` is True once a person changed the mask; such annotations survive re-runs of CaR.
    ``parts`` is the number of 8-connected components, ``holes`` the number of holes.
    ``provenance`` says where the mask came from (see provenance.py).
    """

    id: int
    image_id: int
    category_id: int
    score: float | None
    source: Source
    edited: bool
    area: int
    bbox: tuple[int, int, int, int]
    parts: int
    holes: int
    provenance: Provenance
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Rect:
    """A half-open rectangle of image pixels: rows ``y0 <= y < y1``, columns ``x0 <= x < x1``.

    The one rectangle type of the program: mask edits, layer updates and the canvas's repaints all use
    it. ``mask[rect.slices]`` is the region it covers.
    """

    y0: int
    x0: int
    y1: int
    x1: int

    @classmethod
    def of_mask(cls, mask: np.ndarray) -> Rect | None:
        """The tight bounding rectangle of a mask's True pixels, or None when it has none."""
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(mask.any(axis=0))
        return cls(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        return max(0, self.y1 - self.y0), max(0, self.x1 - self.x0)

    @property
    def is_empty(self) -> bool:
        return self.y1 <= self.y0 or self.x1 <= self.x0

    def clip(self, shape: tuple[int, int]) -> Rect:
        """The part inside an image of ``shape`` (height, width); may be empty."""
        h, w = shape
        return Rect(max(0, self.y0), max(0, self.x0), min(h, self.y1), min(w, self.x1))

    def union(self, other: Rect | None) -> Rect:
        if other is None or other.is_empty:
            return self
        if self.is_empty:
            return other
        return Rect(min(self.y0, other.y0), min(self.x0, other.x0), max(self.y1, other.y1), max(self.x1, other.x1))

    def fits(self, shape: tuple[int, int]) -> bool:
        return self.y0 >= 0 and self.x0 >= 0 and self.y1 <= shape[0] and self.x1 <= shape[1]


EMPTY_RECT = Rect(0, 0, 0, 0)


@dataclass(frozen=True)
class Edit:
    """The changed rectangle of a mask and its content before and after.

    ``before`` / ``after`` are bool arrays of shape ``rect.shape``. An empty edit (nothing changed)
    has the empty rectangle.
    """

    rect: Rect
    before: np.ndarray
    after: np.ndarray

    @property
    def is_empty(self) -> bool:
        return self.rect.is_empty

    @property
    def nbytes(self) -> int:
        return int(self.before.nbytes + self.after.nbytes)

    def inverse(self) -> Edit:
        """The edit that undoes this one."""
        return Edit(self.rect, self.after, self.before)


@dataclass
class ExportReport:
    """What an export wrote, and what it could not express (notes are for the user)."""

    path: str
    images: int = 0
    annotations: int = 0
    categories: int = 0
    polygons: int = 0
    rles: int = 0
    empty_skipped: int = 0
    holes_lost: int = 0             # instances written as polygons whose holes were filled
    hole_pixels_lost: int = 0
    failed_left_out: int = 0        # images whose auto-labelling failed, left out (not exported as empty)
    categories_left_out: int = 0    # categories without any exported annotation
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportProblem:
    """One COCO entry that was not imported, and why."""

    kind: Literal["image", "annotation", "category", "file"]
    entry_id: Any
    message: str


@dataclass
class ImportReport:
    """What an import did. ``annotations_skipped`` counts annotations already in the project (same
    image, category and mask), so importing the same file twice adds nothing the second time."""

    images_added: int = 0
    images_existing: int = 0
    categories_added: int = 0
    annotations_added: int = 0
    annotations_skipped: int = 0
    problems: list[ImportProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


FailureStage = Literal["add", "label"]


@dataclass(frozen=True)
class FileFailure:
    """A file that could not be added to the project ('add': unreadable, too large, not an image)
    or auto-labelled ('label'), kept in the project with the file's size and hash at the time, so
    a rerun can tell whether the file has changed since."""

    rel_path: str
    stage: FailureStage
    reason: str
    failed_at: float
    attempts: int = 1
    file_size: int | None = None
    content_hash: str | None = None
    run_key: str | None = None


@dataclass
class RelinkReport:
    """Result of ``Project.relink``: images found under the new root (by path or by content hash)
    and the rel_paths still missing."""

    found_by_path: int = 0
    found_by_hash: int = 0
    missing: list[str] = field(default_factory=list)
