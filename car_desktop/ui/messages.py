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
from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem, QWidget

#: A row repeated within this many seconds (an error logged and shown) is kept once.
REPEAT_WINDOW_S = 2.0
MAX_ROWS = 2000
LEVEL_NAMES = {logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}


class MessageLog(QTreeWidget):
    """One row per message: time, level, text (tooltip: the full text); newest at the bottom."""

    added = Signal(str)     # the text of a new row (tests wait on it)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setColumnCount(3)
        self.setHeaderLabels(["Time", "Kind", "Message"])
        self.setRootIsDecorated(False)
        self.setWordWrap(True)
        self.setUniformRowHeights(False)
        self.setColumnWidth(0, 70)
        self.setColumnWidth(1, 60)
        self._last: tuple[str, float] = ("", 0.0)

    def add(self, text: str, level: str = "info") -> None:
        text = text.strip()
        now = time.monotonic()
        if not text or (text == self._last[0] and now - self._last[1] < REPEAT_WINDOW_S):
            return
        self._last = (text, now)
        item = QTreeWidgetItem([time.strftime("%H:%M:%S"), level, text])
        item.setToolTip(2, text)
        item.setData(2, Qt.ItemDataRole.UserRole, text)
        self.addTopLevelItem(item)
        while self.topLevelItemCount() > MAX_ROWS:
            self.takeTopLevelItem(0)
        self.scrollToItem(item)
        self.added.emit(text)

    def texts(self) -> list[str]:
        return [self.topLevelItem(i).data(2, Qt.ItemDataRole.UserRole) for i in range(self.topLevelItemCount())]


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
        except Exception:  # a bad format string must not break logging
            text = str(record.msg)
        self.relay.record.emit(text, LEVEL_NAMES.get(record.levelno, record.levelname.lower()))


def install_bridge(log_view: MessageLog, logger_name: str = "car_desktop") -> LogBridge:
    """Attach a bridge to the app's logger; the caller removes it (``remove_bridge``) when the window closes."""
    bridge = LogBridge(log_view)
    logging.getLogger(logger_name).addHandler(bridge)
    return bridge


def remove_bridge(bridge: LogBridge, logger_name: str = "car_desktop") -> None:
    logging.getLogger(logger_name).removeHandler(bridge)
