"""Exceptions a user can cause, each with a message a person can act on.

The GUI shows ``str(error)`` in a dialog and keeps working; the CLI prints it and exits non-zero.
Anything that is not a ``CaRDesktopError`` is a bug and is reported as such.
"""

from __future__ import annotations


class CaRDesktopError(Exception):
    """Base class of every error the user can cause and fix."""


class ImageLoadError(CaRDesktopError):
    """The image file is missing, unreadable, corrupt, empty or of an unsupported kind."""


class ConceptError(CaRDesktopError):
    """The concept list is empty or cannot be used."""


class WeightsMissingError(CaRDesktopError):
    """Model weights are not on this machine and cannot be fetched now (offline, hub unreachable)."""


class WeightsCorruptError(CaRDesktopError):
    """A weights file exists but fails its hash check or cannot be parsed."""


class ConfigError(CaRDesktopError):
    """An engine option has an impossible value (unknown preset, threshold out of range, ...)."""


class Cancelled(CaRDesktopError):
    """The caller cancelled a run; nothing was half-updated."""
