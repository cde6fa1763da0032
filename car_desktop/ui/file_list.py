"""The file list of the open folder or project, with each image's status.

Statuses: not labelled ("new"), auto-labelled ("auto"), reviewed, and "error" for an image that could
not be read (marked and skipped, the rest stays usable).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QWidget

STATUS_LABELS = {"new": "○", "auto": "◐", "reviewed": "●", "error": "⚠"}
STATUS_TIPS = {"new": "not labelled", "auto": "auto-labelled", "reviewed": "reviewed",
               "error": "could not be read"}
STATUS_COLOURS = {"new": QColor(150, 150, 150), "auto": QColor(230, 160, 40), "reviewed": QColor(60, 180, 75),
                  "error": QColor(220, 60, 60)}


class FileList(QListWidget):
    """One row per image (keyed by image id); ``imageActivated(image_id)`` when the user picks one."""

    imageActivated = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: dict[int, QListWidgetItem] = {}
        self._status: dict[int, str] = {}
        self.currentItemChanged.connect(self._current_changed)
        self._silent = False

    def set_images(self, entries: list[tuple[int, str, str]]) -> None:
        """Entries are (key, display name, status)."""
        self._silent = True
        self.clear()
        self._rows, self._status = {}, {}
        for key, name, status in entries:
            item = QListWidgetItem(name)
            item.setData(Qt.ItemDataRole.UserRole, key)
            self.addItem(item)
            self._rows[key] = item
            self.set_status(key, status)
        self._silent = False

    def keys(self) -> list[int]:
        return [self.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.count())]

    def status(self, key: int) -> str | None:
        return self._status.get(key)

    def set_status(self, key: int, status: str, detail: str = "") -> None:
        item = self._rows.get(key)
        if item is None:
            return
        self._status[key] = status
        name = item.text().split(" ", 1)[-1] if item.text()[:1] in STATUS_LABELS.values() else item.text()
        item.setText(f"{STATUS_LABELS.get(status, '?')} {name}")
        item.setForeground(QBrush(STATUS_COLOURS.get(status, QColor(128, 128, 128))))
        item.setToolTip(f"{name}: {STATUS_TIPS.get(status, status)}" + (f"\n{detail}" if detail else ""))

    def select_key(self, key: int) -> None:
        item = self._rows.get(key)
        if item is not None:
            self._silent = True
            self.setCurrentItem(item)
            self._silent = False

    def neighbour(self, key: int, step: int) -> int | None:
        """The next (step=+1) or previous readable image, skipping ones marked as errors."""
        keys = self.keys()
        if not keys:
            return None
        i = keys.index(key) if key in keys else (-1 if step > 0 else len(keys))
        j = i + step
        while 0 <= j < len(keys):
            if self._status.get(keys[j]) != "error":
                return keys[j]
            j += step
        return None

    def _current_changed(self, current: QListWidgetItem | None, _previous) -> None:
        if current is not None and not self._silent:
            self.imageActivated.emit(current.data(Qt.ItemDataRole.UserRole))
