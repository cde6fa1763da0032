"""The concept bar: what to look for (typed concepts), how (preset, SAM mode) and the advanced drawer.

Concepts are separated by commas or new lines; "car | automobile" gives synonyms of one concept.
Enter runs (Shift+Enter starts a new line): the text is parsed here, once, and the ``ConceptList``
travels on to the engine client and the project. The advanced drawer holds eta, theta, lam, the visual
prompts and the background words; changing the preset resets them to the preset's values.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import CaRDesktopError
from .engine_client import (
    DEFAULT_BACKGROUND_WORDS,
    PRESET_DESCRIPTIONS,
    PRESETS,
    SAM_MODES,
    VISUAL_PROMPTS,
    CaRConfig,
    ConceptList,
    preset,
)

log = logging.getLogger(__name__)


class ConceptEdit(QPlainTextEdit):
    """A small multi-line edit where Enter submits and Shift+Enter inserts a line break."""

    submitted = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText("Concepts, e.g.  car | automobile, person, road, sky   (Enter runs)")
        self.setTabChangesFocus(True)
        self.setFixedHeight(self.fontMetrics().lineSpacing() * 2 + 14)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
            event.modifiers() & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.ControlModifier)
        ):
            self.submitted.emit()
            event.accept()
            return
        super().keyPressEvent(event)


class ConceptBar(QWidget):
    """Emits ``runRequested(concepts, config)`` (a ``ConceptList`` and a ``CaRConfig``) when the user
    asks for a CaR run."""

    runRequested = Signal(object, object)
    presetChanged = Signal(str)

    def __init__(self, default_preset: str = "objects", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = ConceptEdit()
        self.edit.submitted.connect(self.request_run)
        self.recent_button = QToolButton()
        self.recent_button.setText("Recent")
        self.recent_button.setToolTip("Concept lists used before in this project")
        self.recent_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.recent_menu = QMenu(self)
        self.recent_button.setMenu(self.recent_menu)
        self.preset_combo = QComboBox()
        for name in PRESETS:
            self.preset_combo.addItem(name, name)
            self.preset_combo.setItemData(self.preset_combo.count() - 1, PRESET_DESCRIPTIONS.get(name, ""),
                                          Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.setToolTip("Preset: thresholds and prompts tuned for a kind of image")
        self.sam_combo = QComboBox()
        for mode in SAM_MODES:
            self.sam_combo.addItem(f"SAM: {mode}", mode)
        self.sam_combo.setToolTip("How SAM refines the masks (prompted by CaR's masks, automatic, or off)")
        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.run_button.setToolTip("Segment the concepts in this image (Enter)")
        self.run_button.clicked.connect(self.request_run)
        self.advanced_button = QToolButton()
        self.advanced_button.setText("Advanced")
        self.advanced_button.setCheckable(True)
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color: #d9534f;")
        self.error_label.setVisible(False)

        # The advanced drawer.
        self.drawer = QFrame()
        self.drawer.setFrameShape(QFrame.Shape.StyledPanel)
        form = QFormLayout(self.drawer)
        self.eta = self._spin("Binarisation threshold of the proposals")
        self.theta = self._spin("Score a concept needs to stay")
        self.lam = self._spin("Threshold of the CAM box used for refinement")
        row = QHBoxLayout()
        row.addWidget(QLabel("eta"))
        row.addWidget(self.eta)
        row.addWidget(QLabel("theta"))
        row.addWidget(self.theta)
        row.addWidget(QLabel("lambda"))
        row.addWidget(self.lam)
        row.addStretch(1)
        form.addRow("Thresholds", row)
        prompts_row = QHBoxLayout()
        self.prompt_boxes: dict[str, QCheckBox] = {}
        for name in VISUAL_PROMPTS:
            box = QCheckBox(name)
            self.prompt_boxes[name] = box
            prompts_row.addWidget(box)
        prompts_row.addStretch(1)
        form.addRow("Visual prompts", prompts_row)
        self.background = QLineEdit()
        self.background.setToolTip("Words that compete with the concepts for the background (comma separated)")
        form.addRow("Background words", self.background)
        self.drawer.setVisible(False)
        self.advanced_button.toggled.connect(self.drawer.setVisible)

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.edit, 1)
        side = QVBoxLayout()
        side.setSpacing(2)
        line1 = QHBoxLayout()
        line1.addWidget(self.preset_combo)
        line1.addWidget(self.sam_combo)
        line2 = QHBoxLayout()
        line2.addWidget(self.recent_button)
        line2.addWidget(self.advanced_button)
        line2.addWidget(self.run_button)
        side.addLayout(line1)
        side.addLayout(line2)
        top.addLayout(side)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(self.error_label)
        layout.addWidget(self.drawer)

        self.preset_combo.currentIndexChanged.connect(self._on_preset)
        self.set_preset(default_preset if default_preset in PRESETS else "objects")

    @staticmethod
    def _spin(tip: str) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(0.0, 1.0)
        spin.setSingleStep(0.05)
        spin.setDecimals(2)
        spin.setToolTip(tip)
        return spin

    # ----- state
    def text(self) -> str:
        return self.edit.toPlainText()

    def set_text(self, text: str) -> None:
        self.edit.setPlainText(text)

    def set_preset(self, name: str) -> None:
        index = self.preset_combo.findData(name)
        if index >= 0:
            if index == self.preset_combo.currentIndex():
                self._on_preset(index)
            else:
                self.preset_combo.setCurrentIndex(index)

    def _on_preset(self, _index: int) -> None:
        name = self.preset_combo.currentData()
        cfg = preset(name)
        self.eta.setValue(cfg.eta)
        self.theta.setValue(cfg.theta)
        self.lam.setValue(cfg.lam)
        for p, box in self.prompt_boxes.items():
            box.setChecked(p in cfg.prompts)
        self.background.setText(", ".join(cfg.background_words))
        self.presetChanged.emit(name)

    def config(self, base: CaRConfig | None = None) -> CaRConfig:
        """The engine config the bar describes (preset plus the drawer's overrides)."""
        name = self.preset_combo.currentData()
        prompts = tuple(p for p, box in self.prompt_boxes.items() if box.isChecked())
        words = tuple(w.strip() for w in self.background.text().split(",") if w.strip())
        overrides = dict(
            eta=round(self.eta.value(), 4), theta=round(self.theta.value(), 4), lam=round(self.lam.value(), 4),
            prompts=prompts or preset(name).prompts, background_words=words or DEFAULT_BACKGROUND_WORDS,
            sam_mode=self.sam_combo.currentData(),
        )
        if base is not None:
            overrides.update(device=base.device, precision=base.precision)
        return preset(name, **overrides)

    def set_recent(self, lists: list[str]) -> None:
        self.recent_menu.clear()
        for text in lists:
            label = text.replace("\n", ", ")
            action = self.recent_menu.addAction(label if len(label) < 80 else label[:77] + "…")
            action.triggered.connect(lambda _=False, t=text: self.set_text(t))
        self.recent_button.setEnabled(bool(lists))

    def show_error(self, text: str) -> None:
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))

    # ----- running
    def request_run(self) -> None:
        try:
            concepts = ConceptList.parse(self.text(), check_length=False)  # no tokenizer here
            config = self.config()
        except CaRDesktopError as exc:
            self.show_error(str(exc))
            return
        self.show_error("")
        self.runRequested.emit(concepts, config)
