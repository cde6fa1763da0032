"""The keyboard shortcut list (Help > Keyboard shortcuts, F1)."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

SHORTCUTS: list[tuple[str, str]] = [
    ("Ctrl+O", "Open image"),
    ("Ctrl+Shift+O", "Open folder"),
    ("Ctrl+P", "Open project"),
    ("A / D", "Previous / next image"),
    ("Enter (in the concept bar)", "Run CaR on the typed concepts"),
    ("Shift+Enter (in the concept bar)", "New line in the concept list"),
    ("Esc", "Cancel the running job / abandon the polygon or SAM clicks"),
    ("Mouse wheel", "Zoom around the cursor"),
    ("Space + drag, middle button drag", "Pan"),
    ("F", "Fit the image to the window"),
    ("1", "Zoom to 100 %"),
    ("V", "Select (no tool)"),
    ("B / E", "Brush / eraser on the selected mask"),
    ("[ / ]  (or Ctrl+wheel)", "Smaller / larger brush"),
    ("P / Shift+P", "Polygon add / subtract (click points, double-click or Enter closes)"),
    ("S", "SAM clicks: left = object, right = background, Enter accepts, Backspace removes the last"),
    ("H", "Fill holes of the selected mask"),
    ("Delete", "Delete the selected mask"),
    ("Ctrl+Z / Ctrl+Shift+Z", "Undo / redo"),
    ("Ctrl+Enter", "Mark the image as reviewed"),
    ("Ctrl+Shift+Enter", "Review queue: accept the image and go to the next doubtful mask"),
    ("Ctrl+Shift+L", "Auto-label a folder"),
    ("Ctrl+E", "Export COCO JSON"),
    ("Ctrl+Alt+O", "Open a video clip (Video menu: also a folder of numbered frames)"),
    (", / .", "Clip: previous / next frame"),
    ("< / >", "Clip: previous / next key frame"),
    ("Ctrl+Space", "Clip: play / pause"),
    ("Ctrl+Alt+L", "Clip: CaR on key frames, then SAM 2 through the clip"),
    ("Ctrl+Alt+P", "Clip: propagate with SAM 2 (only what changed)"),
    ("Ctrl+Alt+R", "Clip: re-propagate the selected object from the frame shown"),
    ("F1", "This list"),
]


class HelpDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        table = QTableWidget(len(SHORTCUTS), 2)
        table.setHorizontalHeaderLabels(["Keys", "Action"])
        table.verticalHeader().setVisible(False)
        for row, (keys, action) in enumerate(SHORTCUTS):
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
        self.resize(640, 560)
