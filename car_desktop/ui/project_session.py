"""Finding or creating the project for a folder.

A folder opened without a project gets one beside its images (``<folder>/car-desktop.cardb``), or, when
the folder is read-only, in the user data folder under a name derived from the folder's path.
``open_folder`` also adds the folder's images; a file that cannot be added (corrupt, not an image,
over the pixel limit such as a decompression bomb) does not stop the others: it comes back in
``FolderOpened.failures`` with its reason (and stays in the project's failure list) for the file
list to show. ``probe_folder`` tells, before any project file is made, whether a folder without a
project has an image that can be read (the window asks before making a project for one that has
none). No Qt here.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import imagefiles, paths
from ..annotations.models import FileFailure
from ..annotations.store import Project
from .engine_client import VIDEO_EXTENSIONS, ImageLoadError

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
    if beside.exists() or folder_writable(folder):
        return Project.open_or_create(beside, folder)[0], False
    target = fallback_project_path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Project.open_or_create(target, folder)[0], True


@dataclass
class FolderOpened:
    """A folder's project with its images added, and the files that could not be added."""

    project: Project
    in_user_data: bool
    failures: list[FileFailure] = field(default_factory=list)


def open_folder(folder: str | os.PathLike) -> FolderOpened:
    """``project_for_folder`` plus adding the folder's images (one transaction per 200 new files).
    Raises CaRDesktopError only for the folder or the project, never for one image."""
    project, elsewhere = project_for_folder(folder)
    try:
        _, failures = project.add_folder(folder)
    except BaseException:
        project.close()
        raise
    return FolderOpened(project, elsewhere, failures)



@dataclass
class FolderProbe:
    """What a folder holds before a project is made for it."""

    has_project: bool
    readable: bool                                  # at least one image's header reads
    failures: list[tuple[str, str]] = field(default_factory=list)   # (relative path, reason) before it


def existing_project(folder: Path) -> Path | None:
    for candidate in (folder / PROJECT_NAME, fallback_project_path(folder)):
        if candidate.exists():
            return candidate
    return None


def probe_folder(folder: str | os.PathLike, recursive: bool = True) -> FolderProbe:
    """Whether ``folder`` has a project, and whether one of its images can be read (headers only,
    stopping at the first that reads), with the reasons of those that cannot before it. A folder with
    a clip in it counts as readable (clips are opened, and checked, on their own)."""
    folder = Path(folder)
    if existing_project(folder) is not None:
        return FolderProbe(True, True)
    try:
        if any(p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() for p in folder.iterdir()):
            return FolderProbe(False, True)
    except OSError:
        pass   # the scan below reports an unreadable folder
    failures: list[tuple[str, str]] = []
    for path in imagefiles.scan_folder(folder, recursive=recursive).files:
        try:
            imagefiles.image_size(path)
            return FolderProbe(False, True, failures)
        except ImageLoadError as exc:
            reason = str(exc).removeprefix(f"{path}: ").removeprefix(f"{path} ")
            failures.append((path.relative_to(folder).as_posix(), reason.rstrip(".")))
        except OSError as exc:
            failures.append((path.relative_to(folder).as_posix(), f"cannot be read ({exc.strerror or exc})"))
    return FolderProbe(False, False, failures)
