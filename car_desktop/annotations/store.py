"""The project store: one SQLite file (WAL) holding images, categories, annotations and settings.

``Project`` is the only writer API. Every public method that changes something is one transaction
(``batch()`` groups several into one), so killing the process at any moment leaves either the old or
the new state. Masks are stored as compressed RLE (see mask_codec) and decoded only on request;
listing an image's annotations reads small rows through an index. The object is safe to share
between threads (one connection, one lock); other processes may read and write the file too: a
writer that finds it busy waits (announced, bounded: see ``schema.begin_immediate``).

A new project is built in a temporary file and linked into place, so a crash never leaves a
half-made project and two processes creating the same project end with one valid file (the loser
opens the winner's). An empty file (left by an older version killed while creating) counts as not
created. A project that cannot be written (read-only or immutable file) opens only with
``readonly=True``. Files that could not be added or auto-labelled are kept in the project
(``record_failure`` / ``list_failures``), and images being auto-labelled are claimed
(``claim_image``), so two auto-label processes on one project share the work instead of both
doing all of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import secrets
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from .. import imagefiles
from ..engine.errors import ImageLoadError
from ..errors import NotLocalError
from ..fileio import commit_file, dumps_strict
from ..imagesource import LocalImages, RemoteImages, canonical_root, is_uri, open_source, under_root
from ..safepaths import OutputGuard, UnsafePathError, printable, safe_relative_path
from . import mask_codec, schema
from .errors import (
    MaskError,
    ProjectEmptyError,
    ProjectError,
    ProjectExistsError,
    ProjectNotFoundError,
    ProjectReadOnlyError,
)
from .models import (
    IMAGE_STATUSES,
    SOURCES,
    Annotation,
    Category,
    FileFailure,
    ImageRecord,
    ImageStatus,
    RelinkReport,
)
from .palette import color_for_id, format_color, parse_color
from .provenance import Provenance

log = logging.getLogger(__name__)

#: A claim older than this is taken over even if its process seems alive (another computer's
#: process on a shared folder cannot be checked; no single image takes hours).
CLAIM_TTL_S = 6 * 3600.0

_ANN_COLS = ("id, image_id, category_id, score, source, edited, area, bbox_x, bbox_y, bbox_w, bbox_h, "
             "parts, holes, provenance, created_at, updated_at")
_IMG_COLS = "id, rel_path, width, height, content_hash, status"
_FAIL_COLS = "rel_path, stage, reason, failed_at, attempts, file_size, content_hash, run_key"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def file_hash(path: Path) -> str:
    """SHA-256 of the file's bytes (hex): how moved images are recognised."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def single_line(text: str) -> str:
    """``text`` with control characters (NUL, newlines, tabs, ...) turned into spaces, runs of white
    space collapsed and anything that is not valid UTF-8 escaped: safe as a category name, a line of
    labels.txt or a log line."""
    return " ".join(_CONTROL.sub(" ", printable(text)).split())


def _row_to_image(row: tuple) -> ImageRecord:
    return ImageRecord(id=row[0], rel_path=row[1], width=row[2], height=row[3], content_hash=row[4],
                       status=row[5])


def _row_to_annotation(row: tuple) -> Annotation:
    return Annotation(id=row[0], image_id=row[1], category_id=row[2], score=row[3], source=row[4],
                      edited=bool(row[5]), area=row[6], bbox=(row[7], row[8], row[9], row[10]),
                      parts=row[11], holes=row[12], provenance=Provenance.from_json(row[13]),
                      created_at=row[14], updated_at=row[15])


def _row_to_failure(row: tuple) -> FileFailure:
    return FileFailure(rel_path=row[0], stage=row[1], reason=row[2], failed_at=row[3], attempts=row[4],
                       file_size=row[5], content_hash=row[6], run_key=row[7])


def _new_id(cur: sqlite3.Cursor) -> int:
    """The id of the row an INSERT just added."""
    assert cur.lastrowid is not None  # set by every successful INSERT
    return cur.lastrowid


def _finite_score(score: float | None) -> float | None:
    if score is None:
        return None
    value = float(score)
    if not math.isfinite(value):
        log.warning("a score of %s is not a number a file can hold; stored as no score", value)
        return None
    return value


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def _sqlite_user_error(path: Path, exc: sqlite3.Error) -> ProjectError | None:
    """A ProjectError for SQLite failures the user can fix (disk full, read-only, I/O), else None."""
    text = str(exc).lower()
    if "readonly" in text or "read-only" in text:
        return ProjectReadOnlyError(f"project {path} cannot be written (read-only file or folder): {exc}")
    if "disk is full" in text or "database or disk is full" in text:
        return ProjectError(f"the disk holding project {path} is full; free some space and try again")
    if "disk i/o error" in text:
        return ProjectError(f"project {path} could not be written (disk I/O error); nothing was changed")
    if schema.is_busy(exc):
        return ProjectError(f"project {path} is busy (another program is writing to it); try again")
    return None


def _reason_without_path(message: str, path: Path | str) -> str:
    """An ImageLoadError message names the file; failure lists name it already."""
    for prefix in (f"{path}: ", f"{path} "):
        if message.startswith(prefix):
            return message[len(prefix):].rstrip(".")
    return message


def _replace_if_empty(tmp: Path, path: Path) -> bool:
    """Rename ``tmp`` over ``path`` if ``path`` is still an empty regular file, holding an exclusive
    lock on it meanwhile, so of two processes doing this only the first replaces it (the second
    finds the name no longer leads to the empty file it locked). POSIX only; elsewhere False."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        mine = os.fstat(fd)
        try:
            there = os.stat(path)
        except FileNotFoundError:
            return False
        if (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino) or mine.st_size != 0 \
                or not stat.S_ISREG(mine.st_mode):
            return False
        commit_file(tmp, path)
        return True
    finally:
        os.close(fd)


class Project:
    """An open project file. Create with ``Project.create`` (or ``open_or_create``), open with
    ``Project.open``; close with ``close()`` or use it as a context manager."""

    #: Called with the "project busy, waiting..." line when a write has to wait (None: log a warning).
    #: Set it on an instance, or on the class as a ``staticmethod``.
    busy_notice: Callable[[str], None] | None = None

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool = False) -> None:
        """Internal: use ``create`` or ``open``."""
        self.path = path
        self.readonly = readonly
        self._conn = conn
        self._lock = threading.RLock()
        self._depth = 0  # nesting of write transactions (batch inside a method)
        self._source: LocalImages | RemoteImages | None = None  # image_source(), opened once

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, path: str | os.PathLike, image_root: str | os.PathLike) -> Project:
        """Create a new project file at ``path`` whose images live under ``image_root``.

        Raises ProjectExistsError (a ProjectNotFoundError) if ``path`` already exists (never
        overwrites) and ProjectError if the folder of ``path`` cannot be written. The file appears
        complete or not at all.
        """
        path = Path(path)
        if path.exists() or path.is_symlink():
            raise ProjectExistsError(f"{path} already exists; open it instead, or choose another name")
        cls._build(path, image_root, replace_empty=False)
        log.info("created project %s (images under %s)", path, image_root)
        return cls.open(path)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, image_root: str | os.PathLike) -> tuple[Project, bool]:
        """Open ``path``, or create it with ``image_root`` if it does not exist or is empty (a
        creation that never finished). Safe when several processes do it at once: one creates, the
        others open the same file. Returns (project, created)."""
        path = Path(path)
        for _ in range(3):
            try:
                return cls.open(path), False
            except ProjectEmptyError:
                replace_empty = True
            except ProjectNotFoundError as exc:
                if path.exists() or path.is_symlink():
                    raise exc from None
                replace_empty = False
            if cls._build(path, image_root, replace_empty=replace_empty):
                log.info("created project %s (images under %s)", path, image_root)
                return cls.open(path), True
        return cls.open(path), False

    @classmethod
    def _build(cls, path: Path, image_root: str | os.PathLike, *, replace_empty: bool) -> bool:
        """Build a fresh project in a temporary file beside ``path`` and link it into place. Returns
        False when another process put a project there first (or, with ``replace_empty``, filled
        the empty file first); raises ProjectExistsError when a non-project is in the way. An
        ``s3://`` / ``gs://`` root is stored as ``image_root_uri``, canonical (no credentials)."""
        uri = canonical_root(image_root) if is_uri(image_root) else None  # a bad URI fails before any file
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise ProjectError(f"cannot create project {path}: the folder {folder} does not exist")
        tmp = folder / f".{path.name}.{secrets.token_hex(4)}.creating"
        try:
            conn = cls._connect(tmp)
            try:
                schema.migrate(conn, tmp)
                rel: str | None = None
                if uri is None:
                    root = Path(image_root).resolve()
                    try:
                        rel = os.path.relpath(root, path.resolve().parent)
                    except ValueError:  # another drive on Windows
                        rel = None
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO meta VALUES ('created_at', ?)", (repr(time.time()),))
                conn.execute("INSERT INTO meta VALUES ('app', 'car-desktop')")
                if uri is not None:
                    conn.execute("INSERT INTO meta VALUES ('image_root_uri', ?)", (uri,))
                else:
                    conn.execute("INSERT INTO meta VALUES ('image_root', ?)", (str(root),))
                if rel is not None:
                    conn.execute("INSERT INTO meta VALUES ('image_root_rel', ?)", (rel,))
                conn.execute("COMMIT")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()  # the last connection: SQLite folds the log in and removes -wal/-shm
            return cls._link_into_place(tmp, path, replace_empty)
        except sqlite3.Error as exc:
            raise ProjectError(f"cannot create project {path}: {exc}") from None
        except OSError as exc:
            raise ProjectError(f"cannot create project {path}: {exc.strerror or exc}") from None
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    @staticmethod
    def _link_into_place(tmp: Path, path: Path, replace_empty: bool) -> bool:
        if replace_empty:
            return _replace_if_empty(tmp, path)
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists: never overwrites
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if path.exists():
                return False
            os.rename(tmp, path)
            return True

    @classmethod
    def open(cls, path: str | os.PathLike, *, readonly: bool = False) -> Project:
        """Open an existing project, upgrading an older schema in place (one transaction per step).

        A missing, empty, corrupt, foreign (another program's SQLite file) or newer-schema file, a
        folder or a pipe raises the matching ProjectError subclass and is left byte-for-byte
        unchanged: it is checked read-only before it is opened for writing. A file that cannot be
        written raises ProjectReadOnlyError unless ``readonly`` (then every change raises it).
        """
        path = Path(path)
        version = schema.check_readable(path)
        if readonly:
            if version < schema.SCHEMA_VERSION:
                raise ProjectReadOnlyError(
                    f"{path} uses an older project format and must be upgraded before it can be read; "
                    "open it once where it can be written")
            conn = sqlite3.connect(schema.read_only_uri(path), uri=True, isolation_level=None,
                                   check_same_thread=False)
            return cls(path, conn, readonly=True)
        if not os.access(path, os.W_OK) or not os.access(path.parent if str(path.parent) else ".", os.W_OK):
            raise ProjectReadOnlyError(
                f"project {path} cannot be written (the file or its folder is read-only, or it is marked "
                "immutable); nothing was changed. Exporting works read-only; to change it, copy it somewhere "
                "writable")
        conn = cls._connect(path)
        try:
            schema.migrate(conn, path)
        except BaseException:
            conn.close()
            raise
        return cls(path, conn)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a method is exactly one transaction.
        # A short busy timeout: SQLite polls within it; begin_immediate repeats it with a notice.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=1.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a killed process (it is in the OS page cache); only
            # a power cut may lose the last commits, never corrupt the file.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                if not self.readonly:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise ProjectError(f"project {self.path} is closed")
            if self.readonly:
                raise ProjectReadOnlyError(f"project {self.path} is open read-only; nothing can be changed")
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            try:
                schema.begin_immediate(self._conn, self.path, notice=self.busy_notice)
            except sqlite3.Error as exc:
                raise (_sqlite_user_error(self.path, exc) or exc) from None
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            else:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                    raise (_sqlite_user_error(self.path, exc) or exc) from None
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

    def output_guard(self, force: bool = False) -> OutputGuard:
        """The check every export runs on its output paths: never this project (or its -wal/-shm),
        never an input image (the project's images, files that failed to be added, and clips),
        never inside the image folder unless ``force``. Images in an object store are never local
        files, so only the project itself is protected then."""
        if self.image_root_uri is not None:
            return OutputGuard(project=self.path, force=force)
        root = self.image_root

        def inputs() -> list[Path]:
            rels = [r[0] for r in self._read("SELECT rel_path FROM images WHERE video_id IS NULL")]
            rels += [r[0] for r in self._read("SELECT rel_path FROM failures")]
            rels += [r[0] for r in self._read("SELECT rel_path FROM videos")]
            return [root / rel for rel in rels]

        return OutputGuard(project=self.path, image_root=root, inputs=inputs, force=force)

    # ------------------------------------------------------------------ meta and settings
    @property
    def image_root_uri(self) -> str | None:
        """The ``s3://`` / ``gs://`` folder the images are in (canonical), None for a local folder."""
        rows = self._read("SELECT value FROM meta WHERE key = 'image_root_uri'")
        return rows[0][0] if rows else None

    def image_source(self) -> LocalImages | RemoteImages:
        """Where the images are read from (``car_desktop.imagesource``), local or remote; kept while the
        root is unchanged, so a remote file system is opened once."""
        root = self.image_root_uri or str(self.image_root)
        cached = self._source
        if cached is None or cached.root != root:
            cached = self._source = open_source(root)
        return cached

    @property
    def image_root(self) -> Path:
        """Folder the images' ``rel_path`` are relative to. If the stored absolute folder is gone but
        the same relative position from the project file exists (both moved together), that is used.
        NotLocalError when the images are in an object store (``image_root_uri``)."""
        rows = dict(self._read("SELECT key, value FROM meta WHERE key IN ('image_root', 'image_root_rel', "
                               "'image_root_uri')"))
        if rows.get("image_root_uri"):
            raise NotLocalError(f"the images of {self.path} are in {rows['image_root_uri']}, not in a local folder; "
                                f"this needs them on this computer (copy them, then: car-desktop relink {self.path} "
                                "FOLDER)")
        root = Path(rows.get("image_root", "."))
        rel = rows.get("image_root_rel")
        if not root.is_dir() and rel is not None:
            candidate = (self.path.parent / rel).resolve()
            if candidate.is_dir():
                return candidate
        return root

    @image_root.setter
    def image_root(self, value: str | os.PathLike) -> None:
        if is_uri(value):
            uri = canonical_root(value)
            with self._write() as conn:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('image_root_uri', ?)", (uri,))
                conn.execute("DELETE FROM meta WHERE key IN ('image_root', 'image_root_rel')")
            return
        root = Path(value).resolve()
        try:
            rel = os.path.relpath(root, self.path.resolve().parent)
        except ValueError:  # another drive on Windows
            rel = None
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('image_root', ?)", (str(root),))
            if rel is not None:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('image_root_rel', ?)", (rel,))
            conn.execute("DELETE FROM meta WHERE key = 'image_root_uri'")

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
                    text = dumps_strict(value)
                except TypeError as exc:
                    raise ProjectError(f"setting {key!r} cannot be saved: {exc}") from None
                conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, text))

    # ------------------------------------------------------------------ images
    def _rel_path(self, path: str | os.PathLike, root: Path) -> str:
        p = Path(path)
        if not p.is_absolute():
            try:
                return safe_relative_path(p.as_posix())
            except UnsafePathError as exc:
                raise ProjectError(f"image {p}: {exc}") from None
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise ProjectError(f"image {p} is not inside the project's image folder {root}") from None

    def add_images(self, paths: str | os.PathLike | Iterable[str | os.PathLike], *,
                   recursive: bool = True) -> list[ImageRecord]:
        """Add images, or every image file found in a folder (scanned recursively by default).

        Paths may be absolute (inside ``image_root``) or relative to it. Already known paths are
        returned as they are. An explicitly named unreadable image raises ProjectError; files found
        by a folder scan that cannot be added (unreadable, over the pixel limit, not an image) are
        skipped and kept in the project's failure list (``list_failures``). Files are read outside
        the transaction, which is one for the whole call.
        """
        if isinstance(paths, (str, os.PathLike)) and Path(paths).is_dir():
            return self.add_folder(paths, recursive=recursive)[0]
        items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        root = self.image_root
        records, failures = self.add_files([self._rel_path(item, root) for item in items])
        if failures:
            raise ProjectError(f"cannot add image {root / failures[0].rel_path}: {failures[0].reason}")
        return records

    def add_folder(self, folder: str | os.PathLike, *, recursive: bool = True,
                   select: Callable[[str], bool] | None = None,
                   chunk: int = 200) -> tuple[list[ImageRecord], list[FileFailure]]:
        """Add the image files under ``folder`` (inside ``image_root``), ``chunk`` new files per
        transaction; ``select(rel_path)`` may leave some out (shards). Returns the records (sorted
        by relative path, known ones included) and the files that could not be added, each with its
        reason (also kept in the project). Never raises for one bad file. For images in an object
        store ``folder`` is the root's URI or a prefix under it."""
        source = self.image_source()
        if source.remote:
            under = under_root(canonical_root(folder), source.root) if is_uri(folder) else None
            if under is None:
                raise ProjectError(f"{folder} is not inside the project's image folder {source.root}; "
                                   f"use a new project for {folder}")
            rels = source.scan(under, recursive=recursive).files
        else:
            rels = self._scan_local(folder, recursive)
        if select is not None:
            rels = [r for r in rels if select(r)]
        records: list[ImageRecord] = []
        failures: list[FileFailure] = []
        for start in range(0, len(rels), chunk):
            got, failed = self.add_files(rels[start:start + chunk])
            records.extend(got)
            failures.extend(failed)
        records.sort(key=lambda r: r.rel_path)
        return records, failures

    def _scan_local(self, folder: str | os.PathLike, recursive: bool) -> list[str]:
        root = self.image_root.resolve()
        base = Path(folder).resolve()
        try:
            base_rel = base.relative_to(root)
        except ValueError:
            raise ProjectError(f"{folder} is not inside the project's image folder {root}; "
                               f"use a new project for {folder}") from None
        scan = LocalImages(root).scan(base_rel.as_posix() if base_rel.parts else "", recursive=recursive)
        for path, reason in scan.unreadable:
            log.warning("cannot look inside %s: %s", path, reason)
        return scan.files

    def add_files(self, rel_paths: Sequence[str]) -> tuple[list[ImageRecord], list[FileFailure]]:
        """Add images by relative path (known ones are returned as they are). Headers and hashes are
        read before the transaction; a file that cannot be added is recorded as an 'add' failure
        and returned with its reason, the others are added in one transaction."""
        source = self.image_source()
        prepared: list[tuple[str, int, int, str]] = []
        known: list[ImageRecord] = []
        failed: list[tuple[str, str]] = []
        seen: set[str] = set()
        for rel in rel_paths:
            rel = Path(rel).as_posix()
            if rel in seen:
                continue
            seen.add(rel)
            rec = self.find_image(rel)
            if rec is not None:
                known.append(rec)
                continue
            full = source.location(rel)
            try:
                (width, height), digest = source.probe(rel)  # remote: one read gives both
            except ImageLoadError as exc:
                failed.append((rel, _reason_without_path(str(exc), full)))
                continue
            except OSError as exc:
                failed.append((rel, f"cannot be read ({exc.strerror or exc})"))
                continue
            prepared.append((rel, width, height, digest))
        added: list[ImageRecord] = []
        with self._write():
            for rel, width, height, digest in prepared:
                try:
                    added.append(self.add_image_entry(rel, width, height, digest))
                except ProjectError as exc:  # checked before anything is inserted: nothing to undo
                    failed.append((rel, str(exc)))
                    continue
                self._clear_failure(rel)
        failures = [self._failure_entry(rel, "add", reason) for rel, reason in failed]
        if failures:
            with self._write():
                for f in failures:
                    self._store_failure(f)
        for f in failures:  # info, not warning: the caller reports them (a summary, the file list)
            log.info("skipping %s: %s", f.rel_path, f.reason)
        return known + added, failures

    def add_image_entry(self, rel_path: str, width: int, height: int,
                        content_hash: str | None = None, status: str = "new") -> ImageRecord:
        """Add one image by its metadata without reading the file (importers, merges, benchmarks).
        Returns the existing record if ``rel_path`` is known. The path must be a plain relative
        path inside the image folder, and the size within the pixel limit (ProjectError if not)."""
        if isinstance(width, bool) or isinstance(height, bool) or not (
                isinstance(width, (int, np.integer)) and isinstance(height, (int, np.integer))):
            raise ProjectError(f"image {rel_path} has a size that is not a pair of integers")
        if width <= 0 or height <= 0:
            raise ProjectError(f"image {rel_path} has an impossible size {width}x{height}")
        if int(width) * int(height) > imagefiles.max_pixels():
            raise ProjectError(imagefiles.too_big_message(Path(str(rel_path)), (int(width), int(height))))
        if status not in IMAGE_STATUSES:
            raise ProjectError(f"unknown image status {status!r}; use one of {', '.join(IMAGE_STATUSES)}")
        try:
            rel_path = safe_relative_path(rel_path)
        except UnsafePathError as exc:
            raise ProjectError(f"image {str(rel_path)[:200]!r}: {exc}") from None
        with self._write() as conn:
            existing = self.find_image(rel_path)
            if existing is not None:
                return existing
            cur = conn.execute(
                "INSERT INTO images (rel_path, width, height, content_hash, status, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (rel_path, int(width), int(height), content_hash, status,
                                              time.time()))
            return ImageRecord(_new_id(cur), rel_path, int(width), int(height), content_hash,
                               cast(ImageStatus, status))  # checked against IMAGE_STATUSES above

    def find_image(self, rel_path: str) -> ImageRecord | None:
        rel = Path(rel_path).as_posix()
        if printable(rel) != rel:  # not valid UTF-8: never stored, so never found
            return None
        rows = self._read(f"SELECT {_IMG_COLS} FROM images WHERE rel_path = ?", (rel,))
        return _row_to_image(rows[0]) if rows else None

    def get_image(self, image_id: int) -> ImageRecord:
        rows = self._read(f"SELECT {_IMG_COLS} FROM images WHERE id = ?", (image_id,))
        if not rows:
            raise ProjectError(f"no image with id {image_id} in this project")
        return _row_to_image(rows[0])

    def list_images(self, status: str | None = None, *, include_frames: bool = False) -> list[ImageRecord]:
        """All images ordered by rel_path, optionally only those with ``status``. The frames of clips
        (``video_store``) are images too, left out unless ``include_frames``."""
        where = [] if include_frames else ["video_id IS NULL"]
        params: tuple = ()
        if status is not None:
            where.append("status = ?")
            params = (status,)
        sql = f"SELECT {_IMG_COLS} FROM images{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY rel_path"
        return [_row_to_image(r) for r in self._read(sql, params)]

    def count_images(self, *, include_frames: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM images" + ("" if include_frames else " WHERE video_id IS NULL")
        return int(self._read(sql)[0][0])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Rows of a read-only SQL statement: for the modules of this package that keep tables of
        their own (``video_store``). Writes go through ``batch()``."""
        return self._read(sql, params)

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

    def review_queue(self, limit: int | None = None) -> list[tuple[ImageRecord, float]]:
        """Auto-labelled images, the least confident first (lowest CaR score among their masks)."""
        sql = (f"SELECT {', '.join('i.' + c.strip() for c in _IMG_COLS.split(','))}, MIN(a.score) AS s "
               "FROM images i JOIN annotations a ON a.image_id = i.id "
               "WHERE i.status = 'auto' AND i.video_id IS NULL AND a.score IS NOT NULL GROUP BY i.id "
               "ORDER BY s ASC, i.id")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [(_row_to_image(r[:6]), float(r[6])) for r in self._read(sql)]

    def relink(self, new_image_root: str | os.PathLike, *, require_found: bool = False) -> RelinkReport:
        """Point the project at a new image folder (or an ``s3://`` / ``gs://`` one). Images whose rel_path
        exists there keep it; in a local folder the others are found by content hash anywhere under it
        and their rel_path updated. One transaction; images not found are listed in the report and kept.
        ``require_found``: ProjectError, nothing changed, when not one of the images is there."""
        if is_uri(new_image_root):
            return self._relink_remote(RemoteImages(str(new_image_root)), require_found)
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
            for p in imagefiles.scan_folder(root).files:
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
        if require_found and images and not report.found_by_path + report.found_by_hash:
            raise ProjectError(f"none of the {len(images)} images of {self.path} is in {root}; nothing was changed")
        with self._write() as conn:
            # Two passes so swapping two paths cannot trip the UNIQUE constraint.
            for image_id in moves:
                conn.execute("UPDATE images SET rel_path = ? WHERE id = ?", (f"\x00relink/{image_id}", image_id))
            for image_id, rel in moves.items():
                conn.execute("UPDATE images SET rel_path = ? WHERE id = ?", (rel, image_id))
            self.image_root = root
        return report

    def _relink_remote(self, source: RemoteImages, require_found: bool) -> RelinkReport:
        """``relink`` to an object store: images are found by path only (hashing would read every file)."""
        images = self.list_images()
        there = set(source.scan().files)
        report = RelinkReport(found_by_path=sum(im.rel_path in there for im in images),
                              missing=[im.rel_path for im in images if im.rel_path not in there])
        if require_found and images and not report.found_by_path:
            raise ProjectError(f"none of the {len(images)} images of {self.path} is in {source.root}; "
                               "nothing was changed")
        self.image_root = source.root
        return report

    # ------------------------------------------------------------------ failures
    def _failure_entry(self, rel_path: str, stage: str, reason: str, run_key: str | None = None) -> FileFailure:
        """A failure with the file's current size and hash (read now, outside any transaction)."""
        source = self.image_source()
        size = digest = None
        if source.remote:
            size, digest = source.fingerprint(rel_path) or (None, None)
        else:
            full = Path(source.location(rel_path))
            with contextlib.suppress(OSError):
                st = os.stat(full)
                if stat.S_ISREG(st.st_mode):  # hash a regular file only (never open a pipe)
                    size = st.st_size
                    digest = file_hash(full)
        return FileFailure(printable(rel_path), stage, single_line(reason), time.time(), 1, size, digest,  # type: ignore[arg-type]
                           run_key)

    def _store_failure(self, f: FileFailure) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO failures (rel_path, stage, reason, file_size, content_hash, run_key, failed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(rel_path) DO UPDATE SET stage = excluded.stage, "
                "reason = excluded.reason, file_size = excluded.file_size, content_hash = excluded.content_hash, "
                "run_key = excluded.run_key, failed_at = excluded.failed_at, attempts = failures.attempts + 1",
                (f.rel_path, f.stage, f.reason, f.file_size, f.content_hash, f.run_key, f.failed_at))

    def _clear_failure(self, rel_path: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM failures WHERE rel_path = ?", (printable(rel_path),))

    def record_failure(self, rel_path: str, reason: str, stage: str = "label",
                       run_key: str | None = None) -> FileFailure:
        """Keep ``rel_path`` in the failure list with its reason and the file's size and hash now."""
        f = self._failure_entry(rel_path, stage, reason, run_key)
        self._store_failure(f)
        return f

    def clear_failure(self, rel_path: str) -> None:
        self._clear_failure(rel_path)

    def list_failures(self, stage: str | None = None) -> list[FileFailure]:
        """Files that could not be added ('add') or auto-labelled ('label'), by relative path."""
        if stage is None:
            rows = self._read(f"SELECT {_FAIL_COLS} FROM failures ORDER BY rel_path")
        else:
            rows = self._read(f"SELECT {_FAIL_COLS} FROM failures WHERE stage = ? ORDER BY rel_path", (stage,))
        return [_row_to_failure(r) for r in rows]

    def get_failure(self, rel_path: str) -> FileFailure | None:
        rows = self._read(f"SELECT {_FAIL_COLS} FROM failures WHERE rel_path = ?", (printable(rel_path),))
        return _row_to_failure(rows[0]) if rows else None

    def failure_unchanged(self, rel_path: str) -> FileFailure | None:
        """The stored failure of ``rel_path`` if the file still has the size and SHA-256 it had when
        it failed (so trying it again would fail the same way), else None."""
        f = self.get_failure(rel_path)
        if f is None:
            return None
        now = self._failure_entry(rel_path, f.stage, f.reason)
        same = now.file_size == f.file_size and now.content_hash == f.content_hash
        return f if same else None

    def failed_image_ids(self, without_annotations: bool = True) -> set[int]:
        """Images whose last auto-labelling failed (optionally only those with no annotation at all)."""
        sql = "SELECT i.id FROM images i JOIN failures f ON f.rel_path = i.rel_path"
        if without_annotations:
            sql += " WHERE NOT EXISTS (SELECT 1 FROM annotations a WHERE a.image_id = i.id)"
        return {r[0] for r in self._read(sql)}

    # ------------------------------------------------------------------ claims
    @staticmethod
    def new_claim_owner() -> str:
        """A token naming one auto-label run: host, process id and a random part."""
        return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"

    def claim_image(self, image_id: int, owner: str) -> str | None:
        """Claim an image for auto-labelling by ``owner``. None when the claim is now ``owner``'s;
        otherwise a description of the run that holds it. A claim whose process is gone (same
        computer) or that is older than CLAIM_TTL_S is taken over."""
        host = socket.gethostname()
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT owner, host, pid, claimed_at FROM claims WHERE image_id = ?",
                               (image_id,)).fetchone()
            if row is not None and row[0] != owner:
                _, held_host, held_pid, at = row
                stale = (held_host == host and not _pid_alive(int(held_pid))) or now - float(at) > CLAIM_TTL_S
                if not stale:
                    return f"process {held_pid} on {held_host}"
            pid = os.getpid()
            conn.execute("INSERT OR REPLACE INTO claims (image_id, owner, host, pid, claimed_at) "
                         "VALUES (?, ?, ?, ?, ?)", (image_id, owner, host, pid, now))
        return None

    def release_claim(self, image_id: int, owner: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM claims WHERE image_id = ? AND owner = ?", (image_id, owner))

    def release_claims(self, owner: str) -> None:
        """Drop every claim of ``owner`` (the end of a run, however it ended)."""
        with self._write() as conn:
            conn.execute("DELETE FROM claims WHERE owner = ?", (owner,))

    # ------------------------------------------------------------------ categories
    def _category_from_row(self, row: tuple) -> Category:
        color = parse_color(row[3]) if row[3] else color_for_id(row[0])
        return Category(id=row[0], name=row[1], synonyms=tuple(json.loads(row[2])), color=color)

    @staticmethod
    def _clean_names(name: str, synonyms: Iterable[str]) -> tuple[str, list[str]]:
        # Control characters (a newline, NUL, ...) would break one-name-per-line files (labels.txt).
        parts = [single_line(p) for p in name.split("|")]
        for s in synonyms:
            parts.extend(single_line(p) for p in s.split("|"))
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
                new_id = _new_id(cur)
                return Category(new_id, head, tuple(syn), color_for_id(new_id))
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
        rows = self._read("SELECT id, name, synonyms, color FROM categories WHERE name = ?", (single_line(name),))
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

    def delete_unused_categories(self, category_ids: Iterable[int]) -> list[tuple]:
        """Delete those of ``category_ids`` no row refers to (no annotation, no clip object: any table
        with a ``category_id``); returns their rows, for ``restore_categories``."""
        out: list[tuple] = []
        with self._write() as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) p "
                "WHERE m.type = 'table' AND p.name = 'category_id'")]
            for cid in category_ids:
                row = conn.execute("SELECT id, name, synonyms, color, created_at FROM categories WHERE id = ?",
                                   (cid,)).fetchone()
                if row is None or any(conn.execute(f'SELECT 1 FROM "{t}" WHERE category_id = ? LIMIT 1',
                                                   (cid,)).fetchone() for t in tables):
                    continue
                conn.execute("DELETE FROM categories WHERE id = ?", (cid,))
                out.append(tuple(row))
        return out

    def restore_categories(self, rows: Sequence[tuple]) -> None:
        """Put back categories ``delete_unused_categories`` removed, with their ids (a redo); one whose
        name has been taken again meanwhile is left out."""
        with self._write() as conn:
            for row in rows:
                conn.execute("INSERT OR IGNORE INTO categories (id, name, synonyms, color, created_at) "
                             "VALUES (?, ?, ?, ?, ?)", tuple(row))

    # ------------------------------------------------------------------ annotations
    def _image_shape(self, image_id: int) -> tuple[int, int]:
        im = self.get_image(image_id)
        return im.height, im.width

    def encode_mask(self, image_id: int, mask: np.ndarray) -> mask_codec.EncodedMask:
        """Check a mask against the image's size and encode it (call outside a transaction: it is the
        slow part of storing a mask)."""
        return mask_codec.encode(mask_codec.as_bool_mask(mask, self._image_shape(image_id)))

    def _insert(self, conn: sqlite3.Connection, image_id: int, category_id: int, enc: mask_codec.EncodedMask,
                score: float | None, source: str, provenance: Provenance | None, edited: bool) -> int:
        if source not in SOURCES:
            raise ProjectError(f"unknown annotation source {source!r}; use one of {', '.join(SOURCES)}")
        if conn.execute("SELECT 1 FROM categories WHERE id = ?", (category_id,)).fetchone() is None:
            raise ProjectError(f"no category with id {category_id} in this project")
        try:
            prov = (provenance or Provenance()).to_json()
        except (TypeError, ValueError) as exc:
            raise ProjectError(f"provenance cannot be saved: {exc}") from None
        now = time.time()
        x, y, w, h = enc.bbox
        cur = conn.execute(
            "INSERT INTO annotations (image_id, category_id, height, width, rle, crop_rle, bbox_x, bbox_y, "
            "bbox_w, bbox_h, area, parts, holes, score, source, edited, provenance, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (image_id, category_id, enc.height, enc.width, enc.rle, enc.crop_rle, x, y, w, h, enc.area,
             enc.parts, enc.holes, _finite_score(score), source, int(edited), prov, now, now))
        return _new_id(cur)

    def add_annotation(self, image_id: int, category_id: int, mask: np.ndarray, score: float | None = None,
                       source: str = "manual", provenance: Provenance | None = None, *,
                       edited: bool | None = None) -> Annotation:
        """Add one annotation. ``mask`` is (height, width) of the image, bool or 0/1.

        ``edited`` defaults to True for 'manual' annotations (a person made them) and False otherwise.
        """
        enc = self.encode_mask(image_id, mask)  # outside the lock: encoding is the slow part
        with self._write() as conn:
            ann_id = self._insert(conn, image_id, category_id, enc, score, source, provenance,
                                  source == "manual" if edited is None else edited)
        return self.get_annotation(ann_id)

    def add_encoded_annotation(self, image_id: int, category_id: int, enc: mask_codec.EncodedMask,
                               score: float | None, source: str, provenance: Provenance | None,
                               edited: bool) -> int:
        """Add an already encoded mask (importers, ``car_results``); returns the new id. Checks the size only."""
        if (enc.height, enc.width) != self._image_shape(image_id):
            raise MaskError(f"mask is {enc.width}x{enc.height} but image {image_id} is not")
        with self._write() as conn:
            return self._insert(conn, image_id, category_id, enc, score, source, provenance, edited)

    def find_same_annotation(self, image_id: int, category_id: int, enc: mask_codec.EncodedMask) -> int | None:
        """The id of an annotation of this image and category with exactly this mask, if any (the crop
        RLE is canonical, so equal masks have equal crops whatever RLE they were imported from)."""
        x, y, w, h = enc.bbox
        rows = self._read("SELECT id FROM annotations WHERE image_id = ? AND category_id = ? AND area = ? AND "
                          "bbox_x = ? AND bbox_y = ? AND bbox_w = ? AND bbox_h = ? AND crop_rle = ? LIMIT 1",
                          (image_id, category_id, enc.area, x, y, w, h, enc.crop_rle))
        return int(rows[0][0]) if rows else None

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

    def set_annotation_provenance(self, annotation_id: int, provenance: Provenance) -> None:
        """Replace an annotation's provenance record (a verdict such as ``accepted``)."""
        with self._write() as conn:
            if conn.execute("UPDATE annotations SET provenance = ?, updated_at = ? WHERE id = ?",
                            (provenance.to_json(), time.time(), annotation_id)).rowcount == 0:
                raise ProjectError(f"no annotation with id {annotation_id} in this project")

    def set_annotation_score(self, annotation_id: int, score: float | None) -> None:
        """Set the score; a non-finite one (inf, nan) is stored as no score."""
        with self._write() as conn:
            if conn.execute("UPDATE annotations SET score = ?, updated_at = ? WHERE id = ?",
                            (_finite_score(score), time.time(), annotation_id)).rowcount == 0:
                raise ProjectError(f"no annotation with id {annotation_id} in this project")

    def set_annotation_edited(self, annotation_id: int, edited: bool) -> None:
        """Set or clear the 'edited by a person' flag (cleared when every edit of a CaR mask is undone)."""
        with self._write() as conn:
            if conn.execute("UPDATE annotations SET edited = ?, updated_at = ? WHERE id = ?",
                            (int(edited), time.time(), annotation_id)).rowcount == 0:
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
        conn = sqlite3.connect(schema.read_only_uri(self.path), uri=True, isolation_level=None)
        try:
            conn.execute("BEGIN")  # one snapshot for the whole stream
            if image_ids is None:
                yield from conn.execute(f"SELECT {columns} FROM annotations ORDER BY image_id, id")
                return
            ids = sorted({int(i) for i in image_ids})
            for start in range(0, len(ids), 500):  # keep under SQLite's variable limit
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                yield from conn.execute(f"SELECT {columns} FROM annotations WHERE image_id IN ({marks}) "
                                        "ORDER BY image_id, id", chunk)
        finally:
            conn.close()
