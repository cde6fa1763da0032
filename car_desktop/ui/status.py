"""The status bar: the running job's stage and step, a progress bar, Cancel, and device / models.

Messages stay at least ``MIN_MESSAGE_MS`` and each one is also posted (``messagePosted``) for the
message log, which keeps the full text; the hover readout (pixel, concept under the cursor) has its own
field, so moving the mouse never replaces a message.

It listens to ``JobRunner`` signals, so any background job (CaR run, model load, download, export)
shows up without the window having to relay it.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar, QWidget

from ..autolabel import AutoLabelProgress
from .engine_client import Progress
from .workers import JobInfo, JobRunner

log = logging.getLogger(__name__)

STAGE_NAMES = {
    "load": "loading models", "proposals": "proposals", "classifier": "classifier", "crf": "CRF",
    "sam": "SAM", "sam_embed": "SAM embedding", "download": "downloading", "export": "exporting",
}


def describe_progress(payload: Any) -> tuple[str, float | None]:
    """Turn an engine ``Progress`` (or a (done, total) tuple, or a string) into (text, fraction)."""
    if payload is None:
        return "", None
    if isinstance(payload, str):
        return payload, None
    if isinstance(payload, tuple) and len(payload) == 2:
        done, total = payload
        if total:
            return f"{done}/{total}", max(0.0, min(1.0, done / total))
        return f"{done}", None
    if isinstance(payload, AutoLabelProgress):
        text = f"{payload.processed}/{payload.todo} images"
        if payload.failed:
            text += f", {payload.failed} failed"
        return text, payload.fraction
    if isinstance(payload, Progress):
        text = STAGE_NAMES.get(payload.stage, payload.stage)
        if payload.step is not None:
            text += f", step {payload.step}"
        if payload.message:
            text += f": {payload.message}"
        return text, payload.fraction
    return str(payload), None


MIN_MESSAGE_MS = 4000


class JobStatusBar(QStatusBar):
    """Stage text, progress bar and Cancel for the newest running job; device and models on the right."""

    cancelRequested = Signal(str)   # job kind
    messagePosted = Signal(str)     # every message shown, in full (the message log keeps them)

    def __init__(self, runner: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.stage_label = QLabel("")
        self.stage_label.setMinimumWidth(200)
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(220)
        self.bar.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job (Esc)")
        self.cancel_button.clicked.connect(self._cancel_clicked)
        self.device_label = QLabel("")
        self.device_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.pixel_label = QLabel("")
        self.pixel_label.setToolTip("Pixel under the cursor")
        self.pixel_label.setContentsMargins(8, 0, 8, 0)
        self.hover_label = QLabel("")
        self.hover_label.setContentsMargins(8, 0, 8, 0)
        self.hover_label.setToolTip("Mask under the cursor")
        # Text never widens the window (it must narrow to 800 px): these fields take what room there is,
        # and their tooltips hold the whole text.
        for label in (self.hover_label, self.device_label):
            label.setMinimumWidth(60)
        self.addPermanentWidget(self.hover_label)
        self.addPermanentWidget(self.stage_label)
        self.addPermanentWidget(self.bar)
        self.addPermanentWidget(self.cancel_button)
        self.addPermanentWidget(self.pixel_label)
        self.addPermanentWidget(self.device_label)
        self._job: JobInfo | None = None
        self._set_idle()
        runner.started.connect(self._on_started)
        runner.progress.connect(self._on_progress)
        runner.ended.connect(self._on_end)

    def showMessage(self, text: str, timeout: int | None = 0) -> None:
        """Show ``text`` (kept at least ``MIN_MESSAGE_MS`` unless 0 or None = until replaced) and log it."""
        super().showMessage(text, max(timeout, MIN_MESSAGE_MS) if timeout else 0)
        self.setToolTip(text)      # the whole text, when the bar cuts it
        if text:
            self.messagePosted.emit(text)

    def set_hover(self, text: str) -> None:
        self.hover_label.setText(text)
        self.hover_label.setToolTip(text or "Mask under the cursor")

    def set_device_text(self, text: str) -> None:
        self.device_label.setText(text)

    def _set_idle(self) -> None:
        self.stage_label.setText("")
        self.bar.setVisible(False)
        self.cancel_button.setVisible(False)

    def _on_started(self, job: JobInfo) -> None:
        if job.quiet:
            return
        self._job = job
        self.stage_label.setText(job.label or job.kind)
        self.bar.setRange(0, 0)  # busy until the first fraction arrives
        self.bar.setVisible(True)
        self.cancel_button.setVisible(True)
        self.cancel_button.setEnabled(True)

    def _on_progress(self, job: JobInfo, payload: Any) -> None:
        if self._job is None or job.id != self._job.id:
            return
        text, fraction = describe_progress(payload)
        label = job.label or job.kind
        self.stage_label.setText(f"{label}: {text}" if text else label)
        if fraction is None:
            self.bar.setRange(0, 0)
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(fraction * 1000))

    def _on_end(self, job: JobInfo, how: str) -> None:
        if self._job is None or job.id != self._job.id:
            return
        self._job = None
        others = [j for j in self.runner.running() if not j.quiet]
        if others:
            self._on_started(others[-1])
        else:
            self._set_idle()
        if how == "cancelled":
            self.showMessage(f"{job.label or job.kind}: cancelled", 4000)

    def _cancel_clicked(self) -> None:
        if self._job is not None:
            self.cancel_button.setEnabled(False)
            self.stage_label.setText(f"{self._job.label or self._job.kind}: cancelling…")
            self.cancelRequested.emit(self._job.kind)
            self.runner.cancel(self._job.kind)
