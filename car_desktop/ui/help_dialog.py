"""The keyboard shortcut list (Help > Keyboard shortcuts, F1), generated from the window's actions.

Every ``QAction`` of the window that has a shortcut is listed with its keys as Qt shows them in the
menus, so the list cannot forget one; keys that belong to no action (the mouse, the concept bar, keys
inside a tool) follow from ``OTHER_KEYS``.
"""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .long_text import fit_to_screen

#: Keys handled inside widgets and tools rather than by a menu action.
OTHER_KEYS: list[tuple[str, str]] = [
    ("Enter (in the concept bar)", "Run CaR on the typed concepts"),
    ("Shift+Enter (in the concept bar)", "New line in the concept list"),
    ("Esc", "In order: the tool's clicks or polygon edit, then the selected mask, then the running job"),
    ("Mouse wheel", "Zoom around the cursor"),
    ("Space + drag, middle button drag", "Pan"),
    ("[ / ]  (or Ctrl+wheel)", "Brush / eraser: smaller / larger"),
    ("Click, double-click or Enter", "Polygon + / −: add a point, close the polygon"),
    ("Backspace", "Polygon or SAM clicks: remove the last point"),
    ("Left / right click, Enter", "SAM clicks: object / background point, accept the mask"),
    ("Drag a vertex / inside", "Polygon edit: move the vertex / the whole shape"),
    ("Double-click an edge", "Polygon edit: insert a vertex"),
    ("Right-click a vertex, Delete", "Polygon edit: delete the vertex"),
    ("Enter / Esc", "Polygon edit: apply as one undoable step / leave the mask as it was"),
    ("Right click on a mask", "Mask menu: edit as polygon, show alone, relabel, accept, reject, delete"),
]


def action_rows(window: QWidget) -> list[tuple[str, str]]:
    """(keys, what) for every action of ``window`` that has a shortcut, in the order they were made."""
    rows: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for action in window.findChildren(QAction):
        keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts()
                         if not k.isEmpty())
        if not keys:
            continue
        text = action.text().replace("&", "").replace("…", "").strip()
        if (keys, text) not in seen:
            seen.add((keys, text))
            rows.append((keys, text))
    return rows


class HelpDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows = (action_rows(parent) if parent is not None else []) + OTHER_KEYS
        table = QTableWidget(len(rows), 2)
        table.setHorizontalHeaderLabels(["Keys", "Action"])
        table.verticalHeader().setVisible(False)
        for row, (keys, action) in enumerate(rows):
            table.setItem(row, 0, QTableWidgetItem(keys))
            table.setItem(row, 1, QTableWidgetItem(action))
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(table)
        layout.addWidget(buttons)
        self.table = table
        self.resize(700, 640)
        fit_to_screen(self)

    def keys(self) -> list[str]:
        """The keys column (tests)."""
        items = [self.table.item(r, 0) for r in range(self.table.rowCount())]
        return [item.text() if item is not None else "" for item in items]
