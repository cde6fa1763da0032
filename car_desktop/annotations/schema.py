"""The project file format: SQLite tables, the schema version, migrations, and the checks that
refuse a corrupt, foreign or newer file before anything in it is changed.

The file is stamped with ``PRAGMA application_id`` (so a foreign SQLite file is recognised) and
``PRAGMA user_version`` (the schema version). ``MIGRATIONS[v]`` upgrades version v to v + 1 and runs
inside the same transaction as the version bump, so an interrupted upgrade leaves the old file.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any, Callable

from .errors import ProjectCorruptError, ProjectForeignError, ProjectNotFoundError, ProjectSchemaError

log = logging.getLogger(__name__)

APPLICATION_ID = 0x43615244  # b"CaRD"
SCHEMA_VERSION = 2
SQLITE_MAGIC = b"SQLite format 3\x00"

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

def _v1_provenance(old: dict[str, Any]) -> dict[str, Any]:
    """A provenance dict as versions before 2 wrote it (two shapes: the window's and the folder
    loop's) -> the fields of ``provenance.Provenance`` (version 2)."""
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


def _to_v2(conn: sqlite3.Connection) -> None:
    """Version 2: one typed provenance record, the mask CaR made kept apart from edits (``auto_rle``),
    and the removed-concept lists under the key both the window and the folder loop use."""
    conn.execute("ALTER TABLE annotations ADD COLUMN auto_rle BLOB")
    # An unedited CaR mask is still as CaR made it; an edited one's first version is gone.
    conn.execute("UPDATE annotations SET auto_rle = rle WHERE source = 'car' AND edited = 0")
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
                         (f"car.removed.{image_id}", json.dumps(new_rows, ensure_ascii=False)))


#: MIGRATIONS[v] takes a connection at schema version v to v + 1 (v = 0 is a fresh file).
def _create_v1(conn: sqlite3.Connection) -> None:
    for stmt in _V1.split(";"):
        if stmt.strip():
            conn.execute(stmt)


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _create_v1,
    1: _to_v2,
}


def read_header(path: Path) -> tuple[int, int]:
    """(application_id, user_version) read from the raw 100-byte header, without opening SQLite.

    Raises ProjectNotFoundError / ProjectCorruptError. Reading bytes cannot change the file.
    """
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
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
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
        return int(version)
    except sqlite3.DatabaseError as exc:
        raise ProjectCorruptError(f"project {path} is damaged ({exc}); nothing was changed") from None
    finally:
        conn.close()


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION, one version per transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    while version < SCHEMA_VERSION:
        log.info("migrating project schema %d -> %d", version, version + 1)
        # The connection is in autocommit mode; both pragmas live in page 1, so they commit
        # atomically with the tables of the step.
        conn.execute("BEGIN IMMEDIATE")
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
