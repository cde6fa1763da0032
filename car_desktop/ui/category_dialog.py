"""The "which concept?" dialog of a new mask and of Relabel: pick a project category or type a new one.

Names are shown shortened (``long_text.elide``) with the full text in the tooltip, so a 2,000-character
concept neither widens the dialog past the screen nor is lost: choosing it returns the full name.
Relabel opens on the mask's current category.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QLabel, QVBoxLayout, QWidget

from .long_text import elide, fit_to_screen, tooltip


class CategoryDialog(QDialog):
    """An editable list of category names; ``name()`` is the chosen or typed concept (full text)."""

    def __init__(self, title: str, label: str, names: list[str], current: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(elide(title))
        self.label = QLabel(elide(label, 90))
        self.label.setToolTip(tooltip(label))
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(30)
        for name in names:
            self.combo.addItem(elide(name), name)
            self.combo.setItemData(self.combo.count() - 1, tooltip(name), Qt.ItemDataRole.ToolTipRole)
        index = self.combo.findData(current) if current else -1
        if index >= 0:
            self.combo.setCurrentIndex(index)
        elif current:
            self.combo.setEditText(current)
        else:
            self.combo.setEditText("")
        edit = self.combo.lineEdit()
        assert edit is not None   # setEditable(True) above made it
        edit.selectAll()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addWidget(self.combo)
        layout.addWidget(buttons)
        fit_to_screen(self)

    def name(self) -> str:
        """The full name of the chosen category, or the typed text."""
        text = self.combo.currentText()
        index = self.combo.currentIndex()
        if index >= 0 and self.combo.itemText(index) == text:
            return str(self.combo.itemData(index))
        return text.strip()


def ask_category(parent: QWidget | None, title: str, label: str, names: list[str], current: str = "") -> str | None:
    """Run the dialog; the concept name, or None when cancelled or left empty."""
    dialog = CategoryDialog(title, label, names, current, parent)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    return dialog.name().strip() or None
