"""File > Export label PNGs… and File > Import COCO…: the work on the "io" lane, a progress dialog, and a
report dialog that lists what could not be written or read (instead of a line in the status bar).

A COCO import is one project transaction: cancelling it (or a failure) leaves the project as it was.
Cancelling a label-map export stops after the current image; the maps already written stay.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit,
    QProgressDialog, QPushButton, QVBoxLayout, QWidget,
)

from ..annotations.store import Project
from .workers import JobError, JobInfo, JobRunner

log = logging.getLogger(__name__)

KINDS = ("export_pngs", "import_coco")


class ReportDialog(QDialog):
    """A summary line and, below it, the list of problems (selectable, for copying into a bug report)."""

    def __init__(self, title: str, summary: str, details: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.summary = QLabel(summary)
        self.summary.setWordWrap(True)
        self.details = QPlainTextEdit("\n".join(details))
        self.details.setReadOnly(True)
        self.details.setVisible(bool(details))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.details, 1)
        layout.addWidget(buttons)
        self.resize(640, 380 if details else 120)


class ImportCocoDialog(QDialog):
    """The COCO JSON file and the folder its ``file_name`` entries are relative to."""

    def __init__(self, images_dir: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Import COCO JSON")
        self.json_path = QLineEdit()
        self.images_dir = QLineEdit(images_dir)
        form = QFormLayout(self)
        for label, edit, pick in (("COCO JSON", self.json_path, self._pick_json),
                                  ("Images folder", self.images_dir, self._pick_dir)):
            row = QHBoxLayout()
            row.addWidget(edit, 1)
            button = QPushButton("…")
            button.clicked.connect(pick)
            row.addWidget(button)
            form.addRow(label, row)
        note = QLabel("file_name entries are read relative to the images folder, which must be inside the "
                      "project's image folder. Imported masks count as a person's work.")
        note.setWordWrap(True)
        form.addRow(note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Import")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.resize(560, 0)

    def _pick_json(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "COCO JSON", self.json_path.text(), "COCO JSON (*.json);;All files (*)")
        if path:
            self.json_path.setText(path)

    def _pick_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Images folder", self.images_dir.text())
        if path:
            self.images_dir.setText(path)


class Transfers(QObject):
    """Runs exports and imports off the GUI thread and reports them; ``done(kind, report)`` on success."""

    done = Signal(str, object)
    failed = Signal(str, str)

    def __init__(self, runner: JobRunner, parent_widget: QWidget) -> None:
        super().__init__(parent_widget)
        self.runner = runner
        self.parent_widget = parent_widget
        self.progress_dialog: QProgressDialog | None = None
        self.report_dialog: ReportDialog | None = None
        runner.progress.connect(self._on_progress)
        runner.finished.connect(self._on_finished)
        runner.failed.connect(self._on_failed)
        runner.cancelled.connect(self._on_cancelled)

    # ----- starting
    def _progress(self, text: str, kind: str) -> None:
        self._close_progress()
        dlg = QProgressDialog(text, "Cancel", 0, 0, self.parent_widget)
        dlg.setWindowTitle(text.rstrip("…"))
        dlg.setWindowModality(Qt.WindowModality.WindowModal)
        dlg.setMinimumDuration(400)
        dlg.setAutoClose(False)
        dlg.setAutoReset(False)
        dlg.canceled.connect(lambda: self.runner.cancel(kind))
        self.progress_dialog = dlg

    def export_label_pngs(self, project: Project, out_dir: str | Path) -> JobInfo:
        from ..annotations import export_label_pngs

        def job(progress, cancel):
            def report(done: int, total: int) -> None:
                cancel.check()
                progress((done, total))

            return export_label_pngs(project, out_dir, progress=report)

        self._progress("Writing label PNGs…", "export_pngs")
        return self.runner.submit("export_pngs", job, lane="io", context={"out": str(out_dir)},
                                  label="Export label PNGs")

    def import_coco(self, project: Project, json_path: str | Path, images_dir: str | Path) -> JobInfo:
        from ..annotations import import_coco

        def job(progress, cancel):
            def report(done: int, total: int) -> None:
                cancel.check()   # inside the import's transaction: cancelling rolls all of it back
                progress((done, total))

            cancel.check()
            return import_coco(project, json_path, images_dir, progress=report)

        self._progress("Importing COCO JSON…", "import_coco")
        return self.runner.submit("import_coco", job, lane="io", context={"json": str(json_path)},
                                  label="Import COCO")

    # ----- results
    def _close_progress(self) -> None:
        if self.progress_dialog is not None:
            self.progress_dialog.canceled.disconnect()   # closing emits canceled: not a user's cancel
            self.progress_dialog.close()
            self.progress_dialog.deleteLater()
            self.progress_dialog = None

    def _on_progress(self, job: JobInfo, payload: Any) -> None:
        if job.kind in KINDS and self.progress_dialog is not None and isinstance(payload, tuple):
            done, total = payload
            self.progress_dialog.setRange(0, max(1, total))
            self.progress_dialog.setValue(min(done, max(1, total)))

    def _show(self, title: str, summary: str, details: list[str]) -> None:
        if self.report_dialog is not None:
            self.report_dialog.close()
        self.report_dialog = ReportDialog(title, summary, details, self.parent_widget)
        self.report_dialog.open()     # window-modal, returns at once

    def _on_finished(self, job: JobInfo, report: Any) -> None:
        if job.kind not in KINDS:
            return
        self._close_progress()
        if job.kind == "export_pngs":
            summary = (f"Wrote {report.images} label map(s) with {report.annotations} mask(s) of "
                       f"{report.categories} concept(s) to {report.path}. labels.txt and labels.json name "
                       "the pixel values (0 is background).")
            self._show("Label PNGs exported", summary, list(report.notes))
        else:
            summary = (f"Imported {report.annotations_added} mask(s); {report.images_added} new image(s), "
                       f"{report.images_existing} already in the project; {report.categories_added} new "
                       "concept(s).")
            details = [f"{p.kind} {p.entry_id}: {p.message}" for p in report.problems] + list(report.notes)
            if report.problems:
                summary += f" {len(report.problems)} entr{'y was' if len(report.problems) == 1 else 'ies were'} " \
                           "not imported:"
            self._show("COCO imported", summary, details)
        self.done.emit(job.kind, report)

    def _on_failed(self, job: JobInfo, err: JobError) -> None:
        if job.kind not in KINDS:
            return
        self._close_progress()
        title = "Export failed" if job.kind == "export_pngs" else "Import failed"
        self._show(title, err.message, err.details.splitlines() if not err.user_error else [])
        self.failed.emit(job.kind, err.message)

    def _on_cancelled(self, job: JobInfo) -> None:
        if job.kind not in KINDS:
            return
        self._close_progress()
        text = ("Export cancelled: the label maps written so far stay in the folder." if job.kind == "export_pngs"
                else "Import cancelled: the project is unchanged.")
        self.failed.emit(job.kind, text)
