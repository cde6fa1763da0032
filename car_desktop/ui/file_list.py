"""The file list of the open folder or project, with each image's status.

Statuses: not labelled ("new"), auto-labelled ("auto"), reviewed, and "error" for an image that could
not be read (marked and skipped, the rest stays usable). Files that could not even be added to the
project (``add_failures``: a decompression bomb, a corrupt file) are listed too, marked as errors
with their reason as tooltip, under the key ``("failed", rel_path)``; they cannot be opened.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QWidget

#: A row's key: an image id, ("failed", relative path) for a file the project could not add, or
#: ("video", clip id) for a clip row (``MediaFileList``).
FileKey = int | tuple[str, str] | tuple[str, int]

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
        self._rows: dict[FileKey, QListWidgetItem] = {}
        self._status: dict[FileKey, str] = {}
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

    def add_failures(self, failures: list[tuple[str, str]]) -> None:
        """Append one error row per (relative path, reason) that the project could not add."""
        self._silent = True
        for rel, reason in failures:
            key: FileKey = ("failed", rel)
            if key in self._rows:
                self.set_status(key, "error", reason)
                continue
            item = QListWidgetItem(rel)
            item.setData(Qt.ItemDataRole.UserRole, key)
            self.addItem(item)
            self._rows[key] = item
            self.set_status(key, "error", reason)
        self._silent = False

    def keys(self) -> list[FileKey]:
        return [self.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.count())]

    def image_keys(self) -> list[int]:
        """The image rows' keys, in list order (no failure or clip rows)."""
        return [k for k in self.keys() if isinstance(k, int)]

    def status(self, key: FileKey) -> str | None:
        return self._status.get(key)

    def set_status(self, key: FileKey, status: str, detail: str = "") -> None:
        item = self._rows.get(key)
        if item is None:
            return
        self._status[key] = status
        name = item.text().split(" ", 1)[-1] if item.text()[:1] in STATUS_LABELS.values() else item.text()
        item.setText(f"{STATUS_LABELS.get(status, '?')} {name}")
        item.setForeground(QBrush(STATUS_COLOURS.get(status, QColor(128, 128, 128))))
        item.setToolTip(f"{name}: {STATUS_TIPS.get(status, status)}" + (f"\n{detail}" if detail else ""))

    def select_key(self, key: FileKey) -> None:
        item = self._rows.get(key)
        if item is not None:
            self._silent = True
            self.setCurrentItem(item)
            self._silent = False

    def neighbour(self, key: int, step: int) -> int | None:
        """The next (step=+1) or previous readable image, skipping ones marked as errors (and any row
        that is not an image: a failure, a clip)."""
        keys = self.image_keys()
        i = keys.index(key) if key in keys else (-1 if step > 0 else len(keys))
        j = i + step
        while 0 <= j < len(keys):
            if self._status.get(keys[j]) != "error":
                return keys[j]
            j += step
        return None

    def _current_changed(self, current: QListWidgetItem | None, _previous) -> None:
        if current is None or self._silent:
            return
        key = current.data(Qt.ItemDataRole.UserRole)
        if isinstance(key, tuple) and key[:1] == ("failed",):
            return  # a file the project could not add: nothing to open (the tooltip says why)
        self.imageActivated.emit(key)
