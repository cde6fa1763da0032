"""Exporting clips as COCO: one image entry per frame, a ``track_id`` on each annotation.

``export_video_coco(project, out, video_ids)`` is ``coco_export.export_coco`` over the clips' frames
(every frame is an image entry, labelled or not: a frame with no annotation says "no object here"),
so every COCO rule of the image export holds unchanged (ids, area and bbox from pycocotools, RLE or
polygons, strict JSON, the output guard, atomic writing). Each image entry also carries ``video_id``
and ``frame_index``; its ``file_name`` is the frame's name in the project (``clip.mp4#000123``) or,
when the frames were extracted (``frame_files``), the extracted file's path. Each annotation carries
the ``track_id`` of its object (one per clip and concept, ``video_store.Track``). Never Qt or torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from . import video_store
from .coco_export import export_coco
from .errors import ExportError
from .models import ExportReport, ImageRecord
from .store import Project


def clip_ids(project: Project, video_ids: Sequence[int] | None) -> list[int]:
    """``video_ids`` checked against the project (None: every clip)."""
    known = [v.id for v in video_store.list_videos(project)]
    if video_ids is None:
        return known
    unknown = set(video_ids) - set(known)
    if unknown:
        raise ExportError(f"no clip with id {min(unknown)} in this project")
    return list(dict.fromkeys(video_ids))


def export_video_coco(project: Project, out_path: str | os.PathLike, video_ids: Sequence[int] | None = None, *,
                      frame_files: Mapping[int, str] | None = None, **options: Any) -> ExportReport:
    """Write the clips (``video_ids``, None: all) as COCO JSON; ``frame_files`` maps a frame's image id
    to the file name to write instead of ``clip#frame``. Other keyword arguments go to ``export_coco``."""
    ids = clip_ids(project, video_ids)
    if not ids:
        raise ExportError("the project has no clip to export")
    frames: dict[int, tuple[int, int]] = {}
    for video_id in ids:
        for index, image_id in enumerate(video_store.frame_ids(project, video_id)):
            frames[image_id] = (video_id, index)
    tracks = {(v, c): t for v in ids for c, t in video_store.clip_tracks(project, v).items()}

    def image_fields(image: ImageRecord) -> dict[str, Any]:
        video_id, index = frames[image.id]
        fields: dict[str, Any] = {"video_id": video_id, "frame_index": index}
        if frame_files is not None:
            fields["file_name"] = frame_files[image.id]
        return fields

    def annotation_fields(image_id: int, category_id: int) -> dict[str, Any]:
        track = tracks.get((frames[image_id][0], category_id))  # None: a mask added while exporting
        return {} if track is None else {"track_id": track}

    return export_coco(project, out_path, image_ids=list(frames), image_fields=image_fields,
                       annotation_fields=annotation_fields, **options)
