"""The "Label clip" dialog: the concepts, where CaR runs (a key frame every N frames and/or at scene
cuts) and which SAM 2 model carries the masks between key frames."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QWidget,
)

SAM2_MODELS = ("tiny", "small", "base_plus", "large")


@dataclass(frozen=True)
class VideoChoice:
    concepts: str
    every: int
    scene_cuts: bool
    cut_threshold: float
    sam2_model: str


class VideoLabelDialog(QDialog):
    """See the module docstring; ``choice()`` reads the fields."""

    def __init__(self, initial: VideoChoice, frame_count: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Label clip")
        self.concepts = QLineEdit(initial.concepts)
        self.concepts.setPlaceholderText('e.g. "car | automobile, person, road"')
        self.every = QSpinBox()
        self.every.setRange(0, max(1, frame_count))
        self.every.setValue(initial.every)
        self.every.setSpecialValueText("first frame only")
        self.every.setSuffix(" frames")
        self.cuts = QCheckBox("also at scene cuts")
        self.cuts.setChecked(initial.scene_cuts)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.05, 0.95)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(initial.cut_threshold)
        self.threshold.setToolTip("Colour change between two frames that counts as a cut (higher: fewer cuts)")
        self.sam2 = QComboBox()
        self.sam2.addItems(list(SAM2_MODELS))
        self.sam2.setCurrentText(initial.sam2_model)
        form = QFormLayout(self)
        form.addRow("Concepts", self.concepts)
        form.addRow("Key frame every", self.every)
        form.addRow("", self.cuts)
        form.addRow("Scene-cut threshold", self.threshold)
        form.addRow("SAM 2.1 model", self.sam2)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def choice(self) -> VideoChoice:
        return VideoChoice(self.concepts.text().strip(), self.every.value(), self.cuts.isChecked(),
                           round(self.threshold.value(), 2), self.sam2.currentText())
