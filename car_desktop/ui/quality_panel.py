"""The Quality panel: how well CaR's auto-labels matched what the annotator accepted, on the reviewed images.

Per concept: IoU of the auto mask (before any edit) with the reviewed mask, presence precision / recall /
F1 (was a concept kept where it is, removed where it is not), and over all concepts; then one sentence of
advice: auto-label the rest, review more, or tune first. The numbers are car_desktop.evaluation.quality's,
computed on the "query" lane (never the GUI thread), only while the panel is visible, and refreshed when
an image is marked reviewed or CaR results land. ``install_quality_panel`` docks it in the window and adds
its toggle to the View menu.
"""

from __future__ import annotations

import math

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QDockWidget,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..annotations.store import Project
from ..evaluation.metrics import fmt
from ..evaluation.quality import QualityReport, advice, compare_reviewed
from .lazy_refresh import LazyRefreshMixin
from .workers import JobError, JobInfo, JobRunner

KIND = "quality"
COLUMNS = ("Concept", "IoU", "Precision", "Recall", "F1", "Images")
#: Rows below this IoU or F1 are tinted, so the concepts that need attention stand out.
LOW = 0.5


class QualityPanel(LazyRefreshMixin, QWidget):
    """Per-concept auto-label quality on the reviewed images; emits ``refreshed(rows)`` after each update."""

    refreshed = Signal(int)

    def __init__(self, runner: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.project: Project | None = None
        self.report: QualityReport | None = None
        self.summary = QLabel("No project open")
        self.summary.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.headerItem().setToolTip(1, "Auto mask before edits against the reviewed mask, "
                                             "over all reviewed images")
        self.tree.headerItem().setToolTip(2, "Of the images where CaR kept the concept, the share where it is there")
        self.tree.headerItem().setToolTip(3, "Of the images where the concept is there, the share where CaR kept it")
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.advice = QLabel("")
        self.advice.setWordWrap(True)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        bottom = QHBoxLayout()
        bottom.addWidget(self.advice, 1)
        bottom.addWidget(self.refresh_button, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.summary)
        layout.addWidget(self.tree, 1)
        layout.addLayout(bottom)
        self.init_lazy_refresh()

    def set_project(self, project: Project | None) -> None:
        """Follow the open project; a hidden panel computes only once it is shown."""
        self.project = project
        self.report = None
        self.tree.clear()
        self.advice.setText("")
        if self.isVisible() or project is None:
            self.refresh()
        else:
            self._stale = True

    def refresh(self) -> JobInfo | None:
        self._timer.stop()
        if self.project is None:
            self.summary.setText("No project open")
            self.advice.setText("")
            self.refreshed.emit(0)
            return None
        project = self.project
        self.summary.setText("Comparing the auto-labels with the reviewed masks…")

        def query(progress, cancel):
            return compare_reviewed(project, cancel=cancel)

        def done(report: QualityReport) -> None:
            if project is self.project:  # a report for a project since closed is dropped
                self.show_report(report)

        return self.runner.submit(KIND, query, lane="query", label="Auto-label quality", on_done=done,
                                  on_failed=self._failed)

    def _failed(self, err: JobError) -> None:
        self.summary.setText(f"Could not compare: {err.message}")

    def show_report(self, report: QualityReport) -> None:
        self.report = report
        p = report.presence
        if report.compared:
            self.summary.setText(
                f"{report.compared} reviewed image(s) compared with their auto-labels"
                + (f" ({report.without_auto_labels} without)" if report.without_auto_labels else "")
                + f": mean IoU {fmt(report.mean_iou, 2)}, presence precision {fmt(p.precision, 2)}, "
                  f"recall {fmt(p.recall, 2)}, F1 {fmt(p.f1, 2)}")
        else:
            self.summary.setText(f"{report.reviewed} reviewed image(s), none with stored auto-labels")
        self.tree.clear()
        for q in report.concepts:
            item = QTreeWidgetItem([q.name, fmt(q.iou, 2), fmt(q.presence.precision, 2), fmt(q.presence.recall, 2),
                                    fmt(q.presence.f1, 2), str(q.images)])
            for col in range(1, len(COLUMNS)):
                item.setTextAlignment(col, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            pr = q.presence
            item.setToolTip(0, f"{q.name}: kept and present {pr.tp}, kept but absent {pr.fp}, removed but present "
                               f"{pr.fn}, removed and absent {pr.tn}")
            weak = [v for v in (q.iou, q.presence.f1) if not math.isnan(v) and v < LOW]
            if weak:
                for col in range(len(COLUMNS)):
                    item.setBackground(col, QBrush(QColor(255, 200, 200, 90)))
            self.tree.addTopLevelItem(item)
        self.advice.setText(advice(report))
        self.refreshed.emit(len(report.concepts))


def install_quality_panel(window, view_menu) -> QualityPanel:
    """Dock a QualityPanel in ``window`` (hidden until chosen), add its toggle to ``view_menu``, and refresh
    it when an image is marked reviewed or CaR results land. ``window.quality_panel.set_project`` follows
    the open project."""
    panel = QualityPanel(window.runner)
    dock = QDockWidget("Quality", window)
    dock.setObjectName("Quality")
    dock.setWidget(panel)
    dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                     | QDockWidget.DockWidgetFeature.DockWidgetClosable)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    dock.hide()
    toggle = dock.toggleViewAction()
    toggle.setText("Quality (auto-labels against reviews)")
    view_menu.addAction(toggle)
    window.annotator.imageStatusChanged.connect(lambda *_: panel.schedule_refresh())
    window.carApplied.connect(lambda *_: panel.schedule_refresh())
    window.quality_dock = dock
    return panel
