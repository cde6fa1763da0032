"""The project file format: SQLite tables, the schema version, migrations, and the checks that
refuse a corrupt, foreign or newer file before anything in it is changed.

The file is stamped with ``PRAGMA application_id`` (so a foreign SQLite file is recognised) and
``PRAGMA user_version`` (the schema version). ``MIGRATIONS[v]`` upgrades version v to v + 1 and runs
inside the same transaction as the version bump, so an interrupted upgrade leaves the old file.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Callable

from .errors import ProjectCorruptError, ProjectForeignError, ProjectNotFoundError, ProjectSchemaError

log = logging.getLogger(__name__)

APPLICATION_ID = 0x43615244  # b"CaRD"
SCHEMA_VERSION = 1
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

#: MIGRATIONS[v] takes a connection at schema version v to v + 1 (v = 0 is a fresh file).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: lambda conn: [conn.execute(stmt) for stmt in _V1.split(";") if stmt.strip()],
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
