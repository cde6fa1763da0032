"""File > Export COCO JSON…, Export label PNGs… and Import COCO…: the work on the "io" lane, a progress
dialog, and a report dialog that lists what could not be written or read (instead of a line in the
status bar).

A COCO import is one project transaction: cancelling it (or a failure) leaves the project as it was.
Cancelling a label-map export stops after the current image; the maps already written stay. A
cancelled COCO export leaves no file (exports write a temporary file and rename it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressDialog,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..annotations.models import ExportReport, ImportReport
from ..annotations.store import Project
from .workers import JobError, JobInfo, JobRunner

log = logging.getLogger(__name__)


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
        path, _ = QFileDialog.getOpenFileName(self, "COCO JSON", self.json_path.text(),
                                              "COCO JSON (*.json);;All files (*)")
        if path:
            self.json_path.setText(path)

    def _pick_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Images folder", self.images_dir.text())
        if path:
            self.images_dir.setText(path)


class Transfers(QObject):
    """Asks what to export or import, runs it off the GUI thread and reports it: ``done(kind, report)``
    on success, ``failed(kind, message)`` on failure or cancel, ``problem(message)`` when nothing can
    start (no project open)."""

    done = Signal(str, object)
    failed = Signal(str, str)
    problem = Signal(str)

    def __init__(self, runner: JobRunner, parent_widget: QWidget) -> None:
        super().__init__(parent_widget)
        self.runner = runner
        self.parent_widget = parent_widget
        self.progress_dialog: QProgressDialog | None = None
        self.report_dialog: ReportDialog | None = None

    # ----- asking (the File menu)
    def ask_export_coco(self, project: Project | None, image_id: int | None) -> None:
        if project is None:
            self.problem.emit("Open a folder or project first.")
            return
        from .export_dialog import CocoExportDialog

        dlg = CocoExportDialog(str(project.path.with_suffix(".coco.json")), self.parent_widget)
        if dlg.exec():
            ids = [image_id] if dlg.current_only.isChecked() and image_id is not None else None
            self.export_coco(project, dlg.path.text(), image_ids=ids, **dlg.options())

    def ask_export_label_pngs(self, project: Project | None) -> None:
        if project is None:
            self.problem.emit("Open a folder or project first.")
            return
        path = QFileDialog.getExistingDirectory(self.parent_widget, "Folder for the label PNGs",
                                                str(project.path.parent))
        if path:
            self.export_label_pngs(project, path)

    def ask_import_coco(self, project: Project | None) -> None:
        if project is None:
            self.problem.emit("Open the folder of the images (or their project) first.")
            return
        dlg = ImportCocoDialog(str(project.image_root), self.parent_widget)
        if dlg.exec() and dlg.json_path.text().strip():
            self.import_coco(project, dlg.json_path.text().strip(), dlg.images_dir.text().strip())

    # ----- starting
    def _start(self, kind: str, text: str, work: Callable[[Callable[[int, int], None]], Any],
               summary: Callable[[Any], tuple[str, str, list[str]]], cancelled_text: str) -> JobInfo:
        """Run ``work(report_progress)`` on the io lane with a progress dialog; ``summary(report)`` gives
        the report dialog's title, summary and details."""
        self._close_progress()
        dlg = QProgressDialog(text, "Cancel", 0, 0, self.parent_widget)
        dlg.setWindowTitle(text.rstrip("…"))
        dlg.setWindowModality(Qt.WindowModality.WindowModal)
        dlg.setMinimumDuration(400)
        dlg.setAutoClose(False)
        dlg.setAutoReset(False)
        dlg.canceled.connect(lambda: self.runner.cancel(kind))
        self.progress_dialog = dlg

        def job(progress, cancel) -> Any:
            def report(done: int, total: int) -> None:
                cancel.check()   # inside an import's transaction: cancelling rolls all of it back
                progress((done, total))

            cancel.check()
            return work(report)

        def finished(report: Any) -> None:
            self._close_progress()
            self._show(*summary(report))
            self.done.emit(kind, report)

        def failed(err: JobError) -> None:
            self._close_progress()
            title = "Import failed" if kind == "import_coco" else "Export failed"
            self._show(title, err.message, err.details.splitlines() if not err.user_error else [])
            self.failed.emit(kind, err.message)

        def cancelled() -> None:
            self._close_progress()
            self.failed.emit(kind, cancelled_text)

        return self.runner.submit(kind, job, lane="io", label=text.rstrip("…"), on_progress=self._progress,
                                  on_done=finished, on_failed=failed, on_cancelled=cancelled)

    def export_coco(self, project: Project, path: str | Path, **options: Any) -> JobInfo:
        from ..annotations.coco_export import export_coco

        def summary(report: ExportReport) -> tuple[str, str, list[str]]:
            return ("COCO exported", f"Exported {report.annotations} mask(s) of {report.images} image(s) to "
                    f"{report.path}.", list(report.notes))

        return self._start("export_coco", "Exporting COCO JSON…",
                           lambda report: export_coco(project, path, progress=report, **options), summary,
                           "Export cancelled: nothing was written.")

    def export_label_pngs(self, project: Project, out_dir: str | Path) -> JobInfo:
        from ..annotations import export_label_pngs

        def summary(report: ExportReport) -> tuple[str, str, list[str]]:
            return ("Label PNGs exported",
                    f"Wrote {report.images} label map(s) with {report.annotations} mask(s) of {report.categories} "
                    f"concept(s) to {report.path}. labels.txt and labels.json name the pixel values (0 is "
                    "background).", list(report.notes))

        return self._start("export_pngs", "Writing label PNGs…",
                           lambda report: export_label_pngs(project, out_dir, progress=report), summary,
                           "Export cancelled: the label maps written so far stay in the folder.")

    def import_coco(self, project: Project, json_path: str | Path, images_dir: str | Path) -> JobInfo:
        from ..annotations import import_coco

        def summary(report: ImportReport) -> tuple[str, str, list[str]]:
            text = (f"Imported {report.annotations_added} mask(s); {report.images_added} new image(s), "
                    f"{report.images_existing} already in the project; {report.categories_added} new concept(s).")
            details = [f"{p.kind} {p.entry_id}: {p.message}" for p in report.problems] + list(report.notes)
            if report.problems:
                n = len(report.problems)
                text += f" {n} entr{'y was' if n == 1 else 'ies were'} not imported:"
            return "COCO imported", text, details

        return self._start("import_coco", "Importing COCO JSON…",
                           lambda report: import_coco(project, json_path, images_dir, progress=report), summary,
                           "Import cancelled: the project is unchanged.")

    # ----- results
    def _close_progress(self) -> None:
        if self.progress_dialog is not None:
            self.progress_dialog.canceled.disconnect()   # closing emits canceled: not a user's cancel
            self.progress_dialog.close()
            self.progress_dialog.deleteLater()
            self.progress_dialog = None

    def _progress(self, payload: tuple[int, int]) -> None:
        if self.progress_dialog is not None:
            done, total = payload
            self.progress_dialog.setRange(0, max(1, total))
            self.progress_dialog.setValue(min(done, max(1, total)))

    def _show(self, title: str, summary: str, details: list[str]) -> None:
        if self.report_dialog is not None:
            self.report_dialog.close()
        self.report_dialog = ReportDialog(title, summary, details, self.parent_widget)
        self.report_dialog.open()     # window-modal, returns at once
