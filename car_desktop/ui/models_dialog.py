"""The models dialog: which weights the app needs, their size and state; download or pick a file.

Downloads run on the "io" worker lane with progress and Cancel; offline, the error names the file and
the folder where a manually copied file is picked up. Each model's exact file name, URL, folder and
size come from the manager's ``facts()`` (``engine.model_facts``, the lines ``car-desktop models list``
prints), shown for the selected row and copied for all by "Copy download facts". Nothing imported here
pulls in torch: the manager module is torch-free. Opened on first start when weights are missing;
the window stays usable without models (images open, manual tools work).
"""

from __future__ import annotations

import logging

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .engine_client import ModelCatalog, ModelFacts, ModelStatusLike, facts_text
from .long_text import fit_to_screen
from .workers import JobError, JobRunner

log = logging.getLogger(__name__)


def human_size(n: int | None) -> str:
    if not n:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB") else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


class ModelsDialog(QDialog):
    """A table of ``ModelManager.list()`` with Download / Choose file / Cancel."""

    modelsChanged = Signal()

    COLS = ("Model", "Size", "Status", "File", "Folder")

    def __init__(self, manager: ModelCatalog, runner: JobRunner, intro: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.manager = manager
        self.runner = runner
        self.intro = QLabel(intro or "CaR needs these model weights. Download them once, or choose files "
                                     "you already have. Without them the app still opens images and the "
                                     "manual tools work.")
        self.intro.setWordWrap(True)
        self.table = QTableWidget(0, len(self.COLS))
        self.table.setHorizontalHeaderLabels(list(self.COLS))
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        folder_header = self.table.horizontalHeaderItem(4)
        assert folder_header is not None   # setHorizontalHeaderLabels made it
        folder_header.setToolTip("Where a file you download by hand goes (picked up from there)")
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.detail = QLabel("")
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.download_button = QPushButton("Download")
        self.download_all_button = QPushButton("Download all missing")
        self.file_button = QPushButton("Choose file…")
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.setEnabled(False)
        self.copy_button = QPushButton("Copy download facts")
        self.copy_button.setToolTip("Copy every model's file name, URL and folder (as 'car-desktop models list' "
                                    "prints them), e.g. to fetch the files on another computer")
        self.copy_button.clicked.connect(self.copy_facts)
        self.download_button.clicked.connect(self._download_selected)
        self.download_all_button.clicked.connect(self.download_missing)
        self.file_button.clicked.connect(self._choose_file)
        self.cancel_button.clicked.connect(lambda: self.runner.cancel("download"))
        row = QHBoxLayout()
        for b in (self.download_button, self.download_all_button, self.file_button, self.cancel_button,
                  self.copy_button):
            row.addWidget(b)
        row.addStretch(1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.intro)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(self.detail)
        layout.addWidget(buttons)
        self._queue: list[str] = []
        self._statuses: list[ModelStatusLike] = []
        self._facts: dict[str, ModelFacts] = {}
        self.table.itemSelectionChanged.connect(self._show_detail)
        self.resize(980, 420)
        fit_to_screen(self)
        self.refresh()

    def refresh(self) -> None:
        try:
            self._statuses = list(self.manager.list())
            facts = getattr(self.manager, "facts", None)
            self._facts = {f.name: f for f in facts()} if facts is not None else {}
        except Exception as exc:  # a broken manifest must not take the dialog down
            log.exception("model list failed")
            self._statuses, self._facts = [], {}
            self.detail.setText(f"Cannot read the model list: {exc}")
        self.table.setRowCount(len(self._statuses))
        for r, st in enumerate(self._statuses):
            title = st.title or st.name
            if st.optional:
                title += " (optional)"
            fact = self._facts.get(st.name)
            size = fact.size if fact is not None else human_size(st.size if st.ok else st.expected_size)
            state = st.state
            if state == "present" and st.verified:
                state = "present, verified"
            elif state == "missing" and st.downloaded:
                state = f"missing ({human_size(st.downloaded)} partly downloaded)"
            where = str(fact.folder) if fact is not None else f"{st.folder or st.path.parent}"
            file_name = fact.file_name if fact is not None else st.path.name
            for c, text in enumerate((title, size, state, file_name, where)):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, st.name)
                if fact is not None:
                    item.setToolTip("\n".join(fact.lines()))
                if c == 2:
                    item.setForeground(Qt.GlobalColor.darkGreen if st.ok else Qt.GlobalColor.red)
                self.table.setItem(r, c, item)
        if self._statuses and not self.table.selectedItems():
            self.table.selectRow(0)

    def missing(self) -> list[str]:
        return [s.name for s in self._statuses if not s.ok and not s.optional]

    def _selected_name(self) -> str | None:
        items = self.table.selectedItems()
        return items[0].data(Qt.ItemDataRole.UserRole) if items else None

    def _show_detail(self) -> None:
        name = self._selected_name()
        for st in self._statuses:
            if st.name == name:
                text = st.detail or ""
                if st.ok:
                    text += f"\nUsing {st.path}"
                fact = self._facts.get(st.name)
                if fact is not None:
                    text += "\n" + "\n".join(line.strip() for line in fact.lines()[1:])
                elif not st.ok:
                    text += f"\nTo install by hand, put the file in: {st.folder or st.path.parent}"
                self.detail.setText(text.strip())

    def facts_text(self) -> str:
        """Every model's download facts as ``car-desktop models list`` prints them."""
        return facts_text(list(self._facts.values()))

    def copy_facts(self) -> None:
        QApplication.clipboard().setText(self.facts_text())
        self.detail.setText("Copied the file names, URLs and folders of every model.")

    def _download_selected(self) -> None:
        name = self._selected_name()
        if name:
            self._queue = [name]
            self._next_download()

    def download_missing(self) -> None:
        self._queue = self.missing()
        if not self._queue:
            self.detail.setText("Every required model is present.")
            return
        self._next_download()

    def _next_download(self) -> None:
        if not self._queue:
            return
        name = self._queue.pop(0)
        manager = self.manager

        def job(progress, cancel):
            return manager.download(name, progress=lambda done, total: progress((done, total)), cancel=cancel)

        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        self.detail.setText(f"Downloading {name}…")
        self.runner.submit("download", job, lane="io", label=f"Downloading {name}",
                           on_progress=lambda payload: self._progress(name, payload),
                           on_done=lambda _result: self._downloaded(name), on_failed=self._failed,
                           on_cancelled=self._cancelled)

    def _choose_file(self) -> None:
        name = self._selected_name()
        if not name:
            return
        path, _ = QFileDialog.getOpenFileName(self, f"Weights file for {name}", "",
                                              "Weights (*.pt *.pth *.bin *.safetensors);;All files (*)")
        if path:
            self.set_local_file(name, path)

    def set_local_file(self, name: str, path: str) -> None:
        try:
            self.manager.set_local_file(name, path)
        except Exception as exc:  # noqa: BLE001 - any reason the file is refused is shown to the user
            QMessageBox.warning(self, "Models", f"Cannot use {path}: {exc}")
            return
        self.refresh()
        self.modelsChanged.emit()

    # ----- download jobs
    def _progress(self, name: str, payload: tuple[int, int | None]) -> None:
        done, total = payload
        if total:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * done / total))
            self.detail.setText(f"Downloading {name}: {human_size(done)} of {human_size(total)}")

    def _end(self) -> None:
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)
        self.refresh()

    def _downloaded(self, name: str) -> None:
        self._end()
        self.detail.setText(f"{name} is ready.")
        self.modelsChanged.emit()
        self._next_download()

    def _failed(self, err: JobError) -> None:
        self._queue = []
        self._end()
        self.detail.setText(err.message)

    def _cancelled(self) -> None:
        self._queue = []
        self._end()
        self.detail.setText("Download cancelled; the partial file is kept and resumes next time.")
