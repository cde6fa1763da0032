"""The review queue: a project's masks ordered from the most doubtful to the most certain.

Doubt comes first from "kept without competition" (the only concept left in an image scores 1 by
construction, which says nothing about the mask), then from the CaR score, lowest first; among equal
scores a mask SAM refused comes before one SAM did not check, which comes before one SAM accepted.
Filters narrow the queue by concept, image status, CaR status, SAM outcome and whether a person
edited the mask; other sort orders group by concept or by image, the most doubtful first inside each.

The queries read through their own read-only SQLite connection (the project file is in WAL mode), so
a worker thread can build the queue while the GUI keeps saving edits through the project's own
connection, and they page with ``limit`` / ``offset`` so a project of a million masks costs one
sorted scan per page, never a Python list of every mask. Pure Python and SQLite: no Qt, no numpy.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from .errors import ProjectError
from .mask_status import short_status
from .provenance import KEPT_ALONE, sql_field
from .store import Project

log = logging.getLogger(__name__)

#: Sort orders: each ends with the doubt order, so "concept" means "by concept, doubtful first".
SORTS: dict[str, str] = {
    "confidence": "least confident first",
    "concept": "by concept",
    "image": "by image",
    "score_desc": "most confident first",
}

#: SAM outcomes a filter can ask for.
SAM_FILTERS = ("accepted", "rejected", "not_run")

# Derived columns, computed once per row in a sub-select from the provenance record (provenance.py);
# a hand-edited or foreign row whose JSON is broken reads as NULLs instead of breaking the queue.
# The frames of clips are not in the queue (they are reviewed on the clip's timeline).
_BASE = f"""
SELECT a.id AS ann_id, a.image_id AS image_id, i.rel_path AS rel_path, i.status AS image_status,
       a.category_id AS category_id, c.name AS category_name, a.score AS score, a.source AS source,
       a.edited AS edited, a.area AS area,
       {sql_field("status")} AS car_status,
       {sql_field("status_text")} AS status_text,
       {sql_field("sam_accepted")} AS sam_accepted,
       {sql_field("sam_iou")} AS sam_iou,
       {sql_field("accepted")} AS accepted,
       {sql_field("origin")} AS origin
FROM annotations a
JOIN images i ON i.id = a.image_id
JOIN categories c ON c.id = a.category_id
WHERE i.video_id IS NULL
"""

_ALONE = f"(q.car_status = '{KEPT_ALONE}')"
_SAM_RANK = "(CASE WHEN q.sam_accepted IS NULL THEN 1 WHEN q.sam_accepted THEN 2 ELSE 0 END)"
# A mask without a score (imported without one) counts as certain: there is nothing to doubt it by.
_DOUBT = f"(CASE WHEN {_ALONE} THEN 0 ELSE 1 END), COALESCE(q.score, 1.0), {_SAM_RANK}"
_ORDER = {
    "confidence": f"{_DOUBT}, q.rel_path, q.ann_id",
    "concept": f"q.category_name COLLATE NOCASE, {_DOUBT}, q.rel_path, q.ann_id",
    "image": f"q.rel_path, {_DOUBT}, q.ann_id",
    "score_desc": f"(CASE WHEN {_ALONE} THEN 1 ELSE 0 END), COALESCE(q.score, 1.0) DESC, "
                  f"{_SAM_RANK} DESC, q.rel_path, q.ann_id",
}


@dataclass(frozen=True)
class ReviewItem:
    """One mask of the queue, with what the review list shows about it."""

    annotation_id: int
    image_id: int
    rel_path: str
    image_status: str            # 'new' | 'auto' | 'reviewed'
    category_id: int
    category_name: str
    score: float | None
    source: str                  # 'car' | 'sam' | 'manual' | 'import'
    edited: bool
    area: int
    car_status: str | None       # 'kept', 'kept_without_competition', 'forced', ... (provenance)
    status_text: str | None
    sam_accepted: bool | None    # None: SAM did not check this mask
    sam_iou: float | None
    accepted: bool = False       # a person accepted this mask (``accept_mask``)
    origin: str | None = None    # where the mask was made: 'window', 'autolabel', ... (provenance)

    @property
    def kept_alone(self) -> bool:
        return self.car_status == KEPT_ALONE

    @property
    def score_text(self) -> str:
        """The score as a person should read it: 'alone' when it is 1 by construction."""
        if self.kept_alone:
            return "alone"
        return "—" if self.score is None else f"{self.score:.2f}"

    @property
    def sam_text(self) -> str:
        if self.sam_accepted is None:
            return "—"
        iou = "" if self.sam_iou is None else f" ({self.sam_iou:.2f})"
        return ("accepted" if self.sam_accepted else "rejected") + iou

    @property
    def car_text(self) -> str:
        """CaR's verdict in words, with the score where it means something."""
        if self.kept_alone:
            return "kept without competition"
        if self.status_text:
            return self.status_text
        if self.car_status == "kept" and self.score is not None:
            return f"kept (score {self.score:.2f})"
        return self.car_status or self.source

    @property
    def status_short(self) -> str:
        """A word or two for a narrow column: 'kept', 'kept alone', 'force-kept', 'imported', ..."""
        return short_status(self.source, self.car_status, self.origin)


@dataclass(frozen=True)
class ReviewFilter:
    """Which masks the queue holds. Empty tuples mean "any".

    The default is the work still to do: masks from CaR (or imported with a score) on images that
    are auto-labelled and not yet reviewed.
    """

    category_ids: tuple[int, ...] = ()
    image_statuses: tuple[str, ...] = ("auto",)
    sources: tuple[str, ...] = ("car", "import")
    car_statuses: tuple[str, ...] = ()
    sam: tuple[str, ...] = ()            # any of SAM_FILTERS
    edited: bool | None = None           # None: both; False: untouched by a person; True: edited
    accepted: bool | None = None         # None: both; False: not accepted yet; True: accepted
    scored_only: bool = True             # leave out masks that carry no score and no CaR status

    def where(self) -> tuple[str, list]:
        """The SQL condition on the sub-select ``q`` and its parameters."""
        clauses: list[str] = []
        params: list = []

        def among(column: str, values: Sequence) -> None:
            if values:
                clauses.append(f"{column} IN ({','.join('?' * len(values))})")
                params.extend(values)

        among("q.category_id", [int(v) for v in self.category_ids])
        among("q.image_status", list(self.image_statuses))
        among("q.source", list(self.sources))
        among("q.car_status", list(self.car_statuses))
        if self.sam:
            unknown = set(self.sam) - set(SAM_FILTERS)
            if unknown:
                raise ValueError(f"unknown SAM filter {sorted(unknown)}; use {', '.join(SAM_FILTERS)}")
            parts = {"accepted": "q.sam_accepted = 1", "rejected": "q.sam_accepted = 0",
                     "not_run": "q.sam_accepted IS NULL"}
            clauses.append("(" + " OR ".join(parts[s] for s in self.sam) + ")")
        if self.edited is not None:
            clauses.append("q.edited = ?")
            params.append(int(self.edited))
        if self.accepted is not None:
            clauses.append("COALESCE(q.accepted, 0) = ?")
            params.append(int(self.accepted))
        if self.scored_only:
            clauses.append("(q.score IS NOT NULL OR q.car_status IS NOT NULL)")
        return (" AND ".join(clauses) or "1"), params


@dataclass
class ReviewPage:
    """One page of the queue and the size of the whole queue under the same filter."""

    items: list[ReviewItem] = field(default_factory=list)
    total: int = 0
    offset: int = 0

    @property
    def has_more(self) -> bool:
        return self.offset + len(self.items) < self.total


@contextmanager
def _reader(project: Project) -> Iterator[sqlite3.Connection]:
    """A read-only connection of its own: a consistent snapshot, usable from any thread."""
    path = project.path
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                               timeout=10.0)
    except sqlite3.Error as exc:
        raise ProjectError(f"cannot read project {path}: {exc}") from None
    try:
        conn.execute("BEGIN")   # count and page from the same snapshot
        yield conn
    except sqlite3.DatabaseError as exc:
        raise ProjectError(f"cannot read the review queue of {path}: {exc}") from None
    finally:
        conn.close()


def _item(row: tuple) -> ReviewItem:
    (ann_id, image_id, rel_path, image_status, category_id, category_name, score, source, edited, area,
     car_status, status_text, sam_accepted, sam_iou, accepted, origin) = row
    return ReviewItem(
        annotation_id=int(ann_id), image_id=int(image_id), rel_path=rel_path, image_status=image_status,
        category_id=int(category_id), category_name=category_name,
        score=None if score is None else float(score), source=source, edited=bool(edited), area=int(area),
        car_status=None if car_status is None else str(car_status),
        status_text=None if status_text is None else str(status_text),
        sam_accepted=None if sam_accepted is None else bool(sam_accepted),
        sam_iou=None if sam_iou is None or isinstance(sam_iou, str) else float(sam_iou),
        accepted=bool(accepted) and not isinstance(accepted, str),
        origin=origin if isinstance(origin, str) else None,
    )


def _query(conn: sqlite3.Connection, flt: ReviewFilter, sort: str, limit: int, offset: int) -> list[ReviewItem]:
    where, params = flt.where()
    rows = conn.execute(f"SELECT * FROM ({_BASE}) q WHERE {where} ORDER BY {_ORDER[sort]} LIMIT ? OFFSET ?",
                        [*params, int(limit), max(0, int(offset))]).fetchall()
    return [_item(r) for r in rows]


def _check_sort(sort: str) -> None:
    if sort not in _ORDER:
        raise ValueError(f"unknown sort {sort!r}; use one of {', '.join(SORTS)}")


def review_page(project: Project, flt: ReviewFilter | None = None, *, sort: str = "confidence",
                limit: int = 500, offset: int = 0) -> ReviewPage:
    """A page of the queue (``limit`` masks from ``offset``) and the queue's total size."""
    _check_sort(sort)
    flt = flt or ReviewFilter()
    where, params = flt.where()
    with _reader(project) as conn:
        total = int(conn.execute(f"SELECT COUNT(*) FROM ({_BASE}) q WHERE {where}", params).fetchone()[0])
        items = _query(conn, flt, sort, max(0, int(limit)), offset)
    return ReviewPage(items, total, max(0, int(offset)))


def review_items(project: Project, flt: ReviewFilter | None = None, *, sort: str = "confidence",
                 limit: int | None = None, offset: int = 0) -> list[ReviewItem]:
    """The queue as a list: all of it without ``limit`` (page with ``limit`` for big projects)."""
    _check_sort(sort)
    with _reader(project) as conn:
        return _query(conn, flt or ReviewFilter(), sort, -1 if limit is None else max(0, int(limit)), offset)


def queue_concepts(project: Project, flt: ReviewFilter | None = None) -> list[tuple[int, str, int]]:
    """(category_id, name, masks in the queue) for the concept filter, ignoring the concept filter."""
    flt = flt or ReviewFilter()
    open_flt = replace(flt, category_ids=())
    where, params = open_flt.where()
    with _reader(project) as conn:
        rows = conn.execute(f"SELECT q.category_id, q.category_name, COUNT(*) FROM ({_BASE}) q WHERE {where} "
                            "GROUP BY q.category_id ORDER BY q.category_name COLLATE NOCASE", params).fetchall()
    return [(int(cid), name, int(n)) for cid, name, n in rows]


def accept_mask(project: Project, annotation_id: int, accepted: bool = True) -> None:
    """Record a person's verdict that this mask is right (rejecting is deleting it, which the window
    does through its undo history)."""
    ann = project.get_annotation(annotation_id)
    project.set_annotation_provenance(annotation_id, replace(ann.provenance, accepted=bool(accepted)))


@dataclass(frozen=True)
class ReviewProgress:
    """How many of a project's images (clip frames left out) a person has marked reviewed."""

    reviewed: int
    total: int

    @property
    def text(self) -> str:
        return f"{self.reviewed} of {self.total} image{'s' if self.total != 1 else ''} reviewed"


def review_progress(project: Project) -> ReviewProgress:
    """The review dock's counter ("n of N images reviewed"), read through its own connection."""
    with _reader(project) as conn:
        reviewed, total = conn.execute(
            "SELECT COALESCE(SUM(status = 'reviewed'), 0), COUNT(*) FROM images WHERE video_id IS NULL").fetchone()
    return ReviewProgress(int(reviewed), int(total))
