"""The two windows of "Auto-label folder…": the options dialog and the (modeless) progress dialog.

The options: the folder, the concept list (prefilled from the concept bar), the preset and the SAM
mode, and whether to redo images already labelled with the same settings. Images a person reviewed
or edited are always skipped; the dialog says so instead of offering a switch. The progress dialog
shows the count, the rate and time left, the image in progress and every failure so far; it does not
block the window, and hiding it leaves the run going (the status bar keeps showing it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..autolabel import AutoLabelProgress
from ..errors import CaRDesktopError
from .autolabel_run import AutoLabelRequest
from .engine_client import PRESET_DESCRIPTIONS, PRESETS, SAM_MODES, CaRConfig, ConceptList, preset

log = logging.getLogger(__name__)


def format_duration(seconds: float | None) -> str:
    """'about 40 s', 'about 3 min', 'about 1 h 05 min'; '' when unknown."""
    if seconds is None:
        return ""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"about {max(s, 1)} s"
    if s < 3600:
        return f"about {round(s / 60)} min"
    return f"about {s // 3600} h {(s % 3600) // 60:02d} min"


class AutoLabelDialog(QDialog):
    """Asks what to auto-label; ``request()`` gives the ``AutoLabelRequest`` once accepted."""

    def __init__(self, *, folder: str = "", concepts: str = "", preset_name: str = "objects",
                 sam_mode: str = "prompted", base_config: CaRConfig | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Auto-label folder")
        self._base = base_config
        self._parsed: ConceptList | None = None
        self.folder = QLineEdit(folder)
        self.folder.setPlaceholderText("Folder of images")
        browse = QPushButton("…")
        browse.setToolTip("Choose the folder")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        self.concepts = QPlainTextEdit(concepts)
        self.concepts.setPlaceholderText("car | automobile, person, road, sky")
        self.concepts.setFixedHeight(self.fontMetrics().lineSpacing() * 4 + 14)
        self.concepts.setTabChangesFocus(True)
        self.preset_combo = QComboBox()
        for name in PRESETS:
            self.preset_combo.addItem(name, name)
            self.preset_combo.setItemData(self.preset_combo.count() - 1, PRESET_DESCRIPTIONS.get(name, ""),
                                          Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.setCurrentIndex(max(0, self.preset_combo.findData(preset_name)))
        self.sam_combo = QComboBox()
        for mode in SAM_MODES:
            self.sam_combo.addItem(mode, mode)
        self.sam_combo.setCurrentIndex(max(0, self.sam_combo.findData(sam_mode)))
        self.overwrite = QCheckBox("Redo images already auto-labelled with these concepts and settings")
        self.skip_reviewed = QCheckBox("Skip images a person reviewed or edited")
        self.skip_reviewed.setChecked(True)
        self.skip_reviewed.setEnabled(False)
        self.skip_reviewed.setToolTip("Always on: auto-labelling never overwrites a person's work.")
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color: #d9534f;")
        self.error_label.setWordWrap(True)
        self.error_label.setVisible(False)
        note = QLabel("Runs in the background: keep annotating while it works. Masks appear in the file list "
                      "as each image finishes; a second run skips images already done.")
        note.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Folder", row)
        form.addRow("Concepts", self.concepts)
        form.addRow("Preset", self.preset_combo)
        form.addRow("SAM", self.sam_combo)
        form.addRow("", self.skip_reviewed)
        form.addRow("", self.overwrite)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Start")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)
        self.resize(560, 0)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder to auto-label", self.folder.text())
        if path:
            self.folder.setText(path)

    def config(self) -> CaRConfig:
        """The base config (the concept bar's, with its advanced settings) when its preset is chosen,
        else the chosen preset's; with the chosen SAM mode."""
        name, sam = self.preset_combo.currentData(), self.sam_combo.currentData()
        plain = preset(name, sam_mode=sam)
        if self._base is None:
            return plain
        plain = plain.replace(device=self._base.device, precision=self._base.precision)
        if self._base.preset != name:
            return plain
        cfg = self._base.replace(sam_mode=sam)
        if set(cfg.prompts) == set(plain.prompts):
            # The bar lists prompts in its checkbox order: keep the preset's, so a run from the window
            # and one from the command line with the same preset share their resume key.
            cfg = cfg.replace(prompts=plain.prompts)
        return cfg

    def problem(self) -> str:
        """Why the request cannot start, or ''."""
        folder = self.folder.text().strip()
        if not folder or not Path(folder).is_dir():
            return "Choose a folder of images that exists."
        try:
            self._parsed = ConceptList.parse(self.concepts.toPlainText(), check_length=False)  # no tokenizer here
            self.config()
        except CaRDesktopError as exc:
            return str(exc)
        return ""

    def accept(self) -> None:
        text = self.problem()
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))
        if not text:
            super().accept()

    def request(self) -> AutoLabelRequest:
        """The accepted request (``accept`` parsed the concepts)."""
        assert self._parsed is not None, "request() is for an accepted dialog"
        return AutoLabelRequest(self._parsed, self.config(), Path(self.folder.text().strip()),
                                self.overwrite.isChecked())


class AutoLabelProgressDialog(QDialog):
    """Count, time left, current image and failures of the running auto-label run; Cancel stops it."""

    cancelRequested = Signal()

    def __init__(self, concepts: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Auto-labelling")
        self.setModal(False)
        self.setWindowModality(Qt.WindowModality.NonModal)
        short = concepts.replace("\n", ", ")
        self.concepts_label = QLabel(f"Concepts: {short if len(short) < 90 else short[:87] + '…'}")
        self.concepts_label.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)
        self.count_label = QLabel("Listing the images…")
        self.time_label = QLabel("")
        self.current_label = QLabel("")
        self.current_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.failures_label = QLabel("")
        self.failures = QListWidget()
        self.failures.setVisible(False)
        self.failures.setMaximumHeight(140)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop now; the images finished so far stay labelled (a new run resumes)")
        self.cancel_button.clicked.connect(self._cancel_clicked)
        self.hide_button = QPushButton("Hide")
        self.hide_button.setToolTip("Keep working: the run goes on and the status bar shows it")
        self.hide_button.clicked.connect(self.hide)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.hide_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.concepts_label)
        layout.addWidget(self.bar)
        layout.addWidget(self.count_label)
        layout.addWidget(self.time_label)
        layout.addWidget(self.current_label)
        layout.addWidget(self.failures_label)
        layout.addWidget(self.failures)
        layout.addLayout(buttons)
        self.finished_run = False
        self.resize(520, 0)

    def _cancel_clicked(self) -> None:
        if self.finished_run:
            self.close()
            return
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancelling…")
        self.cancelRequested.emit()

    @staticmethod
    def count_text(p: AutoLabelProgress) -> str:
        text = f"{p.processed} of {p.todo} images"
        extras = []
        if p.skipped:
            extras.append(f"{p.skipped} skipped (already done, reviewed or edited)")
        if p.failed:
            extras.append(f"{p.failed} failed")
        return text + (" · " + " · ".join(extras) if extras else "")

    def update_progress(self, p: AutoLabelProgress) -> None:
        if p.todo:
            self.bar.setRange(0, p.todo)
            self.bar.setValue(p.processed)
        self.count_label.setText(self.count_text(p))
        parts = []
        if p.rate_per_min is not None:
            parts.append(f"{p.rate_per_min:.1f} images/min")
        left = format_duration(p.eta_s)
        if left and p.processed < p.todo:
            parts.append(f"{left} left")
        self.time_label.setText(" · ".join(parts))
        if p.event == "image started" and p.current:
            self.current_label.setText(f"Now: {p.current}")
        self._show_failures(p)

    def _show_failures(self, p: AutoLabelProgress) -> None:
        if len(p.failures) != self.failures.count():
            self.failures.clear()
            for f in p.failures:
                self.failures.addItem(f"{f.path}: {f.reason}")
            self.failures.scrollToBottom()
        self.failures.setVisible(bool(p.failures))
        self.failures_label.setText(f"Failures so far: {len(p.failures)}" if p.failures else "")

    def show_finished(self, p: AutoLabelProgress | None, stopped: bool, error: str) -> None:
        self.finished_run = True
        self.cancel_button.setEnabled(True)
        self.cancel_button.setText("Close")
        self.hide_button.setVisible(False)
        if p is not None:
            self.update_progress(p)
            if not p.todo:
                self.bar.setRange(0, 1)
                self.bar.setValue(1)
        self.current_label.setText("")
        if error:
            self.time_label.setText(f"Stopped: {error}")
        elif stopped:
            self.time_label.setText("Cancelled: the images finished so far are saved; a new run goes on from here.")
        else:
            elapsed = format_duration(p.elapsed_s if p is not None else None).replace("about ", "")
            self.time_label.setText(f"Finished in {elapsed}." if elapsed else "Finished.")
        self.setWindowTitle("Auto-labelling: " + ("stopped" if (stopped or error) else "finished"))
