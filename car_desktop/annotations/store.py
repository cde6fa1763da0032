"""The project store: one SQLite file (WAL) holding images, categories, annotations and settings.

``Project`` is the only writer API. Every public method that changes something is one transaction
(``batch()`` groups several into one), so killing the process at any moment leaves either the old or
the new state. Masks are stored as compressed RLE (see mask_codec) and decoded only on request;
listing an image's annotations reads small rows through an index. The object is safe to share
between threads (one connection, one lock); a second process may read the file concurrently.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import mask_codec, schema
from .errors import MaskError, ProjectError, ProjectNotFoundError
from .models import IMAGE_STATUSES, SOURCES, Annotation, Category, ImageRecord, RelinkReport
from .palette import color_for_id, format_color, parse_color
from .provenance import Provenance

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

_ANN_COLS = ("id, image_id, category_id, score, source, edited, area, bbox_x, bbox_y, bbox_w, bbox_h, "
             "parts, holes, provenance, created_at, updated_at")
_IMG_COLS = "id, rel_path, width, height, content_hash, status"


def file_hash(path: Path) -> str:
    """SHA-256 of the file's bytes (hex): how moved images are recognised."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_image_size(path: Path) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after the EXIF orientation is applied. Reads the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ProjectError(f"cannot read image {path}: {exc}") from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: the engine sees it transposed
        width, height = height, width
    return width, height


def _row_to_image(row: tuple) -> ImageRecord:
    return ImageRecord(id=row[0], rel_path=row[1], width=row[2], height=row[3], content_hash=row[4],
                       status=row[5])


def _row_to_annotation(row: tuple) -> Annotation:
    return Annotation(id=row[0], image_id=row[1], category_id=row[2], score=row[3], source=row[4],
                      edited=bool(row[5]), area=row[6], bbox=(row[7], row[8], row[9], row[10]),
                      parts=row[11], holes=row[12], provenance=Provenance.from_json(row[13]),
                      created_at=row[14], updated_at=row[15])


class Project:
    """An open project file. Create with ``Project.create``, open with ``Project.open``; close with
    ``close()`` or use it as a context manager."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        """Internal: use ``create`` or ``open``."""
        self.path = path
        self._conn = conn
        self._lock = threading.RLock()
        self._depth = 0  # nesting of write transactions (batch inside a method)

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, path: str | os.PathLike, image_root: str | os.PathLike) -> "Project":
        """Create a new project file at ``path`` whose images live under ``image_root``.

        Raises ProjectNotFoundError if ``path`` already exists (never overwrites) and ProjectError
        if the folder of ``path`` cannot be written.
        """
        path = Path(path)
        if path.exists():
            raise ProjectNotFoundError(f"{path} already exists; open it instead, or choose another name")
        try:
            conn = cls._connect(path)
        except sqlite3.Error as exc:
            raise ProjectError(f"cannot create project {path}: {exc}") from None
        schema.migrate(conn)
        project = cls(path, conn)
        with project._write():
            now = time.time()
            conn.execute("INSERT INTO meta VALUES ('created_at', ?)", (repr(now),))
            conn.execute("INSERT INTO meta VALUES ('app', 'car-desktop')")
        project.image_root = Path(image_root)
        log.info("created project %s (images under %s)", path, image_root)
        return project

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Project":
        """Open an existing project, upgrading an older schema in place (one transaction per step).

        A missing, corrupt, foreign (another program's SQLite file) or newer-schema file raises
        ProjectNotFoundError / ProjectCorruptError / ProjectForeignError / ProjectSchemaError and
        is left byte-for-byte unchanged: it is checked read-only before it is opened for writing.
        """
        path = Path(path)
        schema.check_readable(path)
        conn = cls._connect(path)
        schema.migrate(conn)
        return cls(path, conn)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a method is exactly one transaction.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a killed process (it is in the OS page cache); only
        # a power cut may lose the last commits, never corrupt the file.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise ProjectError(f"project {self.path} is closed")
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    def batch(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """Group several changes into one transaction: ``with project.batch(): ...``.

        All or none of them are saved; also much faster for bulk work (one commit).
        """
        return self._write()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            if self._conn is None:
                raise ProjectError(f"project {self.path} is closed")
            return self._conn.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ meta and settings
    @property
    def image_root(self) -> Path:
        """Folder the images' ``rel_path`` are relative to. If the stored absolute folder is gone but
        the same relative position from the project file exists (both moved together), that is used."""
        rows = dict(self._read("SELECT key, value FROM meta WHERE key IN ('image_root', 'image_root_rel')"))
        root = Path(rows.get("image_root", "."))
        rel = rows.get("image_root_rel")
        if not root.is_dir() and rel is not None:
            candidate = (self.path.parent / rel).resolve()
            if candidate.is_dir():
                return candidate
        return root

    @image_root.setter
    def image_root(self, value: str | os.PathLike) -> None:
        root = Path(value).resolve()
        try:
            rel = os.path.relpath(root, self.path.resolve().parent)
        except ValueError:  # another drive on Windows
            rel = None
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('image_root', ?)", (str(root),))
            if rel is not None:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('image_root_rel', ?)", (rel,))

    @property
    def schema_version(self) -> int:
        return int(self._read("PRAGMA user_version")[0][0])

    def get_setting(self, key: str, default: Any = None) -> Any:
        """A per-project setting (any JSON value), e.g. 'recent_concepts'."""
        rows = self._read("SELECT value FROM settings WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value; ``None`` deletes the key."""
        with self._write() as conn:
            if value is None:
                conn.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                try:
                    text = json.dumps(value, ensure_ascii=False)
                except TypeError as exc:
                    raise ProjectError(f"setting {key!r} cannot be saved: {exc}") from None
                conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, text))

    # ------------------------------------------------------------------ images
    def _rel_path(self, path: str | os.PathLike, root: Path) -> str:
        p = Path(path)
        if not p.is_absolute():
            return p.as_posix()
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise ProjectError(f"image {p} is not inside the project's image folder {root}") from None

    def add_images(self, paths: str | os.PathLike | Iterable[str | os.PathLike], *,
                   recursive: bool = True) -> list[ImageRecord]:
        """Add images, or every image file found in a folder (scanned recursively by default).

        Paths may be absolute (inside ``image_root``) or relative to it. Already known paths are
        returned as they are. An explicitly named unreadable image raises ProjectError; unreadable
        files found by a folder scan are skipped with a warning. One transaction for the whole call.
        """
        root = self.image_root
        scanning = isinstance(paths, (str, os.PathLike)) and Path(paths).is_dir()
        if scanning:
            folder = Path(paths)
            walker = folder.rglob("*") if recursive else folder.glob("*")
            items: list[str | os.PathLike] = sorted(
                p for p in walker if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif isinstance(paths, (str, os.PathLike)):
            items = [paths]
        else:
            items = list(paths)
        prepared: list[tuple[str, int, int, str]] = []
        seen: set[str] = set()
        for item in items:
            rel = self._rel_path(item, root)
            if rel in seen or self.find_image(rel) is not None:
                prepared.append((rel, -1, -1, ""))  # known: returned as it is
                continue
            seen.add(rel)
            full = root / rel
            try:
                width, height = read_image_size(full)
                digest = file_hash(full)
            except (ProjectError, OSError) as exc:
                if scanning:
                    log.warning("skipping %s: %s", full, exc)
                    continue
                raise ProjectError(f"cannot add image {full}: {exc}") from None
            prepared.append((rel, width, height, digest))
        out: list[ImageRecord] = []
        with self._write():
            for rel, width, height, digest in prepared:
                if width < 0:
                    rec = self.find_image(rel)
                    if rec is not None:
                        out.append(rec)
                    continue
                out.append(self.add_image_entry(rel, width, height, digest))
        return out

    def add_image_entry(self, rel_path: str, width: int, height: int,
                        content_hash: str | None = None, status: str = "new") -> ImageRecord:
        """Add one image by its metadata without reading the file (importers, benchmarks).
        Returns the existing record if ``rel_path`` is known."""
        if width <= 0 or height <= 0:
            raise ProjectError(f"image {rel_path} has an impossible size {width}x{height}")
        if status not in IMAGE_STATUSES:
            raise ProjectError(f"unknown image status {status!r}; use one of {', '.join(IMAGE_STATUSES)}")
        rel_path = Path(rel_path).as_posix()
        with self._write() as conn:
            existing = self.find_image(rel_path)
            if existing is not None:
                return existing
            cur = conn.execute(
                "INSERT INTO images (rel_path, width, height, content_hash, status, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (rel_path, int(width), int(height), content_hash, status,
                                              time.time()))
            return ImageRecord(cur.lastrowid, rel_path, int(width), int(height), content_hash, status)

    def find_image(self, rel_path: str) -> ImageRecord | None:
        rows = self._read(f"SELECT {_IMG_COLS} FROM images WHERE rel_path = ?", (Path(rel_path).as_posix(),))
        return _row_to_image(rows[0]) if rows else None

    def get_image(self, image_id: int) -> ImageRecord:
        rows = self._read(f"SELECT {_IMG_COLS} FROM images WHERE id = ?", (image_id,))
        if not rows:
            raise ProjectError(f"no image with id {image_id} in this project")
        return _row_to_image(rows[0])

    def list_images(self, status: str | None = None) -> list[ImageRecord]:
        """All images ordered by rel_path, optionally only those with ``status``."""
        if status is None:
            rows = self._read(f"SELECT {_IMG_COLS} FROM images ORDER BY rel_path")
        else:
            rows = self._read(f"SELECT {_IMG_COLS} FROM images WHERE status = ? ORDER BY rel_path", (status,))
        return [_row_to_image(r) for r in rows]

    def count_images(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM images")[0][0])

    def image_path(self, image_id: int) -> Path:
        """Absolute path of an image under the current ``image_root``."""
        return self.image_root / self.get_image(image_id).rel_path

    def set_image_status(self, image_id: int, status: str) -> None:
        """'new' (not labelled), 'auto' (auto-labelled) or 'reviewed'."""
        if status not in IMAGE_STATUSES:
            raise ProjectError(f"unknown image status {status!r}; use one of {', '.join(IMAGE_STATUSES)}")
        with self._write() as conn:
            if conn.execute("UPDATE images SET status = ? WHERE id = ?", (status, image_id)).rowcount == 0:
                raise ProjectError(f"no image with id {image_id} in this project")

    def remove_image(self, image_id: int) -> None:
        """Forget an image and its annotations (the file itself is not touched)."""
        with self._write() as conn:
            if conn.execute("DELETE FROM images WHERE id = ?", (image_id,)).rowcount == 0:
                raise ProjectError(f"no image with id {image_id} in this project")

    def review_queue(self, limit: int | None = None) -> list[tuple[ImageRecord, float]]:
        """Auto-labelled images, the least confident first (lowest CaR score among their masks)."""
        sql = (f"SELECT {', '.join('i.' + c.strip() for c in _IMG_COLS.split(','))}, MIN(a.score) AS s "
               "FROM images i JOIN annotations a ON a.image_id = i.id "
               "WHERE i.status = 'auto' AND a.score IS NOT NULL GROUP BY i.id ORDER BY s ASC, i.id")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [(_row_to_image(r[:6]), float(r[6])) for r in self._read(sql)]

    def relink(self, new_image_root: str | os.PathLike) -> RelinkReport:
        """Point the project at a new image folder. Images whose rel_path exists there keep it; the
        others are found by content hash anywhere under the new folder and their rel_path updated.
        One transaction; images not found are listed in the report and kept."""
        root = Path(new_image_root)
        if not root.is_dir():
            raise ProjectError(f"{root} is not a folder")
        report = RelinkReport()
        images = self.list_images()
        missing = [im for im in images if not (root / im.rel_path).is_file()]
        report.found_by_path = len(images) - len(missing)
        moves: dict[int, str] = {}
        if missing:
            wanted = {im.content_hash for im in missing if im.content_hash}
            by_hash: dict[str, str] = {}
            for p in sorted(root.rglob("*")):
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                    try:
                        digest = file_hash(p)
                    except OSError:
                        continue
                    if digest in wanted:
                        by_hash.setdefault(digest, p.relative_to(root).as_posix())
            taken = {im.rel_path for im in images if im not in missing}
            for im in missing:
                rel = by_hash.get(im.content_hash or "")
                if rel is not None and rel not in taken:
                    moves[im.id] = rel
                    taken.add(rel)
                else:
                    report.missing.append(im.rel_path)
            report.found_by_hash = len(moves)
        with self._write() as conn:
            # Two passes so swapping two paths cannot trip the UNIQUE constraint.
            for image_id in moves:
                conn.execute("UPDATE images SET rel_path = ? WHERE id = ?", (f"\x00relink/{image_id}", image_id))
            for image_id, rel in moves.items():
                conn.execute("UPDATE images SET rel_path = ? WHERE id = ?", (rel, image_id))
            self.image_root = root
        return report

    # ------------------------------------------------------------------ categories
    def _category_from_row(self, row: tuple) -> Category:
        color = parse_color(row[3]) if row[3] else color_for_id(row[0])
        return Category(id=row[0], name=row[1], synonyms=tuple(json.loads(row[2])), color=color)

    @staticmethod
    def _clean_names(name: str, synonyms: Iterable[str]) -> tuple[str, list[str]]:
        parts = [p.strip() for p in name.split("|")]
        for s in synonyms:
            parts.extend(p.strip() for p in s.split("|"))
        parts = [p for p in parts if p]
        if not parts:
            raise ProjectError("a category needs a non-empty name")
        head, seen, syn = parts[0], {parts[0].casefold()}, []
        for p in parts[1:]:
            if p.casefold() not in seen:
                seen.add(p.casefold())
                syn.append(p)
        return head, syn

    def get_or_create_category(self, name: str, synonyms: Iterable[str] = ()) -> Category:
        """The category called ``name`` (case-insensitive), created if new. 'car | automobile' is
        accepted as name plus synonyms; new synonyms are added to an existing category."""
        head, syn = self._clean_names(name, synonyms)
        with self._write() as conn:
            row = conn.execute("SELECT id, name, synonyms, color FROM categories WHERE name = ?",
                               (head,)).fetchone()
            if row is None:
                cur = conn.execute("INSERT INTO categories (name, synonyms, created_at) VALUES (?, ?, ?)",
                                   (head, json.dumps(syn, ensure_ascii=False), time.time()))
                return Category(cur.lastrowid, head, tuple(syn), color_for_id(cur.lastrowid))
            known = json.loads(row[2])
            extra = [s for s in syn if s.casefold() not in {k.casefold() for k in known}]
            if extra:
                conn.execute("UPDATE categories SET synonyms = ? WHERE id = ?",
                             (json.dumps(known + extra, ensure_ascii=False), row[0]))
            return self.get_category(row[0])

    def get_category(self, category_id: int) -> Category:
        rows = self._read("SELECT id, name, synonyms, color FROM categories WHERE id = ?", (category_id,))
        if not rows:
            raise ProjectError(f"no category with id {category_id} in this project")
        return self._category_from_row(rows[0])

    def find_category(self, name: str) -> Category | None:
        rows = self._read("SELECT id, name, synonyms, color FROM categories WHERE name = ?", (name.strip(),))
        return self._category_from_row(rows[0]) if rows else None

    def list_categories(self) -> list[Category]:
        """All categories by id (the order they were created)."""
        return [self._category_from_row(r)
                for r in self._read("SELECT id, name, synonyms, color FROM categories ORDER BY id")]

    def rename_category(self, category_id: int, name: str, synonyms: Iterable[str] | None = None) -> Category:
        """Rename (and optionally replace the synonyms); the id, and so the COCO id, stays."""
        head, syn = self._clean_names(name, synonyms or ())
        with self._write() as conn:
            current = self.get_category(category_id)
            clash = self.find_category(head)
            if clash is not None and clash.id != category_id:
                raise ProjectError(f"a category called {clash.name!r} already exists")
            if synonyms is None and "|" not in name:
                syn = list(current.synonyms)
            conn.execute("UPDATE categories SET name = ?, synonyms = ? WHERE id = ?",
                         (head, json.dumps(syn, ensure_ascii=False), category_id))
        return self.get_category(category_id)

    def recolor_category(self, category_id: int, color: str | tuple[int, int, int] | None) -> Category:
        """Set a colour ('#rrggbb' or (r, g, b)); ``None`` goes back to the palette colour."""
        try:
            text = None if color is None else format_color(parse_color(color))
        except ValueError as exc:
            raise ProjectError(str(exc)) from None
        with self._write() as conn:
            if conn.execute("UPDATE categories SET color = ? WHERE id = ?", (text, category_id)).rowcount == 0:
                raise ProjectError(f"no category with id {category_id} in this project")
        return self.get_category(category_id)

    def delete_category(self, category_id: int) -> int:
        """Delete a category and all its annotations; returns how many annotations went with it.
        Its id is never reused."""
        with self._write() as conn:
            n = conn.execute("SELECT COUNT(*) FROM annotations WHERE category_id = ?", (category_id,)).fetchone()[0]
            if conn.execute("DELETE FROM categories WHERE id = ?", (category_id,)).rowcount == 0:
                raise ProjectError(f"no category with id {category_id} in this project")
        return int(n)

    # ------------------------------------------------------------------ annotations
    def _image_shape(self, image_id: int) -> tuple[int, int]:
        im = self.get_image(image_id)
        return im.height, im.width

    def encode_mask(self, image_id: int, mask: np.ndarray) -> mask_codec.EncodedMask:
        """Check a mask against the image's size and encode it (call outside a transaction: it is the
        slow part of storing a mask)."""
        return mask_codec.encode(mask_codec.as_bool_mask(mask, self._image_shape(image_id)))

    def _insert(self, conn: sqlite3.Connection, image_id: int, category_id: int, enc: mask_codec.EncodedMask,
                score: float | None, source: str, provenance: Provenance | None, edited: bool,
                auto_rle: bytes | None) -> int:
        if source not in SOURCES:
            raise ProjectError(f"unknown annotation source {source!r}; use one of {', '.join(SOURCES)}")
        if conn.execute("SELECT 1 FROM categories WHERE id = ?", (category_id,)).fetchone() is None:
            raise ProjectError(f"no category with id {category_id} in this project")
        try:
            prov = (provenance or Provenance()).to_json()
        except (TypeError, ValueError) as exc:
            raise ProjectError(f"provenance cannot be saved: {exc}") from None
        # The mask CaR made is kept apart from later edits (``get_auto_mask``). An edited CaR mask
        # added without its first version has none.
        if auto_rle is None and source == "car" and not edited:
            auto_rle = enc.rle
        now = time.time()
        x, y, w, h = enc.bbox
        cur = conn.execute(
            "INSERT INTO annotations (image_id, category_id, height, width, rle, crop_rle, bbox_x, bbox_y, "
            "bbox_w, bbox_h, area, parts, holes, score, source, edited, provenance, auto_rle, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (image_id, category_id, enc.height, enc.width, enc.rle, enc.crop_rle, x, y, w, h, enc.area,
             enc.parts, enc.holes, None if score is None else float(score), source, int(edited), prov,
             auto_rle, now, now))
        return int(cur.lastrowid)

    def add_annotation(self, image_id: int, category_id: int, mask: np.ndarray, score: float | None = None,
                       source: str = "manual", provenance: Provenance | None = None, *,
                       edited: bool | None = None, auto_mask: np.ndarray | None = None) -> Annotation:
        """Add one annotation. ``mask`` is (height, width) of the image, bool or 0/1.

        ``edited`` defaults to True for 'manual' annotations (a person made them) and False otherwise.
        For a CaR mask, ``auto_mask`` is the mask as CaR made it (``get_auto_mask``); by default the
        mask itself when it is unedited, and none when it is a person's edit.
        """
        enc = self.encode_mask(image_id, mask)  # outside the lock: encoding is the slow part
        auto = None if auto_mask is None else self.encode_mask(image_id, auto_mask).rle
        with self._write() as conn:
            ann_id = self._insert(conn, image_id, category_id, enc, score, source, provenance,
                                  source == "manual" if edited is None else edited, auto)
        return self.get_annotation(ann_id)

    def add_encoded_annotation(self, image_id: int, category_id: int, enc: mask_codec.EncodedMask,
                               score: float | None, source: str, provenance: Provenance | None,
                               edited: bool) -> int:
        """Add an already encoded mask (importers, ``car_results``); returns the new id. Checks the size only."""
        if (enc.height, enc.width) != self._image_shape(image_id):
            raise MaskError(f"mask is {enc.width}x{enc.height} but image {image_id} is not")
        with self._write() as conn:
            return self._insert(conn, image_id, category_id, enc, score, source, provenance, edited, None)

    def get_annotation(self, annotation_id: int) -> Annotation:
        rows = self._read(f"SELECT {_ANN_COLS} FROM annotations WHERE id = ?", (annotation_id,))
        if not rows:
            raise ProjectError(f"no annotation with id {annotation_id} in this project")
        return _row_to_annotation(rows[0])

    def list_annotations(self, image_id: int) -> list[Annotation]:
        """The image's annotations (no masks) in creation order. Indexed: milliseconds at any size."""
        return [_row_to_annotation(r) for r in
                self._read(f"SELECT {_ANN_COLS} FROM annotations WHERE image_id = ? ORDER BY id", (image_id,))]

    def count_annotations(self, image_id: int | None = None) -> int:
        if image_id is None:
            return int(self._read("SELECT COUNT(*) FROM annotations")[0][0])
        return int(self._read("SELECT COUNT(*) FROM annotations WHERE image_id = ?", (image_id,))[0][0])

    def get_mask(self, annotation_id: int) -> np.ndarray:
        """The annotation's mask as a (height, width) bool array (decoded now, not cached)."""
        rows = self._read("SELECT height, width, crop_rle, bbox_x, bbox_y, bbox_w, bbox_h FROM annotations "
                          "WHERE id = ?", (annotation_id,))
        if not rows:
            raise ProjectError(f"no annotation with id {annotation_id} in this project")
        h, w, crop, bx, by, bw, bh = rows[0]
        return mask_codec.decode(h, w, crop, (bx, by, bw, bh))

    def get_mask_crop(self, annotation_id: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """(crop, bbox): the mask inside its COCO bbox [x, y, w, h]; cheap for small objects."""
        rows = self._read("SELECT crop_rle, bbox_x, bbox_y, bbox_w, bbox_h FROM annotations WHERE id = ?",
                          (annotation_id,))
        if not rows:
            raise ProjectError(f"no annotation with id {annotation_id} in this project")
        crop, bx, by, bw, bh = rows[0]
        return mask_codec.decode_crop(crop, (bx, by, bw, bh)), (bx, by, bw, bh)

    def get_auto_mask(self, annotation_id: int) -> np.ndarray | None:
        """The mask as CaR made it, before any person's edit (None for masks CaR did not make, and for
        CaR masks edited in a project older than schema 2, whose first version was not kept)."""
        rows = self._read("SELECT height, width, auto_rle FROM annotations WHERE id = ?", (annotation_id,))
        if not rows:
            raise ProjectError(f"no annotation with id {annotation_id} in this project")
        h, w, auto = rows[0]
        return None if auto is None else mask_codec.decode_full_rle(h, w, auto)

    def get_rle(self, annotation_id: int) -> dict[str, Any]:
        """The mask as a COCO compressed RLE {'size': [h, w], 'counts': str}."""
        rows = self._read("SELECT height, width, rle FROM annotations WHERE id = ?", (annotation_id,))
        if not rows:
            raise ProjectError(f"no annotation with id {annotation_id} in this project")
        h, w, rle = rows[0]
        return {"size": [h, w], "counts": rle.decode("ascii")}

    def update_mask(self, annotation_id: int, mask: np.ndarray, edited: bool = True) -> Annotation:
        """Replace an annotation's mask (one transaction). ``edited`` marks it as touched by a person,
        which protects it from later CaR runs (``car_results``); an edited flag is never cleared here."""
        ann = self.get_annotation(annotation_id)
        enc = self.encode_mask(ann.image_id, mask)
        x, y, w, h = enc.bbox
        with self._write() as conn:
            conn.execute(
                "UPDATE annotations SET rle = ?, crop_rle = ?, bbox_x = ?, bbox_y = ?, bbox_w = ?, bbox_h = ?, "
                "area = ?, parts = ?, holes = ?, edited = MAX(edited, ?), updated_at = ? WHERE id = ?",
                (enc.rle, enc.crop_rle, x, y, w, h, enc.area, enc.parts, enc.holes, int(edited), time.time(),
                 annotation_id))
        return self.get_annotation(annotation_id)

    def set_annotation_category(self, annotation_id: int, category_id: int) -> Annotation:
        """Relabel an annotation (counts as a person's edit)."""
        self.get_category(category_id)
        with self._write() as conn:
            if conn.execute("UPDATE annotations SET category_id = ?, edited = 1, updated_at = ? WHERE id = ?",
                            (category_id, time.time(), annotation_id)).rowcount == 0:
                raise ProjectError(f"no annotation with id {annotation_id} in this project")
        return self.get_annotation(annotation_id)

    def set_annotation_score(self, annotation_id: int, score: float | None) -> None:
        with self._write() as conn:
            if conn.execute("UPDATE annotations SET score = ?, updated_at = ? WHERE id = ?",
                            (score, time.time(), annotation_id)).rowcount == 0:
                raise ProjectError(f"no annotation with id {annotation_id} in this project")

    def delete_annotation(self, annotation_id: int) -> None:
        with self._write() as conn:
            if conn.execute("DELETE FROM annotations WHERE id = ?", (annotation_id,)).rowcount == 0:
                raise ProjectError(f"no annotation with id {annotation_id} in this project")

    # ------------------------------------------------------------------ bulk reads for exporters
    def iter_annotation_rows(self, image_ids: Sequence[int] | None = None,
                             columns: str = "id, image_id, category_id") -> Iterator[tuple]:
        """Stream raw annotation rows ordered by (image_id, id), for exporters. ``columns`` is a
        comma-separated list of column names of the annotations table (trusted, not user input).

        Reads through its own read-only connection: a consistent snapshot (WAL), and the export can
        run in a worker thread while the GUI keeps saving edits through the main connection."""
        with self._lock:
            if self._conn is None:
                raise ProjectError(f"project {self.path} is closed")
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        try:
            conn.execute("BEGIN")  # one snapshot for the whole stream
            if image_ids is None:
                yield from conn.execute(f"SELECT {columns} FROM annotations ORDER BY image_id, id")
                return
            ids = sorted(set(int(i) for i in image_ids))
            for start in range(0, len(ids), 500):  # keep under SQLite's variable limit
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                yield from conn.execute(f"SELECT {columns} FROM annotations WHERE image_id IN ({marks}) "
                                        "ORDER BY image_id, id", chunk)
        finally:
            conn.close()
