"""The message log: every status message, error and warning of the session, in full, with its time.

The status bar shows one message at a time and cuts long ones; ``MessageLog`` (the "Messages" dock)
keeps them all, each row's tooltip holding the whole text. ``LogBridge`` is a ``logging.Handler`` for
the app's loggers: a warning logged by the engine on a worker thread reaches the log through a queued
Qt signal, so nothing is only in the terminal.
"""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QListView, QListWidget, QListWidgetItem, QWidget

#: A row repeated within this many seconds (an error logged and shown) is kept once.
REPEAT_WINDOW_S = 2.0
MAX_ROWS = 2000
LEVEL_NAMES = {logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}
LEVEL_COLOURS = {"warning": QColor(200, 120, 20), "error": QColor(210, 50, 50)}


class MessageLog(QListWidget):
    """One row per message, "time  kind  text", wrapped to the width (tooltip: the full text); newest last."""

    added = Signal(str)     # the text of a new row (tests wait on it)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)     # rows re-wrap when the dock is resized
        self.setUniformItemSizes(False)
        self.setAlternatingRowColors(True)
        self._last: tuple[str, float] = ("", 0.0)

    def add(self, text: str, level: str = "info") -> None:
        text = text.strip()
        now = time.monotonic()
        if not text or (text == self._last[0] and now - self._last[1] < REPEAT_WINDOW_S):
            return
        self._last = (text, now)
        item = QListWidgetItem(f"{time.strftime('%H:%M:%S')}  {level}:  {text}")
        item.setToolTip(text)
        item.setData(Qt.ItemDataRole.UserRole, text)
        item.setData(Qt.ItemDataRole.UserRole + 1, level)
        if level in LEVEL_COLOURS:
            item.setForeground(QBrush(LEVEL_COLOURS[level]))
        self.addItem(item)
        while self.count() > MAX_ROWS:
            self.takeItem(0)
        self.scrollToItem(item)
        self.added.emit(text)

    def texts(self) -> list[str]:
        return [self.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.count())]


class _Relay(QObject):
    record = Signal(str, str)    # text, level


class LogBridge(logging.Handler):
    """Sends the app's log records at ``level`` and above to a ``MessageLog`` from any thread."""

    def __init__(self, log_view: MessageLog, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.relay = _Relay()    # created on the GUI thread: emits from workers are queued to it
        self.relay.record.connect(log_view.add, Qt.ConnectionType.QueuedConnection)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not break logging
            text = str(record.msg)
        self.relay.record.emit(text, LEVEL_NAMES.get(record.levelno, record.levelname.lower()))


def install_bridge(log_view: MessageLog, logger_name: str = "car_desktop") -> LogBridge:
    """Attach a bridge to the app's logger; the caller removes it (``remove_bridge``) when the window closes."""
    bridge = LogBridge(log_view)
    logging.getLogger(logger_name).addHandler(bridge)
    return bridge


def remove_bridge(bridge: LogBridge, logger_name: str = "car_desktop") -> None:
    logging.getLogger(logger_name).removeHandler(bridge)
