"""A thread-safe cancel flag checked by long-running work between stages.

The GUI's job runner or the CLI's Ctrl+C handler calls ``cancel()``; the engine, the folder loop and
the exporters call ``check()`` at safe points, which raises ``Cancelled`` so that no result is half-built.
It lives at the package root because the engine, the annotations' callers and the UI all share it.
"""

from __future__ import annotations

import threading

from .errors import Cancelled


class CancelToken:
    """A flag that one thread sets and another polls."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancellation is requested (True) or ``timeout`` seconds pass (False)."""
        return self._event.wait(timeout)

    def check(self) -> None:
        """Raise ``Cancelled`` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled("Cancelled by the user.")


def check(token: CancelToken | None) -> None:
    """``token.check()`` that accepts ``None`` (no cancellation possible)."""
    if token is not None:
        token.check()
