"""YouTube-VIS JSON: writing a project's clips, and reading such a file back.

The format (YouTube-VIS 2019/2021, Yang et al., "Video Instance Segmentation"): top level
``{info, licenses, videos, annotations, categories}``; a video is ``{id, width, height, length,
file_names}`` (one file name per frame); an annotation is one object through a whole video:
``{id, video_id, category_id, iscrowd, height, width, segmentations, areas, bboxes}``, where the three
lists have one entry per frame, ``null`` where the object is not in the frame, and a segmentation is
COCO RLE or polygons. A category is ``{id, name, supercategory}``.

``export_ytvis`` writes one annotation per track (clip and concept, ``video_store.Track``; its id is
the track id), the segmentations as compressed RLE strings (column-major, pycocotools), area and
bbox from pycocotools, and the mean presence score as ``score`` (as in result files). ``file_names``
are the frames' names in the project (``clip.mp4#000123``) unless extracted files are given. The file
goes through the project's output guard and is written atomically, one track at a time.

``read_ytvis`` reads such a file (ours or another tool's) into ``YtvisFile`` and checks it on the
way in like the COCO import does: entries and their ids must be well formed, frame sizes within the
pixel limit, lengths bounded and equal to the number of file names, every list one entry per frame,
every segmentation valid for its frame size; the first problem raises ``YtvisError`` naming the
entry. ``YtvisFile.mask(track_id, frame)`` decodes one mask. Never Qt or torch.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .. import __version__, imagefiles
from ..fileio import finite_or_none
from . import mask_codec, video_store
from .coco_export import write_json_atomically
from .coco_import import EntryError, parse_json_file, segmentation_rle
from .errors import CocoImportError
from .models import ExportReport
from .store import Project
from .video_export import clip_ids

#: Longest clip a YouTube-VIS file may describe (frames); as many as a project clip may have.
MAX_LENGTH = video_store.MAX_CLIP_FRAMES


class YtvisError(CocoImportError):
    """A YouTube-VIS file cannot be read; the message names the file and the entry."""


# ------------------------------------------------------------------------------------------ writing
def export_ytvis(project: Project, out_path: str | os.PathLike, video_ids: Sequence[int] | None = None, *,
                 file_names: Mapping[int, list[str]] | None = None, include_score: bool = True,
                 force: bool = False) -> ExportReport:
    """Write the clips (``video_ids``, None: all) as YouTube-VIS JSON (see the module docstring);
    ``file_names`` maps a clip id to the names of its extracted frame files."""
    out = project.output_guard(force).check_file(out_path, "YouTube-VIS file")
    ids = clip_ids(project, video_ids)
    report = ExportReport(path=str(out))
    clips = [video_store.get_video(project, v) for v in ids]
    tracks = {v: video_store.clip_tracks(project, v) for v in ids}
    used: set[int] = set()
    head = {
        "info": {"description": "CaR Desktop export (YouTube-VIS format)", "version": __version__,
                 "date_created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")},
        "licenses": [],
        "videos": [{"id": c.id, "width": c.width, "height": c.height, "length": c.frame_count,
                    "file_names": list(file_names[c.id]) if file_names is not None else
                    [c.frame_name(i) for i in range(c.frame_count)]} for c in clips],
    }

    def annotations() -> Iterator[dict[str, Any]]:
        for clip in clips:
            for category_id, track_id in sorted(tracks[clip.id].items(), key=lambda kv: kv[1]):
                entry = _track_entry(project, clip, category_id, track_id, include_score)
                if entry is not None:
                    used.add(category_id)
                    report.annotations += 1
                    yield entry

    def tail() -> dict[str, Any]:
        cats = [c for c in project.list_categories() if c.id in used]
        report.categories = len(cats)
        return {"categories": [{"id": c.id, "name": c.name, "supercategory": ""} for c in cats]}

    write_json_atomically(head, annotations(), tail, Path(out))
    report.images = sum(c.frame_count for c in clips)
    return report


def _track_entry(project: Project, clip: video_store.VideoRecord, category_id: int, track_id: int,
                 include_score: bool) -> dict[str, Any] | None:
    """The annotation of one track: per frame the union of the object's masks (None where it has none)."""
    rows = project.query(
        "SELECT i.frame_index, a.rle, a.score FROM annotations a JOIN images i ON i.id = a.image_id "
        "WHERE i.video_id = ? AND a.category_id = ? AND a.area > 0 ORDER BY i.frame_index, a.id",
        (clip.id, category_id))
    if not rows:
        return None
    per_frame: dict[int, list[bytes]] = {}
    scores = []
    for frame, rle, score in rows:
        per_frame.setdefault(int(frame), []).append(rle)
        if finite_or_none(score) is not None:
            scores.append(float(score))
    segmentations: list[Any] = [None] * clip.frame_count
    areas: list[Any] = [None] * clip.frame_count
    bboxes: list[Any] = [None] * clip.frame_count
    size = [clip.height, clip.width]
    for frame, counts in per_frame.items():
        rles = [{"size": size, "counts": c} for c in counts]
        rle = rles[0] if len(rles) == 1 else mask_utils.merge(rles)
        raw = rle["counts"]
        segmentations[frame] = {"size": size, "counts": raw.decode("ascii") if isinstance(raw, bytes) else str(raw)}
        areas[frame] = int(mask_utils.area(rle))
        bboxes[frame] = [int(v) for v in mask_utils.toBbox(rle)]  # integral: pixel edges
    entry: dict[str, Any] = {"id": track_id, "video_id": clip.id, "category_id": category_id, "iscrowd": 0,
                             "height": clip.height, "width": clip.width, "segmentations": segmentations,
                             "areas": areas, "bboxes": bboxes}
    if include_score and scores:
        entry["score"] = round(math.fsum(scores) / len(scores), 6)
    return entry


# ------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class YtvisVideo:
    id: int
    width: int
    height: int
    length: int
    file_names: tuple[str, ...]


@dataclass
class YtvisTrack:
    """One object through one video: per frame its RLE (None where absent), area and bbox."""

    id: int
    video_id: int
    category_id: int
    iscrowd: bool
    rles: list[dict | None]
    areas: list[float | None]
    bboxes: list[list[float] | None]
    score: float | None = None

    def frames(self) -> list[int]:
        """The frames where the object has a mask."""
        return [i for i, r in enumerate(self.rles) if r is not None]


@dataclass
class YtvisFile:
    """A YouTube-VIS file, checked (see the module docstring)."""

    videos: dict[int, YtvisVideo] = field(default_factory=dict)
    categories: dict[int, str] = field(default_factory=dict)
    tracks: dict[int, YtvisTrack] = field(default_factory=dict)

    def mask(self, track_id: int, frame: int) -> np.ndarray | None:
        """The object's mask on ``frame`` (bool, the video's height x width), or None when absent."""
        rle = self.tracks[track_id].rles[frame]
        return None if rle is None else mask_codec.decode_full_rle(rle["size"][0], rle["size"][1], rle["counts"])


def _int(value: Any, what: str, lo: int = -(2 ** 63), hi: int = 2 ** 63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise EntryError(f"its {what} must be an integer from {lo} to {hi}, not {str(value)[:40]!r}")
    return value


def read_ytvis(source: str | os.PathLike | dict) -> YtvisFile:
    """Read and check a YouTube-VIS file (a path, or the parsed JSON)."""
    name = "the data" if isinstance(source, dict) else str(source)
    if isinstance(source, dict):
        data = source
    else:
        try:
            data, _ = parse_json_file(Path(source), None, None)
        except CocoImportError as exc:
            raise YtvisError(str(exc).replace("COCO", "YouTube-VIS")) from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("videos", "annotations",
                                                                                       "categories")):
        raise YtvisError(f"{name} is not YouTube-VIS JSON: it needs 'videos', 'annotations' and 'categories' lists")
    out = YtvisFile()
    for kind, entries, read in (("video", data["videos"], _read_video),
                                ("category", data["categories"], _read_category),
                                ("annotation", data["annotations"], _read_track)):
        for n, entry in enumerate(entries):
            try:
                read(out, entry)
            except EntryError as exc:
                shown = entry.get("id") if isinstance(entry, dict) else None
                raise YtvisError(f"{name}: {kind} {n + 1} (id {str(shown)[:40]}) cannot be read: {exc}") from None
    return out


def _read_video(out: YtvisFile, v: Any) -> None:
    if not isinstance(v, dict):
        raise EntryError("it is not an object")
    vid = _int(v.get("id"), "id")
    width, height = _int(v.get("width"), "width", 1), _int(v.get("height"), "height", 1)
    if width * height > imagefiles.max_pixels():
        raise EntryError(f"its frames ({width}x{height}) are over the pixel limit")
    length = _int(v.get("length", len(v.get("file_names") or [])), "length", 0, MAX_LENGTH)
    names = v.get("file_names")
    if not isinstance(names, list) or len(names) != length or not all(isinstance(s, str) for s in names):
        raise EntryError(f"'file_names' must list {length} file names (its length)")
    if vid in out.videos:
        raise EntryError("its id is used twice")
    out.videos[vid] = YtvisVideo(vid, width, height, length, tuple(names))


def _read_category(out: YtvisFile, c: Any) -> None:
    if not isinstance(c, dict) or not isinstance(c.get("name"), str):
        raise EntryError("it is not an object with a name")
    out.categories[_int(c.get("id"), "id")] = c["name"]


def _read_track(out: YtvisFile, a: Any) -> None:
    if not isinstance(a, dict):
        raise EntryError("it is not an object")
    track_id = _int(a.get("id"), "id")
    video = out.videos.get(_int(a.get("video_id"), "video_id"))
    if video is None:
        raise EntryError("its video_id names no video of the file")
    category_id = _int(a.get("category_id"), "category_id")
    if category_id not in out.categories:
        raise EntryError("its category_id names no category of the file")
    segs = a.get("segmentations")
    if not isinstance(segs, list) or len(segs) != video.length:
        raise EntryError(f"'segmentations' must have one entry per frame ({video.length})")
    lists = {}
    for key in ("areas", "bboxes"):
        value = a.get(key, [None] * video.length)
        if not isinstance(value, list) or len(value) != video.length:
            raise EntryError(f"'{key}' must have one entry per frame ({video.length})")
        lists[key] = value
    rles: list[dict | None] = []
    for frame, seg in enumerate(segs):
        if seg is None:
            rles.append(None)
            continue
        try:
            rle = segmentation_rle(seg, video.height, video.width)
        except EntryError as exc:
            raise EntryError(f"frame {frame}: {exc}") from None
        counts = rle["counts"]
        rles.append({"size": [video.height, video.width], "counts": counts if isinstance(counts, bytes) else
                     counts.encode("ascii")})
    if track_id in out.tracks:
        raise EntryError("its id is used twice")
    out.tracks[track_id] = YtvisTrack(track_id, video.id, category_id, bool(a.get("iscrowd", 0)), rles,
                                      lists["areas"], lists["bboxes"], finite_or_none(a.get("score")))
