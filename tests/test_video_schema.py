"""Schema version 4 (clips): a version 3 project is upgraded in place, keeping everything it held, and
the clip records refuse what they must."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from car_desktop import imagefiles
from car_desktop.annotations import Project, schema, video_store
from car_desktop.annotations.errors import ProjectError


def _v3_project(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for version in (0, 1, 2):
        schema.MIGRATIONS[version](conn)
    conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO meta VALUES ('image_root', ?)", (str(path.parent),))
    conn.execute("INSERT INTO images (rel_path, width, height, status, added_at) VALUES ('a.png', 8, 6, 'auto', 0)")
    conn.close()


def test_a_version_3_project_is_upgraded_and_keeps_its_images(tmp_path):
    path = tmp_path / "old.cardb"
    _v3_project(path)
    with Project.open(path) as p:
        assert p.schema_version == schema.SCHEMA_VERSION == 4
        assert [im.rel_path for im in p.list_images()] == ["a.png"]
        cat = p.get_or_create_category("cat")
        p.add_annotation(1, cat.id, np.ones((6, 8), bool))
        record = video_store.add_video(p, "clips/a.mp4", kind="file", frame_count=3, width=8, height=6, fps=25)
        assert [im.rel_path for im in p.list_images()] == ["a.png"]          # frames are not images of the list
        assert video_store.frame_of_image(p, video_store.frame_ids(p, record.id)[2]) == (record.id, 2)
    assert schema.check_readable(path) == 4


def test_a_clip_record_is_bounded_checked_and_found_again(tmp_path):
    with Project.create(tmp_path / "p.cardb", tmp_path) as p:
        with pytest.raises(ProjectError, match="points outside"):
            video_store.add_video(p, "../x.mp4", kind="file", frame_count=3, width=8, height=6)
        with pytest.raises(ProjectError, match="frames"):
            video_store.add_video(p, "x.mp4", kind="file", frame_count=video_store.MAX_CLIP_FRAMES + 1, width=8,
                                  height=6)
        with pytest.raises(ProjectError, match="too large"):
            video_store.add_video(p, "x.mp4", kind="file", frame_count=3, width=imagefiles.max_pixels(), height=2)
        first = video_store.add_video(p, "x.mp4", kind="file", frame_count=3, width=8, height=6, fingerprint="a")
        again = video_store.add_video(p, "x.mp4", kind="file", frame_count=3, width=8, height=6, fingerprint="a")
        assert again == first
        with pytest.raises(ProjectError, match="changed since it was added"):
            video_store.add_video(p, "x.mp4", kind="file", frame_count=3, width=8, height=6, fingerprint="b")
        assert first.frame_name(2) == "x.mp4#000002"
        video_store.remove_video(p, first.id)
        assert video_store.list_videos(p) == [] and p.count_images(include_frames=True) == 0
