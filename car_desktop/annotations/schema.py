"""The project file format: SQLite tables, the schema version, migrations, the checks that refuse a
corrupt, foreign or newer file before anything in it is changed, and waiting for a busy file.

The file is stamped with ``PRAGMA application_id`` (so a foreign SQLite file is recognised) and
``PRAGMA user_version`` (the schema version). ``MIGRATIONS[v]`` upgrades version v to v + 1 and runs
inside the same transaction as the version bump, so an interrupted upgrade leaves the old file.

``check_readable`` looks at the file without changing it: a folder, a pipe or a device is refused
from ``stat`` alone (a pipe is never opened, so nothing hangs), an empty file is "not yet created",
the header is read as bytes, and SQLite opens it read-only (``immutable=1`` when no write-ahead log
exists, so no empty -wal/-shm files are left beside a file we refuse). Every table the schema
version promises must be there. ``begin_immediate`` takes the write lock, waiting with a visible
notice and a bound while another process holds it.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..fileio import dumps_strict, regular_file
from .auto_labels import AUTO_LABELS_SETTING, StoredMask, from_stored_masks
from .errors import (
    ProjectBusyError,
    ProjectCorruptError,
    ProjectEmptyError,
    ProjectError,
    ProjectForeignError,
    ProjectNotFoundError,
    ProjectSchemaError,
)
from .provenance import Provenance

log = logging.getLogger(__name__)

APPLICATION_ID = 0x43615244  # b"CaRD"
SCHEMA_VERSION = 4
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Settings key prefix of an image's removed-concept list (``car_results``): ``car.removed.<image id>``.
REMOVED_SETTING = "car.removed."

_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rel_path TEXT NOT NULL UNIQUE,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    content_hash TEXT,
    status TEXT NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'auto', 'reviewed')),
    added_at REAL NOT NULL
);
CREATE INDEX images_hash ON images(content_hash);
CREATE INDEX images_status ON images(status);
CREATE TABLE categories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    synonyms TEXT NOT NULL DEFAULT '[]',
    color TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE annotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    category_id INTEGER NOT NULL REFERENCES categories(id) ON DELETE CASCADE,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    rle BLOB NOT NULL,
    crop_rle BLOB NOT NULL,
    bbox_x INTEGER NOT NULL, bbox_y INTEGER NOT NULL, bbox_w INTEGER NOT NULL, bbox_h INTEGER NOT NULL,
    area INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    holes INTEGER NOT NULL,
    score REAL,
    source TEXT NOT NULL CHECK (source IN ('car', 'sam', 'manual', 'import')),
    edited INTEGER NOT NULL DEFAULT 0,
    provenance TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX annotations_image ON annotations(image_id);
CREATE INDEX annotations_category ON annotations(category_id);
"""

# Version 2: files that could not be read or labelled (kept so a rerun can skip unchanged ones and
# exports can leave them out), and images claimed by a running auto-label process.
_V2 = """
CREATE TABLE failures (
    rel_path TEXT PRIMARY KEY,
    stage TEXT NOT NULL CHECK (stage IN ('add', 'label')),
    reason TEXT NOT NULL,
    file_size INTEGER,
    content_hash TEXT,
    run_key TEXT,
    failed_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE claims (
    image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    claimed_at REAL NOT NULL
);
"""


def _run_script(sql: str) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        for stmt in sql.split(";"):
            if stmt.strip():
                conn.execute(stmt)
    return run


def _v1_provenance(old: dict[str, Any]) -> dict[str, Any]:
    """A provenance dict as versions before 3 wrote it (two shapes: the window's and the folder
    loop's) -> the fields of ``provenance.Provenance`` (record version 2)."""
    new: dict[str, Any] = {"version": 2}
    # The concept in the user's form: both old shapes kept CLIP's "a, b" text, the loop's as query_text.
    text = old.get("query_text") or old.get("concept")
    if isinstance(text, str) and text:
        new["concept"] = " | ".join(p.strip() for p in text.split(", ") if p.strip())
    status_text = old.get("status_text")
    status = old.get("status")
    if old.get("forced") or (isinstance(status_text, str) and status_text.startswith("force-kept")):
        status = "forced"
    elif isinstance(status_text, str) and status_text.startswith("kept without competition"):
        status = "kept_without_competition"
    if isinstance(status, str):
        new["status"] = status
    if isinstance(status_text, str):
        new["status_text"] = status_text
    for key in ("sam_accepted", "sam_iou", "models", "steps", "test_models", "run_key", "coco_id"):
        if old.get(key) is not None:
            new[key] = old[key]
    config = {**(old.get("config") or {}), **(old.get("thresholds") or {})}
    for key in ("preset", "sam_mode", "use_crf"):
        if key in old:
            config[key] = old[key]
    if config:
        new["config"] = config
    if old.get("imported_from") == "coco":
        new["origin"] = "coco"
    elif old.get("origin") == "autolabel":
        new["origin"] = "autolabel"
    elif text:
        new["origin"] = "window"
    if old.get("iscrowd"):
        new["iscrowd"] = True
    return new


def _to_v3(conn: sqlite3.Connection) -> None:
    """Version 3: one typed provenance record, the removed-concept lists under the key both the window
    and the folder loop use, and each image's auto-label record rebuilt from what is left of it."""
    rows = conn.execute("SELECT id, provenance FROM annotations").fetchall()
    for ann_id, text in rows:
        try:
            old = json.loads(text or "{}")
        except ValueError:
            old = {}
        new = _v1_provenance(old if isinstance(old, dict) else {})
        conn.execute("UPDATE annotations SET provenance = ? WHERE id = ?",
                     (json.dumps(new, ensure_ascii=False), ann_id))
    for key, text in conn.execute("SELECT key, value FROM settings WHERE key LIKE 'ui.removed_concepts.%'").fetchall():
        try:
            old_rows = json.loads(text)
        except ValueError:
            old_rows = []
        new_rows = [{"concept": " | ".join(p.strip() for p in str(r.get("query_text") or r.get("name", "")).split(", ")
                                           if p.strip()),
                     "status_text": r.get("status_text", "removed"), "score": r.get("score")}
                    for r in old_rows if isinstance(r, dict) and (r.get("query_text") or r.get("name"))]
        conn.execute("DELETE FROM settings WHERE key = ?", (key,))
        if new_rows:
            image_id = key.rsplit(".", 1)[1]
            conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)",
                         (f"{REMOVED_SETTING}{image_id}", json.dumps(new_rows, ensure_ascii=False)))
    _rebuild_auto_labels(conn)


def _rebuild_auto_labels(conn: sqlite3.Connection) -> None:
    """Best effort: each auto-labelled image's auto-label record from its CaR masks and removed list
    (``auto_labels.from_stored_masks`` says what can be recovered)."""
    masks: dict[int, list[StoredMask]] = {}
    settings: dict[int, dict[str, Any]] = {}
    for image_id, counts, score, edited, text, name, synonyms in conn.execute(
            "SELECT a.image_id, a.rle, a.score, a.edited, a.provenance, c.name, c.synonyms FROM annotations a "
            "JOIN categories c ON c.id = a.category_id WHERE a.source = 'car' ORDER BY a.id"):
        prov = Provenance.from_json(text)
        try:
            label = " | ".join([name, *json.loads(synonyms)])
        except (ValueError, TypeError):
            label = name
        masks.setdefault(image_id, []).append(
            StoredMask(prov.concept or label, prov.status, score, bytes(counts), bool(edited)))
        settings.setdefault(image_id, prov.config)
    removed: dict[int, list[tuple[str, Any]]] = {}
    for key, text in conn.execute("SELECT key, value FROM settings WHERE key LIKE ?", (f"{REMOVED_SETTING}%",)):
        try:
            image_id, rows = int(key[len(REMOVED_SETTING):]), json.loads(text)
        except ValueError:
            continue
        if not isinstance(rows, list):
            continue
        removed[image_id] = [(r["concept"], r.get("score")) for r in rows
                             if isinstance(r, dict) and isinstance(r.get("concept"), str)]
    for image_id, height, width in conn.execute("SELECT id, height, width FROM images").fetchall():
        if image_id in masks or image_id in removed:
            record = from_stored_masks(height, width, masks.get(image_id, ()), removed.get(image_id, ()),
                                       settings.get(image_id, {}))
            conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)",
                         (f"{AUTO_LABELS_SETTING}{image_id}", dumps_strict(record.to_dict())))


# Version 4: video. A clip (a video file, or a folder of numbered frames) is a row of ``videos``;
# each of its frames is an ``images`` row (video_id, frame_index) holding the frame's annotations like
# any image; a concept of a clip is one track (``video_tracks``); ``video_keys`` lists the frames CaR
# ran on, ``video_runs`` how far SAM 2 carried each object from each key frame (so a rerun redoes
# only what changed). See annotations/video_store.py.
_V4 = """
CREATE TABLE videos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rel_path TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('file', 'frames')),
    frame_count INTEGER NOT NULL CHECK (frame_count > 0),
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    fps REAL,
    variable_rate INTEGER NOT NULL DEFAULT 0,
    fingerprint TEXT,
    added_at REAL NOT NULL
);
ALTER TABLE images ADD COLUMN video_id INTEGER REFERENCES videos(id) ON DELETE CASCADE;
ALTER TABLE images ADD COLUMN frame_index INTEGER;
CREATE UNIQUE INDEX images_video_frame ON images(video_id, frame_index);
CREATE TABLE video_tracks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    category_id INTEGER NOT NULL REFERENCES categories(id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    UNIQUE (video_id, category_id)
);
CREATE TABLE video_keys (
    video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    frame_index INTEGER NOT NULL,
    run_key TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (video_id, frame_index)
);
CREATE TABLE video_runs (
    video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    category_id INTEGER NOT NULL REFERENCES categories(id) ON DELETE CASCADE,
    key_frame INTEGER NOT NULL,
    step INTEGER NOT NULL CHECK (step IN (-1, 1)),
    token TEXT NOT NULL,
    reach INTEGER NOT NULL,
    done_at REAL NOT NULL,
    PRIMARY KEY (video_id, category_id, key_frame, step)
);
"""


def _to_v4(conn: sqlite3.Connection) -> None:
    """Version 4: clips, their frames as images, tracks, key frames and propagation runs (``_V4``)."""
    _run_script(_V4)(conn)


#: MIGRATIONS[v] takes a connection at schema version v to v + 1 (v = 0 is a fresh file).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _run_script(_V1), 1: _run_script(_V2), 2: _to_v3, 3: _to_v4}

#: The tables each schema version has; a file missing one is damaged.
TABLES: dict[int, frozenset[str]] = {
    1: frozenset({"meta", "settings", "images", "categories", "annotations"}),
    2: frozenset({"meta", "settings", "images", "categories", "annotations", "failures", "claims"}),
    3: frozenset({"meta", "settings", "images", "categories", "annotations", "failures", "claims"}),
    4: frozenset({"meta", "settings", "images", "categories", "annotations", "failures", "claims", "videos",
                  "video_tracks", "video_keys", "video_runs"}),
}

#: Longest wait for another process's write transaction before giving up (seconds).
DEFAULT_BUSY_TIMEOUT_S = 300.0
BUSY_TIMEOUT_ENV = "CAR_DESKTOP_BUSY_TIMEOUT"


def busy_timeout_s() -> float:
    try:
        return max(0.0, float(os.environ.get(BUSY_TIMEOUT_ENV, DEFAULT_BUSY_TIMEOUT_S)))
    except ValueError:
        return DEFAULT_BUSY_TIMEOUT_S


def is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def begin_immediate(conn: sqlite3.Connection, path: Path, timeout_s: float | None = None,
                    notice: Callable[[str], None] | None = None) -> None:
    """``BEGIN IMMEDIATE``, retried while another process holds the write lock: the first wait is
    announced (``notice``, or a logged warning), and after ``timeout_s`` (default ``busy_timeout_s()``)
    ProjectBusyError is raised. SQLite's own busy handler polls within each try (the connection's
    timeout), so the lock is taken within milliseconds of being freed."""
    limit = busy_timeout_s() if timeout_s is None else timeout_s
    deadline: float | None = None
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + limit
                message = (f"project {path.name} is busy (another program is writing to it); waiting up to "
                           f"{limit:.0f} s...")
                (notice or log.warning)(message)
            if now >= deadline:
                raise ProjectBusyError(
                    f"project {path} stayed busy for {limit:.0f} s (another program kept writing to it); "
                    "nothing was changed. Try again when the other program is done") from None


def check_regular_file(path: Path) -> os.stat_result:
    """The file's stat; ProjectError (the right subclass) unless it is a non-empty regular file.
    Never opens the path, so a FIFO cannot block."""
    st, problem = regular_file(path)
    if st is None:
        if problem == "does not exist":
            raise ProjectNotFoundError(f"project file {path} does not exist")
        raise ProjectCorruptError(f"project file {path} {problem}")
    if problem:
        raise ProjectError(f"{path} {problem}, so it cannot be a project file; nothing was read or changed")
    if st.st_size == 0:
        raise ProjectEmptyError(
            f"{path} is empty (0 bytes): its creation was interrupted before it held anything. "
            "'car-desktop batch' or 'import' create it again; or delete it")
    return st


def read_header(path: Path) -> tuple[int, int]:
    """(application_id, user_version) read from the raw 100-byte header, without opening SQLite.

    Raises ProjectNotFoundError / ProjectEmptyError / ProjectCorruptError / ProjectError. Reading
    bytes cannot change the file.
    """
    check_regular_file(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except FileNotFoundError:
        raise ProjectNotFoundError(f"project file {path} does not exist") from None
    except OSError as exc:
        raise ProjectCorruptError(f"cannot read project file {path}: {exc.strerror or exc}") from None
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        raise ProjectCorruptError(
            f"{path} is not a CaR Desktop project (not an SQLite database, or damaged); nothing was changed")
    user_version = int.from_bytes(head[60:64], "big")
    app_id = int.from_bytes(head[68:72], "big")
    return app_id, user_version


def check_readable(path: Path) -> int:
    """Verify that ``path`` is an intact CaR Desktop project this version can open, read-only.

    Returns its schema version. Raises ProjectCorruptError, ProjectForeignError or
    ProjectSchemaError with a message naming the file; the file is not modified.
    """
    read_header(path)
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True)
    except sqlite3.Error as exc:
        raise ProjectCorruptError(f"cannot open project {path}: {exc}") from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise ProjectForeignError(
                f"{path} is an SQLite database from another program, not a CaR Desktop project; "
                "nothing was changed")
        if version > SCHEMA_VERSION:
            raise ProjectSchemaError(
                f"{path} was saved by a newer CaR Desktop (project format {version}, this version reads "
                f"up to {SCHEMA_VERSION}); update CaR Desktop to open it. Nothing was changed")
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise ProjectCorruptError(f"project {path} is damaged ({result}); nothing was changed")
        if version:
            have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = sorted(TABLES[version] - have)
            if missing:
                raise ProjectCorruptError(
                    f"project {path} is damaged: its table{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)} {'are' if len(missing) > 1 else 'is'} missing; nothing was changed")
        return int(version)
    except sqlite3.DatabaseError as exc:
        raise ProjectCorruptError(f"project {path} is damaged ({exc}); nothing was changed") from None
    finally:
        conn.close()


def read_only_uri(path: Path) -> str:
    """An SQLite URI that reads ``path`` without writing anything beside it: ``immutable=1`` when no
    write-ahead log exists (nothing is being written: no lock or -shm file is needed), else ``mode=ro``
    (a writer is active, or died: its log must be read, and its -wal/-shm already exist)."""
    uri = path.resolve().as_uri()
    wal = path.with_name(path.name + "-wal")
    return f"{uri}?mode=ro" if wal.exists() else f"{uri}?mode=ro&immutable=1"


def migrate(conn: sqlite3.Connection, path: Path | None = None) -> None:
    """Bring the schema to SCHEMA_VERSION, one version per transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    while version < SCHEMA_VERSION:
        log.info("migrating project schema %d -> %d", version, version + 1)
        # The connection is in autocommit mode; both pragmas live in page 1, so they commit
        # atomically with the tables of the step.
        begin_immediate(conn, path or Path("project"))
        if conn.execute("PRAGMA user_version").fetchone()[0] != version:  # another process did it
            conn.execute("ROLLBACK")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            continue
        try:
            MIGRATIONS[version](conn)
            if version == 0:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version += 1
