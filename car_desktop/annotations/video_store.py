"""Clips in a project: the clip rows, their frames as images, tracks, key frames and propagation records.

A clip (a video file or a folder of numbered frames, ``rel_path`` relative to the image root) is one
row of ``videos``; each of its frames is an ``images`` row named ``clip.mp4#000123``
(``frame_name``) with ``video_id`` and ``frame_index`` set, so a frame holds its masks, statuses,
removed-concept list and undo exactly like an image, and every mask rule of the project applies to
it unchanged. Frames are left out of the image lists (``Project.list_images``) unless asked for.

A concept of a clip is one object with one stable track id (``video_tracks``: one row per clip and
category, its id is the ``track_id`` of the exports). ``video_keys`` lists the frames CaR ran on.
``object_keys`` gives, per object, the key frames the propagation plan needs: the CaR key frames
where it was found or found absent, and the frames where a person edited its mask. ``video_runs``
records how far SAM 2 carried each object from each key frame, with a token naming the key mask and
the model (``run_done`` / ``set_run_done``), so a rerun redoes only runs whose key frame changed.

Reads go through ``Project.query``, writes through ``Project.batch``. Never Qt or torch.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import imagefiles
from ..safepaths import UnsafePathError, safe_relative_path
from . import mask_codec
from .car_results import REMOVED_SETTING, removed_concepts
from .errors import ProjectError
from .provenance import FRAME_KEY, Provenance
from .store import Project

#: Frames of one clip at most (the ``images`` rows a clip adds): about 9 hours at 30 frames/s.
MAX_CLIP_FRAMES = 1_000_000
FRAME_SEP = "#"
_VIDEO_COLS = "id, rel_path, kind, frame_count, width, height, fps, variable_rate, fingerprint"


@dataclass(frozen=True)
class VideoRecord:
    """One clip of the project."""

    id: int
    rel_path: str
    kind: str                  # "file" or "frames"
    frame_count: int
    width: int
    height: int
    fps: float | None
    variable_rate: bool
    fingerprint: str | None

    def frame_name(self, index: int) -> str:
        return frame_name(self.rel_path, index, self.frame_count)


def frame_name(rel_path: str, index: int, frame_count: int) -> str:
    """The name of a clip's frame: ``clip.mp4#000123`` (six digits, more for longer clips)."""
    digits = max(6, len(str(max(0, frame_count - 1))))
    return f"{rel_path}{FRAME_SEP}{index:0{digits}d}"


def _video(row: tuple) -> VideoRecord:
    return VideoRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]), row[8])


# ---------------------------------------------------------------------------------------- clips
def add_video(project: Project, rel_path: str, *, kind: str, frame_count: int, width: int, height: int,
              fps: float | None = None, variable_rate: bool = False, fingerprint: str | None = None) -> VideoRecord:
    """Add a clip and its frames (one transaction), or return it when it is already there with the same
    size, frame count and fingerprint; a clip that changed since raises ProjectError (its labels
    belong to the old file)."""
    try:
        rel_path = safe_relative_path(rel_path)
    except UnsafePathError as exc:
        raise ProjectError(f"clip {str(rel_path)[:200]!r}: {exc}") from None
    if kind not in ("file", "frames"):
        raise ProjectError(f"unknown clip kind {kind!r}")
    if not 0 < int(frame_count) <= MAX_CLIP_FRAMES:
        raise ProjectError(f"clip {rel_path}: {frame_count} frames; a clip has 1 to {MAX_CLIP_FRAMES:,} frames")
    if width <= 0 or height <= 0 or width * height > imagefiles.max_pixels():
        raise ProjectError(imagefiles.too_big_message(Path(rel_path), (width, height)))
    existing = find_video(project, rel_path)
    if existing is not None:
        same = (existing.frame_count, existing.width, existing.height) == (frame_count, width, height)
        if same and (existing.fingerprint is None or fingerprint is None or existing.fingerprint == fingerprint):
            return existing
        raise ProjectError(f"{rel_path} changed since it was added to this project ({existing.frame_count} frames "
                           f"{existing.width}x{existing.height} then, {frame_count} frames {width}x{height} now, or "
                           "other content): its labels belong to the old file. Remove the clip from the project "
                           "first (car-desktop video --replace), or use another project")
    fps_value = float(fps) if fps is not None and 0 < float(fps) < 1000 else None
    now = time.time()
    with project.batch() as conn:
        cur = conn.execute(
            "INSERT INTO videos (rel_path, kind, frame_count, width, height, fps, variable_rate, fingerprint, "
            "added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rel_path, kind, int(frame_count), int(width), int(height), fps_value, int(variable_rate), fingerprint,
             now))
        assert cur.lastrowid is not None
        video_id = cur.lastrowid
        conn.executemany(
            "INSERT INTO images (rel_path, width, height, content_hash, status, added_at, video_id, frame_index) "
            "VALUES (?, ?, ?, NULL, 'new', ?, ?, ?)",
            ((frame_name(rel_path, i, frame_count), int(width), int(height), now, video_id, i)
             for i in range(int(frame_count))))
    return get_video(project, video_id)


def get_video(project: Project, video_id: int) -> VideoRecord:
    rows = project.query(f"SELECT {_VIDEO_COLS} FROM videos WHERE id = ?", (video_id,))
    if not rows:
        raise ProjectError(f"no clip with id {video_id} in this project")
    return _video(rows[0])


def find_video(project: Project, rel_path: str) -> VideoRecord | None:
    rows = project.query(f"SELECT {_VIDEO_COLS} FROM videos WHERE rel_path = ?", (rel_path,))
    return _video(rows[0]) if rows else None


def list_videos(project: Project) -> list[VideoRecord]:
    return [_video(r) for r in project.query(f"SELECT {_VIDEO_COLS} FROM videos ORDER BY rel_path")]


def remove_video(project: Project, video_id: int) -> None:
    """Forget a clip with its frames, masks, tracks and records (the file is not touched)."""
    with project.batch() as conn:
        image_ids = [r[0] for r in conn.execute("SELECT id FROM images WHERE video_id = ?", (video_id,))]
        conn.executemany("DELETE FROM settings WHERE key = ?", ((f"{REMOVED_SETTING}{i}",) for i in image_ids))
        if conn.execute("DELETE FROM videos WHERE id = ?", (video_id,)).rowcount == 0:
            raise ProjectError(f"no clip with id {video_id} in this project")


# ---------------------------------------------------------------------------------------- frames
def frame_ids(project: Project, video_id: int) -> list[int]:
    """Image ids of the clip's frames, by frame index."""
    return [r[0] for r in project.query("SELECT id FROM images WHERE video_id = ? ORDER BY frame_index", (video_id,))]


def frame_image_id(project: Project, video_id: int, index: int) -> int:
    rows = project.query("SELECT id FROM images WHERE video_id = ? AND frame_index = ?", (video_id, index))
    if not rows:
        raise ProjectError(f"clip {video_id} has no frame {index}")
    return int(rows[0][0])


def frame_of_image(project: Project, image_id: int) -> tuple[int, int] | None:
    """(clip id, frame index) of a frame's image id, or None for an ordinary image."""
    rows = project.query("SELECT video_id, frame_index FROM images WHERE id = ? AND video_id IS NOT NULL", (image_id,))
    return (int(rows[0][0]), int(rows[0][1])) if rows else None


def frame_status_counts(project: Project, video_id: int) -> dict[str, int]:
    """How many of the clip's frames are new / auto / reviewed."""
    rows = project.query("SELECT status, COUNT(*) FROM images WHERE video_id = ? GROUP BY status", (video_id,))
    return {str(s): int(n) for s, n in rows}


# ---------------------------------------------------------------------------------------- tracks
@dataclass(frozen=True)
class Track:
    id: int
    video_id: int
    category_id: int


def track_for(project: Project, video_id: int, category_id: int) -> Track:
    """The clip's track of a category (one object per concept), created on first use."""
    rows = project.query("SELECT id FROM video_tracks WHERE video_id = ? AND category_id = ?", (video_id, category_id))
    if not rows:
        with project.batch() as conn:
            conn.execute("INSERT OR IGNORE INTO video_tracks (video_id, category_id, created_at) VALUES (?, ?, ?)",
                         (video_id, category_id, time.time()))
        rows = project.query("SELECT id FROM video_tracks WHERE video_id = ? AND category_id = ?",
                             (video_id, category_id))
    return Track(int(rows[0][0]), video_id, category_id)


def list_tracks(project: Project, video_id: int | None = None) -> list[Track]:
    """Tracks in creation order (of one clip, or of every clip)."""
    sql = "SELECT id, video_id, category_id FROM video_tracks"
    rows = project.query(sql + " WHERE video_id = ? ORDER BY id", (video_id,)) if video_id is not None else \
        project.query(sql + " ORDER BY id")
    return [Track(int(a), int(b), int(c)) for a, b, c in rows]


def clip_tracks(project: Project, video_id: int) -> dict[int, int]:
    """category id -> track id of every object with a mask on the clip. Tracks that do not exist yet (a
    mask a person added, of a concept new to the clip) are created; in a read-only project they get
    the next free ids without being stored."""
    have = {t.category_id: t.id for t in list_tracks(project, video_id)}
    rows = project.query("SELECT DISTINCT a.category_id FROM annotations a JOIN images i ON i.id = a.image_id "
                         "WHERE i.video_id = ? ORDER BY a.category_id", (video_id,))
    missing = [int(r[0]) for r in rows if int(r[0]) not in have]
    if missing and not project.readonly:
        for category_id in missing:
            have[category_id] = track_for(project, video_id, category_id).id
    elif missing:
        top = int(project.query("SELECT COALESCE(MAX(id), 0) FROM video_tracks")[0][0])
        have.update({c: top + n for n, c in enumerate(missing, 1)})
    return have


def track_frames(project: Project, video_id: int) -> dict[int, list[int]]:
    """category id -> the frames (sorted) where the clip's object has a non-empty mask."""
    rows = project.query(
        "SELECT DISTINCT a.category_id, i.frame_index FROM annotations a JOIN images i ON i.id = a.image_id "
        "WHERE i.video_id = ? AND a.area > 0 ORDER BY a.category_id, i.frame_index", (video_id,))
    out: dict[int, list[int]] = {}
    for category_id, frame in rows:
        out.setdefault(int(category_id), []).append(int(frame))
    return out


def gaps(project: Project, video_id: int) -> dict[int, list[tuple[int, int]]]:
    """category id -> the frame ranges [start, stop) where its object has no mask between frames
    where it has one: where SAM 2 lost it (or it really left the view)."""
    out: dict[int, list[tuple[int, int]]] = {}
    for category_id, frames in track_frames(project, video_id).items():
        arr = np.asarray(frames)
        jumps = np.flatnonzero(np.diff(arr) > 1)
        spans = [(int(arr[j]) + 1, int(arr[j + 1])) for j in jumps]
        if spans:
            out[category_id] = spans
    return out


# ------------------------------------------------------------------------------------- key frames
def set_key_frame(project: Project, video_id: int, index: int, run_key: str | None = None) -> None:
    with project.batch() as conn:
        conn.execute("INSERT OR REPLACE INTO video_keys (video_id, frame_index, run_key, created_at) "
                     "VALUES (?, ?, ?, ?)", (video_id, index, run_key, time.time()))


def remove_key_frame(project: Project, video_id: int, index: int) -> None:
    with project.batch() as conn:
        conn.execute("DELETE FROM video_keys WHERE video_id = ? AND frame_index = ?", (video_id, index))


def key_frames(project: Project, video_id: int) -> dict[int, str | None]:
    """frame index -> run key of the CaR run made there (None: a run from the window)."""
    rows = project.query("SELECT frame_index, run_key FROM video_keys WHERE video_id = ? ORDER BY frame_index",
                         (video_id,))
    return {int(f): k for f, k in rows}


@dataclass
class ObjectKeys:
    """One object's key frames for the propagation plan."""

    present: list[int]     # CaR key frames where CaR found it
    absent: list[int]      # CaR key frames where CaR found it absent
    edited: list[int]      # frames where a person edited its mask

    @property
    def car(self) -> list[int]:
        return sorted(set(self.present) | set(self.absent))


def object_keys(project: Project, video_id: int) -> dict[int, ObjectKeys]:
    """category id -> its ``ObjectKeys`` in this clip."""
    keys = key_frames(project, video_id)
    out: dict[int, ObjectKeys] = {}

    def entry(category_id: int) -> ObjectKeys:
        return out.setdefault(category_id, ObjectKeys([], [], []))

    rows = project.query(
        "SELECT a.category_id, i.frame_index, a.edited, a.provenance, i.id FROM annotations a "
        "JOIN images i ON i.id = a.image_id WHERE i.video_id = ? AND a.area > 0 ORDER BY i.frame_index", (video_id,))
    frame_image = {}
    for category_id, frame, edited, prov, image_id in rows:
        frame_image[int(frame)] = int(image_id)
        if edited:
            entry(int(category_id)).edited.append(int(frame))
        elif int(frame) in keys and Provenance.from_json(prov).frame_role == FRAME_KEY:
            entry(int(category_id)).present.append(int(frame))
    by_name = {c.label.casefold(): c.id for c in project.list_categories()}
    by_name.update({c.name.casefold(): c.id for c in project.list_categories()})
    for frame in keys:
        image_id = frame_image.get(frame) or frame_image_id(project, video_id, frame)
        for removed in removed_concepts(project, image_id):
            category_id = by_name.get(removed.concept.casefold())
            if category_id is not None:
                entry(category_id).absent.append(frame)
    for k in out.values():
        k.absent = sorted(set(k.absent) - set(k.present))
        k.present, k.edited = sorted(set(k.present)), sorted(set(k.edited))
    return out


def seed_mask(project: Project, video_id: int, category_id: int, index: int) -> np.ndarray | None:
    """The object's mask on a key frame (the union of its masks there), or None when it has none."""
    image_id = frame_image_id(project, video_id, index)
    anns = [a for a in project.list_annotations(image_id) if a.category_id == category_id and a.area > 0]
    if not anns:
        return None
    mask = project.get_mask(anns[0].id)
    for a in anns[1:]:
        mask |= project.get_mask(a.id)
    return mask


def seed_token(mask: np.ndarray | None, model_key: str) -> str:
    """Names a key mask and the model that carries it: a run with another token is redone."""
    digest = hashlib.sha1(model_key.encode("utf-8"))
    digest.update(b"absent" if mask is None else mask_codec.encode(mask).rle)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------- run records
def run_done(project: Project, video_id: int, category_id: int, key: int, step: int) -> tuple[str, int] | None:
    """(token, farthest frame reached) of the recorded run of an object from a key frame, or None."""
    rows = project.query("SELECT token, reach FROM video_runs WHERE video_id = ? AND category_id = ? AND key_frame = ? "
                         "AND step = ?", (video_id, category_id, key, step))
    return (str(rows[0][0]), int(rows[0][1])) if rows else None


def set_run_done(project: Project, video_id: int, category_id: int, key: int, step: int, token: str,
                 reach: int) -> None:
    with project.batch() as conn:
        conn.execute("INSERT OR REPLACE INTO video_runs "
                     "(video_id, category_id, key_frame, step, token, reach, done_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (video_id, category_id, key, step, token, reach, time.time()))


def run_records(project: Project, video_id: int) -> list[tuple]:
    """Every run record of the clip (category, key frame, step, token, reach): kept by undo."""
    return [tuple(r) for r in project.query("SELECT category_id, key_frame, step, token, reach FROM video_runs "
                                            "WHERE video_id = ? ORDER BY category_id, key_frame, step", (video_id,))]


def set_run_records(project: Project, video_id: int, records: list[tuple]) -> None:
    """Replace the clip's run records with ``records`` (from ``run_records``)."""
    with project.batch() as conn:
        conn.execute("DELETE FROM video_runs WHERE video_id = ?", (video_id,))
        now = time.time()
        conn.executemany("INSERT INTO video_runs (video_id, category_id, key_frame, step, token, reach, done_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", ((video_id, *r, now) for r in records))
