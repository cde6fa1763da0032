"""Finding or creating the project for a folder.

A folder opened without a project gets one beside its images (``<folder>/car-desktop.cardb``), or, when
the folder is read-only, in the user data folder under a name derived from the folder's path.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from .. import paths
from ..annotations.store import Project

log = logging.getLogger(__name__)

PROJECT_NAME = "car-desktop.cardb"
PROJECT_FILTER = "CaR Desktop projects (*.cardb);;All files (*)"
IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.tif *.tiff *.webp);;All files (*)"


def folder_writable(folder: Path) -> bool:
    if not os.access(folder, os.W_OK):
        return False
    probe = folder / f".car-desktop-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def fallback_project_path(folder: Path) -> Path:
    digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:10]
    return paths.data_dir() / "projects" / f"{folder.name or 'images'}-{digest}.cardb"


def project_for_folder(folder: str | os.PathLike) -> tuple[Project, bool]:
    """Open the folder's project, creating it if needed; returns (project, created_in_user_data)."""
    folder = Path(folder)
    beside = folder / PROJECT_NAME
    if beside.exists():
        return Project.open(beside), False
    if folder_writable(folder):
        return Project.create(beside, folder), False
    target = fallback_project_path(folder)
    if target.exists():
        return Project.open(target), True
    target.parent.mkdir(parents=True, exist_ok=True)
    return Project.create(target, folder), True
