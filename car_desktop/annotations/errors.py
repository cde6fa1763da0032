"""Errors a user can cause while working with a project, its masks, or COCO files.

Each carries a message a person can act on (which file, what is wrong, what to do). They subclass
``car_desktop.errors.CaRDesktopError``, so the GUI and CLI catch one base class for everything the user
can fix.
"""

from __future__ import annotations

from ..errors import CaRDesktopError


class ProjectError(CaRDesktopError):
    """A project operation cannot be done (unknown id, bad value, image outside the root, ...)."""


class ProjectNotFoundError(ProjectError):
    """The project file does not exist (open) or already exists (create)."""


class ProjectExistsError(ProjectNotFoundError):
    """``Project.create`` on a path that already exists (it never overwrites)."""


class ProjectEmptyError(ProjectNotFoundError):
    """The project file is empty (0 bytes): its creation never finished. It counts as not created."""


class ProjectReadOnlyError(ProjectError):
    """The project cannot be written (read-only or immutable file, or opened read-only)."""


class ProjectBusyError(ProjectError):
    """Another process kept the project's write lock for longer than the wait allowed. Nothing changed."""


class ProjectCorruptError(ProjectError):
    """The file is damaged or is not an SQLite database at all. Nothing was changed."""


class ProjectForeignError(ProjectError):
    """The file is an SQLite database, but not a CaR Desktop project. Nothing was changed."""


class ProjectSchemaError(ProjectError):
    """The project was written by a newer CaR Desktop (schema version too high). Nothing was changed."""


class MaskError(ProjectError):
    """A mask has the wrong shape or type for its image, or an edit does not fit the mask."""


class ExportError(CaRDesktopError):
    """An export cannot be written (unwritable folder, holes refused in polygon mode, ...)."""


class CocoImportError(CaRDesktopError):
    """The COCO file cannot be read at all (not JSON, no images list). Per-entry problems are reported, not raised."""
