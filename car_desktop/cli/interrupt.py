"""Ctrl+C in the long commands (batch, tune): the first press finishes the current item, the second
stops at once. ``InterruptHandler`` installs itself as the SIGINT handler for a ``with`` block (main
thread only) and announces each step on the progress display."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Protocol, Self

from ..cancel import CancelToken


class Announcer(Protocol):
    """Where the handler says what it does (the command's progress bar)."""

    def message(self, text: str) -> None: ...


class InterruptHandler:
    """SIGINT: the first sets ``stop`` (finish the current item), the second ``cancel`` (at once)."""

    def __init__(self, stop: CancelToken, cancel: CancelToken, bar: Announcer, item: str = "image") -> None:
        self.stop, self.cancel, self.bar, self.item = stop, cancel, bar, item
        self._old: Any = None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.stop.cancelled:
            self.stop.cancel()
            self.bar.message(f"stopping after the current {self.item} (Ctrl+C again to stop at once)...")
        else:
            self.cancel.cancel()
            self.bar.message(f"stopping now; the current {self.item} is dropped")
