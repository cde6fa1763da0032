"""Where CaR Desktop keeps things: bundled resources, and the user's cache, data and config folders.

Resources (the model manifest, icons, style sheets) are found both in a source checkout (the top-level
``resources/`` beside the package) and in an installed package (``car_desktop/resources/`` as package
data). User folders come from platformdirs; each can be overridden by an environment variable so tests
and portable installs can point them elsewhere: ``CAR_DESKTOP_CACHE``, ``CAR_DESKTOP_DATA``,
``CAR_DESKTOP_CONFIG``.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "car-desktop"
APP_AUTHOR = "car-desktop"

_PACKAGE_DIR = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """The folder holding bundled resources: package data when installed, ``resources/`` in a checkout."""
    candidates = (_PACKAGE_DIR / "resources", _PACKAGE_DIR.parent / "resources")
    for candidate in candidates:
        if (candidate / "models.json").is_file():
            return candidate
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[-1]


def resource_path(*parts: str) -> Path:
    """Path of one bundled resource file, e.g. ``resource_path("models.json")``."""
    return resources_dir().joinpath(*parts)


def _override(env: str) -> Path | None:
    value = os.environ.get(env, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Downloaded model weights and other re-creatable files (``CAR_DESKTOP_CACHE`` overrides)."""
    return _override("CAR_DESKTOP_CACHE") or platformdirs.user_cache_path(APP_NAME, APP_AUTHOR)


def data_dir() -> Path:
    """User data that is not a cache (``CAR_DESKTOP_DATA`` overrides)."""
    return _override("CAR_DESKTOP_DATA") or platformdirs.user_data_path(APP_NAME, APP_AUTHOR)


def config_dir() -> Path:
    """Settings, including which local weight files the user chose (``CAR_DESKTOP_CONFIG`` overrides)."""
    return _override("CAR_DESKTOP_CONFIG") or platformdirs.user_config_path(APP_NAME, APP_AUTHOR)


def models_dir(cache: Path | None = None) -> Path:
    """Folder of model weights inside the cache: one sub-folder per model name."""
    return (cache or cache_dir()) / "models"
