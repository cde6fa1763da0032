"""Persisted user settings (QSettings): device, precision, default preset, theme, recent projects."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

from .engine_client import DEVICE_CHOICES, PRECISION_CHOICES, PRESETS, CaRConfig

THEMES = ("system", "light", "dark")
MAX_RECENT = 10


class Settings:
    """Typed access to the application's QSettings."""

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings or QSettings("car-desktop", "car-desktop")

    def _get(self, key: str, default, choices=None):
        value = self.q.value(key, default)
        if choices is not None and value not in choices:
            return default
        return value

    @property
    def device(self) -> str:
        return self._get("engine/device", "auto", DEVICE_CHOICES)

    @device.setter
    def device(self, value: str) -> None:
        self.q.setValue("engine/device", value)

    @property
    def precision(self) -> str:
        return self._get("engine/precision", "auto", PRECISION_CHOICES)

    @precision.setter
    def precision(self, value: str) -> None:
        self.q.setValue("engine/precision", value)

    def engine_config(self, config: CaRConfig) -> CaRConfig:
        """``config`` with the device and precision the user chose (every run of the window goes through here)."""
        return config.replace(device=self.device, precision=self.precision)

    @property
    def default_preset(self) -> str:
        return self._get("engine/preset", "objects", tuple(PRESETS))

    @default_preset.setter
    def default_preset(self, value: str) -> None:
        self.q.setValue("engine/preset", value)

    @property
    def theme(self) -> str:
        return self._get("ui/theme", "system", THEMES)

    @theme.setter
    def theme(self, value: str) -> None:
        self.q.setValue("ui/theme", value)

    @property
    def opacity(self) -> float:
        value = self.q.value("ui/opacity", 0.5)   # a str from an ini file, a float from the registry
        try:
            return float(value) if isinstance(value, (str, int, float)) else 0.5
        except ValueError:
            return 0.5

    @opacity.setter
    def opacity(self, value: float) -> None:
        self.q.setValue("ui/opacity", float(value))

    def recent_projects(self) -> list[str]:
        value = self.q.value("ui/recent_projects", [])
        if isinstance(value, str):   # an ini file stores a one-item list as its item
            return [value]
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else []

    def prune_recent(self) -> list[str]:
        """Drop the recent projects whose file is gone; returns those left."""
        items = self.recent_projects()
        kept = [p for p in items if Path(p).is_file()]
        if kept != items:
            self.q.setValue("ui/recent_projects", kept)
        return kept

    def add_recent_project(self, path: str) -> None:
        items = [p for p in self.recent_projects() if p != path]
        self.q.setValue("ui/recent_projects", [path, *items[:MAX_RECENT - 1]])

    def sync(self) -> None:
        self.q.sync()
