"""The one terminal progress bar of the command line (downloads, hashing, import, export, batch).

``ProgressBar(label, unit)`` draws ``label [#####.....] done/total  pct  rate  time left  tail`` on
stderr. On a terminal the line is redrawn in place at most ten times a second; when stderr is not a
terminal (a log file, CI) it prints a line only for ``update(..., log=True)`` calls and at each
tenth of the way, so logs stay short. ``stage(label, total)`` ends the current line and starts the
next step (import: reading, parsing, images, annotations). ``message(text)`` prints a line above the
bar. Units: "bytes" (shown in MB, rate in MB/s), "img" (rate per minute) or any other word.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:,.1f} MB"


class ProgressBar:
    """See the module docstring. Call it as ``bar(done, total)`` (a progress callback) or ``update``."""

    def __init__(self, label: str = "", unit: str = "", stream: TextIO | None = None, width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.unit = unit
        self._drawn = False
        self.stage(label)

    # ------------------------------------------------------------------------------- drawing
    def stage(self, label: str, total: int | None = None) -> None:
        """Start a new step: finish the current line, reset the clock and the rate."""
        self._end_line()
        self.label = label
        self.total = total
        self._start = time.monotonic()
        self._first: int | None = None
        self._last_draw = 0.0
        self._last_tenth = -1

    def __call__(self, done: int, total: int | None = None) -> None:
        self.update(done, total)

    def update(self, done: int, total: int | None = None, *, tail: str = "", log: bool = False) -> None:
        """Show ``done`` of ``total`` (None: the stage's total, or unknown)."""
        total = self.total if total is None else total
        now = time.monotonic()
        if self._first is None:
            self._first = done
        finished = total is not None and done >= total
        tenth = int(10 * done / total) if total else -1
        if self.tty:
            if now - self._last_draw < 0.1 and not finished and not log:
                return
            self._last_draw = now
            self.stream.write("\r" + self.line(done, total, tail)[:160].ljust(100))
            self.stream.flush()
            self._drawn = True
        elif log or tenth > self._last_tenth:
            self._last_tenth = max(tenth, self._last_tenth)
            print(self.line(done, total, tail), file=self.stream, flush=True)

    def line(self, done: int, total: int | None, tail: str = "") -> str:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        moved = done - (self._first or 0)
        rate = moved / elapsed if moved > 0 else None
        parts = [self.label] if self.label else []
        if total:
            frac = min(max(done / total, 0.0), 1.0)
            filled = int(self.width * frac)
            parts.append(f"[{'#' * filled}{'.' * (self.width - filled)}]")
            parts.append(f"{self._amount(done)}/{self._amount(total)}" if self.unit != "bytes"
                         else f"{format_mb(done)} / {format_mb(total)}")
            parts.append(f"{100 * frac:5.1f}%")
        else:
            parts.append(self._amount(done) if self.unit != "bytes" else format_mb(done))
        parts.append(self._rate(rate))
        if total and rate:
            parts.append(f"{format_duration(max(total - done, 0) / rate)} left")
        text = "  ".join(p for p in parts if p)
        return f"{text}  {tail}" if tail else text

    def _amount(self, n: int) -> str:
        return f"{n:,}"

    def _rate(self, per_s: float | None) -> str:
        if self.unit == "bytes":
            return f"{(per_s or 0) / 1e6:6.1f} MB/s"
        if self.unit == "img":
            return f"{per_s * 60:.1f} img/min" if per_s else "-- img/min"
        return f"{per_s:,.0f} {self.unit or 'items'}/s" if per_s else ""

    def message(self, text: str) -> None:
        """Print ``text`` on its own line (the bar, if drawn, is redrawn by the next update)."""
        self._end_line()
        print(text, file=self.stream, flush=True)

    def _end_line(self) -> None:
        if self._drawn and self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = False

    def close(self) -> None:
        self._end_line()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
