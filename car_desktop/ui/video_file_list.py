"""The file list with clips: each clip is one row (its frame count and how far it is labelled).

``MediaFileList`` is the window's ``FileList`` plus rows keyed ``("video", clip id)``, set with
``set_videos`` and kept when the image rows are replaced. Picking a clip row emits
``videoActivated(clip id)``; stepping to the next or previous image (A / D) skips clip rows
(``FileList.neighbour`` steps over image rows only).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QListWidgetItem, QWidget

from .file_list import FileKey, FileList


class MediaFileList(FileList):
    """See the module docstring."""

    videoActivated = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._videos: list[tuple[int, str, int, str]] = []

    def set_images(self, entries: list[tuple[int, str, str]]) -> None:
        super().set_images(entries)
        self._add_video_rows()

    def set_videos(self, videos: list[tuple[int, str, int, str]]) -> None:
        """Rows (clip id, name, frame count, status): status "new", "auto" (some frames labelled) or
        "reviewed" (every frame reviewed)."""
        self._silent = True
        for key in [k for k in self._rows if isinstance(k, tuple) and k[:1] == ("video",)]:
            self.takeItem(self.row(self._rows.pop(key)))
            self._status.pop(key, None)
        self._silent = False
        self._videos = list(videos)
        self._add_video_rows()

    def _add_video_rows(self) -> None:
        self._silent = True
        for video_id, name, frames, status in self._videos:
            key: FileKey = ("video", video_id)
            item = QListWidgetItem(f"{name} — {frames} frames")
            item.setData(Qt.ItemDataRole.UserRole, key)
            self.addItem(item)
            self._rows[key] = item
            self.set_status(key, status, f"video clip, {frames} frames")
        self._silent = False

    def clip_ids(self) -> list[int]:
        """The clip rows' ids, in list order."""
        return [int(k[1]) for k in self.keys() if isinstance(k, tuple) and k[:1] == ("video",)]

    def select_video(self, video_id: int) -> None:
        self.select_key(("video", video_id))

    def _current_changed(self, current: QListWidgetItem | None, previous) -> None:
        if current is not None and not self._silent:
            key = current.data(Qt.ItemDataRole.UserRole)
            if isinstance(key, tuple) and key[:1] == ("video",):
                self.videoActivated.emit(int(key[1]))
                return
        super()._current_changed(current, previous)
