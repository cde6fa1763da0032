"""Long and odd names in narrow places: one way to shorten a concept name for a list, a combo box or a
dialog (the full text goes in a tooltip), and one way to keep a dialog inside the screen.

A concept may be 2,000 characters of text (a pasted paragraph) or carry tabs and newlines; every view
shows ``elide(name)`` and ``tooltip(name)`` instead of the raw text, so no column, combo box or dialog
sizes itself to it.
"""

from __future__ import annotations

import textwrap

from PySide6.QtWidgets import QApplication, QWidget

#: Characters of a name shown in lists, combo boxes and dialogs (the rest is in the tooltip).
MAX_CHARS = 60
ELLIPSIS = "…"


def one_line(text: str) -> str:
    """The text on one line: tabs, newlines and runs of spaces become one space."""
    return " ".join(str(text).split())


def elide(text: str, max_chars: int = MAX_CHARS) -> str:
    """The text on one line, cut in the middle to ``max_chars`` (start and end both stay readable)."""
    flat = one_line(text)
    if len(flat) <= max_chars:
        return flat
    head = (max_chars - 1) * 2 // 3
    tail = max_chars - 1 - head
    return flat[:head] + ELLIPSIS + (flat[-tail:] if tail > 0 else "")


def tooltip(text: str, width: int = 80) -> str:
    """The full text wrapped for a tooltip (a 2,000-character name stays a readable block)."""
    return "\n".join(textwrap.wrap(one_line(text), width)) or str(text)


def fit_to_screen(widget: QWidget, margin: int = 40) -> None:
    """Never wider (or taller) than the screen the widget is on: cap its maximum size and shrink it."""
    screen = widget.screen() if widget.screen() is not None else QApplication.primaryScreen()
    if screen is None:
        return
    area = screen.availableGeometry()
    max_w, max_h = max(200, area.width() - margin), max(150, area.height() - margin)
    widget.setMaximumSize(min(widget.maximumWidth(), max_w), min(widget.maximumHeight(), max_h))
    size = widget.size()
    if size.width() > max_w or size.height() > max_h:
        widget.resize(min(size.width(), max_w), min(size.height(), max_h))
