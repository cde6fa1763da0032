"""Exceptions the engine raises for things a user can cause, each with a message a person can act on.

They subclass ``car_desktop.errors.CaRDesktopError`` (re-exported here for the engine's callers).
"""

from __future__ import annotations

from ..errors import Cancelled, CaRDesktopError

__all__ = ["CaRDesktopError", "Cancelled", "ConceptError", "ConfigError", "ImageLoadError", "VideoLoadError",
           "WeightsCorruptError", "WeightsMissingError"]


class ImageLoadError(CaRDesktopError):
    """The image file is missing, unreadable, corrupt, empty or of an unsupported kind."""


class VideoLoadError(ImageLoadError):
    """A video file or frame folder is missing, corrupt, truncated, empty or cannot be decoded."""


class ConceptError(CaRDesktopError):
    """The concept list is empty or cannot be used."""


class WeightsMissingError(CaRDesktopError):
    """Model weights are not on this machine and cannot be fetched now (offline, hub unreachable)."""


class WeightsCorruptError(CaRDesktopError):
    """A weights file exists but fails its hash check or cannot be parsed."""


class ConfigError(CaRDesktopError):
    """An engine option has an impossible value (unknown preset, threshold out of range, ...)."""
