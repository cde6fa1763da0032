"""Panels that query the project refresh only while visible: bursts of changes are coalesced into one
query, and a hidden panel just notes that it is out of date and refreshes when it is shown."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QTimer

if TYPE_CHECKING:
    from PySide6.QtWidgets import QWidget as _Base
else:
    _Base = object


class LazyRefreshMixin(_Base):
    """For a QWidget with ``project`` and ``refresh()``: call ``init_lazy_refresh()`` in ``__init__``, then
    ``schedule_refresh(delay_ms)`` whenever the data may have changed. List it before QWidget."""

    project: Any

    if TYPE_CHECKING:
        def refresh(self) -> Any: ...

    def init_lazy_refresh(self) -> None:
        self._stale = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._timer_fired)

    def schedule_refresh(self, delay_ms: int = 400) -> None:
        if self.project is None:
            return
        if self.isVisible():
            self._timer.start(delay_ms)
        else:
            self._stale = True

    def _timer_fired(self) -> None:
        if self.isVisible():
            self.refresh()
        else:
            self._stale = True

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._stale:
            self._stale = False
            self.schedule_refresh(0)
