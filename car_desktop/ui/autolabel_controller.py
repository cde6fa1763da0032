"""File > Auto-label folder… in the window: the options dialog, opening the folder's project, starting
the run (``AutoLabelRunner``), and showing its progress, its images as they land, and its end."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from ..autolabel import AutoLabelProgress
from ..errors import CaRDesktopError
from .autolabel_dialog import AutoLabelDialog, AutoLabelProgressDialog
from .autolabel_run import AutoLabelRequest, AutoLabelRunner
from .engine_client import PRESETS, preset

if TYPE_CHECKING:
    from .main_window import MainWindow

log = logging.getLogger(__name__)


class AutoLabelController(QObject):
    """Between the window and its ``AutoLabelRunner``."""

    def __init__(self, win: MainWindow, runner: AutoLabelRunner) -> None:
        super().__init__(win)
        self.win = win
        self.runner = runner
        self.progress_dialog: AutoLabelProgressDialog | None = None
        runner.progressed.connect(self._progressed)
        runner.imageLabelled.connect(self._image_labelled)
        runner.imagesAdded.connect(lambda: win.refresh_file_list())
        runner.finished.connect(self._finished)

    def ask(self) -> None:
        """Show the options dialog (prefilled from the concept bar) and start what it asks for."""
        win = self.win
        if self.runner.running:
            if self.progress_dialog is not None:
                self.progress_dialog.show()
                self.progress_dialog.raise_()
            win.status.showMessage("An auto-label run is in progress: cancel it before starting another.", 6000)
            return
        text = win.concept_bar.text().strip() or (win.recent_concepts() or [""])[0]
        try:
            base = win.settings.engine_config(win.concept_bar.config())
        except CaRDesktopError:      # the bar's advanced settings are invalid: start from the plain preset
            name = win.settings.default_preset if win.settings.default_preset in PRESETS else "objects"
            base = preset(name, device=win.settings.device)
        dlg = AutoLabelDialog(folder=str(win.project.image_root) if win.project is not None else "",
                              concepts=text, preset_name=base.preset, sam_mode=base.sam_mode, base_config=base,
                              parent=win)
        if dlg.exec():
            self.start(dlg.request())

    def start(self, request: AutoLabelRequest) -> bool:
        """Open the folder's project if it is not the open one, then start the run in the background."""
        win = self.win
        folder = Path(request.folder) if request.folder is not None else None
        if folder is not None and not self._inside_project(folder) and not win.open_folder(folder):
            return False
        if win.project is None:
            win.show_error("Open a folder or project first.")
            return False
        if not self.runner.start(win.project, request):
            win.status.showMessage("An auto-label run is in progress.", 6000)
            return False
        win.remember_concepts(request.concepts.text)
        if self.progress_dialog is not None:
            self.progress_dialog.close()
        self.progress_dialog = AutoLabelProgressDialog(request.concepts.text, win)
        self.progress_dialog.cancelRequested.connect(lambda: self.runner.cancel())
        self.progress_dialog.show()
        return True

    def _inside_project(self, folder: Path) -> bool:
        project = self.win.project
        if project is None:
            return False
        try:
            folder.resolve().relative_to(project.image_root.resolve())
            return True
        except (ValueError, CaRDesktopError):
            return False

    def _progressed(self, p: AutoLabelProgress) -> None:
        if self.progress_dialog is not None:
            self.progress_dialog.update_progress(p)

    def _image_labelled(self, image_id: int, status: str, detail: str) -> None:
        win = self.win
        win.file_list.set_status(image_id, status, detail)
        if image_id == win.image_id and status == "auto":
            win.annotator.reload()     # the open image's masks were replaced by the run
        win.review_panel.schedule_refresh(1000)

    def _finished(self, p: AutoLabelProgress | None, stopped: bool, error: str) -> None:
        win = self.win
        if self.progress_dialog is not None:
            self.progress_dialog.show_finished(p, stopped, error)
        if error:
            win.show_error(f"Auto-labelling stopped: {error}")
        elif p is not None:
            win.status.showMessage(f"Auto-label {'cancelled' if stopped else 'finished'}: {p.done} labelled, "
                                   f"{p.skipped} skipped, {p.failed} failed", 10000)
        if win.project is not None and self.runner.project is win.project:
            win.review_panel.refresh()     # the file list was updated image by image
