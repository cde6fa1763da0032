"""Export: COCO JSON options (format, mode, scores, empty categories) and a progress dialog; the work
runs on a worker. The options are ``export_coco``'s keyword arguments, the same the CLI's
``export`` passes (``--keep-empty-categories`` is the checkbox "Keep categories without annotations")."""

from __future__ import annotations

import logging

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from ..annotations.coco_export import FORMATS, MODES

log = logging.getLogger(__name__)


class CocoExportDialog(QDialog):
    """Asks where and how; ``options()`` gives the keyword arguments of ``export_coco``."""

    def __init__(self, default_path: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export COCO JSON")
        self.path = QLineEdit(default_path)
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        self.fmt = QComboBox()
        self.fmt.addItems(list(FORMATS))
        self.fmt.setToolTip("auto: polygons where exact, RLE for masks with holes or many parts")
        self.mode = QComboBox()
        self.mode.addItems(list(MODES))
        self.mode.setToolTip("instance: one annotation per mask; components: one per connected part; "
                             "semantic: one per category and image")
        self.scores = QCheckBox("Include scores")
        self.scores.setChecked(True)
        self.current_only = QCheckBox("Only the current image")
        self.keep_empty = QCheckBox("Keep categories without annotations")
        self.keep_empty.setToolTip("List every concept of the project, even those without a mask in this export "
                                   "(category ids are the project's either way, so they stay stable)")
        form = QFormLayout(self)
        form.addRow("File", row)
        form.addRow("Segmentation", self.fmt)
        form.addRow("Mode", self.mode)
        form.addRow("", self.scores)
        form.addRow("", self.current_only)
        form.addRow("", self.keep_empty)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export COCO JSON", self.path.text(), "COCO JSON (*.json)")
        if path:
            self.path.setText(path)

    def options(self) -> dict:
        return {"fmt": self.fmt.currentText(), "mode": self.mode.currentText(),
                "include_score": self.scores.isChecked(), "keep_empty_categories": self.keep_empty.isChecked()}
