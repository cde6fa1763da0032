"""A one-line progress display on stderr for the evaluation commands (eval, eval-dataset, tune).

Redrawn in place on a terminal; on a pipe or log file it prints a line every tenth of the work, so logs
stay short. ``done``/``total`` are whatever the command counts (images, image x setting).
"""

from __future__ import annotations

import sys
import time

from .batch import format_duration


class ProgressLine:
    def __init__(self, label: str, stream=None, width: int = 24) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.start = time.monotonic()
        self._last_tenth = -1
        self._drawn = False

    def __call__(self, done: int, total: int, text: str = "") -> None:
        fraction = 1.0 if total <= 0 else min(1.0, done / total)
        elapsed = time.monotonic() - self.start
        eta = elapsed / done * (total - done) if done else None
        bar = "#" * int(self.width * fraction) + "." * (self.width - int(self.width * fraction))
        line = f"{self.label} [{bar}] {done}/{total} {100 * fraction:3.0f}%  {format_duration(eta)} left  {text}"
        if self.tty:
            print("\r" + line[:150].ljust(100), end="", file=self.stream, flush=True)
            self._drawn = True
        elif int(10 * fraction) != self._last_tenth:
            self._last_tenth = int(10 * fraction)
            print(line, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A line of its own (the bar is redrawn by the next update)."""
        self.close()
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._drawn:
            print(file=self.stream, flush=True)
            self._drawn = False
