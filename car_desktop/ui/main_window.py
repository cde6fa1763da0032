"""The main window: wires the canvas, panels, concept bar, status bar, menus and the controllers.

It owns no editing or engine logic itself: ``Annotator`` does edits, undo and saving;
``EngineClient`` does model loading, CaR runs and SAM clicks on worker lanes; ``JobRunner`` runs the
jobs. The window opens images and folders, routes requests, and shows errors without dying.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QApplication, QDockWidget, QFileDialog, QInputDialog, QMainWindow, QMessageBox, QProgressDialog,
    QToolBar, QVBoxLayout, QWidget,
)

from ..annotations.store import Project
from ..engine.config import CaRConfig
from ..engine.errors import CaRDesktopError
from .annotator import Annotator
from .autolabel_run import AutoLabelRunner
from .canvas import Canvas
from .concept_bar import ConceptBar
from .concept_panel import ConceptPanel
from .engine_client import EngineClient
from .file_list import FileList
from .help_dialog import HelpDialog
from .layers import LayerStack
from .project_session import IMAGE_FILTER, PROJECT_FILTER, load_image, project_for_folder
from .quality_panel import install_quality_panel
from .review_panel import ReviewPanel
from .settings import THEMES, Settings
from .status import JobStatusBar
from .tools import BrushTool, PolygonTool, SamClickTool
from .transfer import ImportCocoDialog, Transfers
from .tuned_defaults import TunedDefaults
from .workers import JobError, JobInfo, JobRunner

log = logging.getLogger(__name__)

APP_TITLE = "CaR Desktop"
RECENT_CONCEPTS_KEY = "ui.recent_concepts"


class MainWindow(QMainWindow):
    """The annotation window."""

    imageShown = Signal(object)      # image id (tests wait on it)
    carApplied = Signal(object)      # list of layers added

    def __init__(self, *, test_models: bool = False, settings: Settings | None = None,
                 pipeline_factory=None, model_manager: Any = None, check_models: bool = True) -> None:
        super().__init__()
        self.test_models = test_models
        self.settings = settings or Settings()
        self.runner = JobRunner(self)
        self.stack = LayerStack(self)
        self.annotator = Annotator(self.stack, self)
        self.canvas = Canvas(self.stack)
        self.concept_bar = ConceptBar(self.settings.default_preset)
        self.concept_panel = ConceptPanel(self.stack)
        self.file_list = FileList()
        self.status = JobStatusBar(self.runner)
        self.setStatusBar(self.status)
        self.engine = EngineClient(self.runner, test_models=test_models,
                                   config=CaRConfig(device=self.settings.device),
                                   pipeline_factory=pipeline_factory, parent=self)
        self._model_manager = model_manager
        self.review_panel = ReviewPanel(self.runner)
        self.tuned_defaults = TunedDefaults(self.concept_bar, self)
        self.autolabel = AutoLabelRunner(self.runner, self.engine.pipeline, test_models=test_models, parent=self)
        self.autolabel_progress = None     # AutoLabelProgressDialog of the last run
        self.transfers = Transfers(self.runner, self)
        self.about_dialog = None
        self._requested_image: int | None = None
        self._pending_annotation: tuple[int, int] | None = None   # (image id, annotation id) to select
        self.project: Project | None = None
        self.image_id: int | None = None
        self.image: np.ndarray | None = None
        self.models_dialog = None
        self.last_error = ""

        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.concept_bar)
        lay.addWidget(self.canvas, 1)
        self.setCentralWidget(central)
        self._dock("Concepts", self.concept_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        images_dock = self._dock("Images", self.file_list, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.review_dock = self._dock("Review queue", self.review_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        # The queue's columns (concept, score, SAM, image, status) need the room; the file list less so.
        self.resizeDocks([self.review_dock], [430], Qt.Orientation.Horizontal)
        self.resizeDocks([images_dock, self.review_dock], [200, 600], Qt.Orientation.Vertical)

        self.tools = {
            "brush": BrushTool(self.annotator), "eraser": BrushTool(self.annotator, erase=True),
            "polygon_add": PolygonTool(self.annotator), "polygon_subtract": PolygonTool(self.annotator, subtract=True),
            "sam": SamClickTool(self.annotator),
        }
        self._build_actions()
        self._connect()
        self.concept_panel.opacity.setValue(int(self.settings.opacity * 100))
        self.canvas.set_opacity(self.settings.opacity)
        self._update_title()
        self.status.set_device_text(self.engine.device_text())
        self.resize(1400, 900)
        if check_models:
            QTimer.singleShot(0, self.start_models)

    # ----- construction
    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "", checkable: bool = False) -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if tip:
            action.setStatusTip(tip)
        action.setCheckable(checkable)
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._action(f, "Open image…", self.ask_open_image, "Ctrl+O")
        self._action(f, "Open folder…", self.ask_open_folder, "Ctrl+Shift+O")
        self._action(f, "Open project…", self.ask_open_project, "Ctrl+P")
        self.recent_menu = f.addMenu("Recent projects")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        f.addSeparator()
        self.export_action = self._action(f, "Export COCO JSON…", self.ask_export_coco, "Ctrl+E")
        self._action(f, "Export label PNGs…", self.ask_export_label_pngs,
                     tip="One palette PNG per image: pixel value = concept id, 0 = background")
        self._action(f, "Import COCO…", self.ask_import_coco, tip="Add the masks of a COCO JSON to this project")
        f.addSeparator()
        self._action(f, "Auto-label folder…", self.ask_autolabel, "Ctrl+Shift+L",
                     tip="Run CaR with one concept list over every image of a folder, in the background")
        f.addSeparator()
        self._action(f, "Quit", self.close, "Ctrl+Q")

        e = mb.addMenu("&Edit")
        self.undo_action = self._action(e, "Undo", self.annotator.undo, "Ctrl+Z")
        self.redo_action = self._action(e, "Redo", self.annotator.redo, "Ctrl+Shift+Z")
        e.addSeparator()
        self._action(e, "Delete mask", self.delete_selected, "Delete")
        self._action(e, "Fill holes", lambda: self.annotator.apply_op("fill_holes"), "H")
        self._action(e, "Remove specks", lambda: self.annotator.apply_op("remove_specks"))
        self._action(e, "Split into instances", self.annotator.split_selected)
        self._action(e, "Merge same concept", self.annotator.merge_into_selected)
        self._action(e, "Relabel mask…", self.ask_relabel, "L")
        e.addSeparator()
        self._action(e, "Mark image reviewed", self.annotator.mark_reviewed, "Ctrl+Return")
        self._action(e, "Accept image and go to the next doubtful mask", self.accept_and_next, "Ctrl+Shift+Return")
        self._action(e, "Cancel running job", self.cancel_job, "Esc")

        v = mb.addMenu("&View")
        self._action(v, "Fit", self.canvas.fit, "F")
        self._action(v, "100 %", self.canvas.actual_size, "1")
        self._action(v, "Previous image", lambda: self.step_image(-1), "A")
        self._action(v, "Next image", lambda: self.step_image(+1), "D")
        review_toggle = self.review_dock.toggleViewAction()
        review_toggle.setText("Review queue")
        v.addAction(review_toggle)
        self.quality_panel = install_quality_panel(self, v)
        theme_menu = v.addMenu("Theme")
        group = QActionGroup(self)
        for name in THEMES:
            act = self._action(theme_menu, name.capitalize(), lambda _=False, n=name: self.set_theme(n),
                               checkable=True)
            act.setChecked(name == self.settings.theme)
            group.addAction(act)

        t = mb.addMenu("&Tools")
        toolbar = QToolBar("Tools", self)
        toolbar.setObjectName("Tools")
        self.addToolBar(toolbar)
        self.tool_group = QActionGroup(self)
        self.tool_actions: dict[str, QAction] = {}
        for key, label, shortcut in (("select", "Select", "V"), ("brush", "Brush", "B"), ("eraser", "Eraser", "E"),
                                     ("polygon_add", "Polygon +", "P"), ("polygon_subtract", "Polygon −", "Shift+P"),
                                     ("sam", "SAM clicks", "S")):
            act = self._action(t, label, lambda _=False, k=key: self.set_tool(k), shortcut, checkable=True)
            self.tool_group.addAction(act)
            toolbar.addAction(act)
            self.tool_actions[key] = act
        self.tool_actions["select"].setChecked(True)
        t.addSeparator()
        self._action(t, "New mask by SAM clicks…", self.new_mask_by_sam, "N")
        toolbar.addSeparator()
        for text, slot in (("Fit", self.canvas.fit), ("Undo", self.annotator.undo), ("Redo", self.annotator.redo)):
            toolbar.addAction(text, slot)

        m = mb.addMenu("&Models")
        self._action(m, "Models…", self.show_models_dialog)
        dev = m.addMenu("Device")
        dgroup = QActionGroup(self)
        from ..engine.device import DEVICE_CHOICES

        for d in DEVICE_CHOICES:
            act = self._action(dev, d, lambda _=False, n=d: self.set_device(n), checkable=True)
            act.setChecked(d == self.settings.device)
            dgroup.addAction(act)
        h = mb.addMenu("&Help")
        self._action(h, "Keyboard shortcuts", self.show_help, "F1")
        self._action(h, "About CaR Desktop", self.show_about)

    def _connect(self) -> None:
        self.concept_bar.runRequested.connect(self.run_car)
        self.concept_bar.presetChanged.connect(lambda n: setattr(self.settings, "default_preset", n))
        self.concept_panel.opacityChanged.connect(self._opacity)
        self.concept_panel.visibilityRequested.connect(self.annotator.set_visible)
        self.concept_panel.renameRequested.connect(self.annotator.rename)
        self.concept_panel.recolourRequested.connect(self.annotator.recolour)
        self.concept_panel.deleteRequested.connect(self.annotator.delete_layer)
        self.concept_panel.forceKeepRequested.connect(self.force_keep)
        self.file_list.imageActivated.connect(self.show_image)
        self.canvas.hovered.connect(lambda text: self.status.showMessage(text, 2000) if text else None)
        self.canvas.cursorMoved.connect(lambda x, y: self.status.pixel_label.setText(f"{x}, {y}"))
        self.annotator.info.connect(lambda text: self.status.showMessage(text, 5000))
        self.annotator.failed.connect(self.show_error)
        self.annotator.historyChanged.connect(self._history_changed)
        self.annotator.imageStatusChanged.connect(lambda iid, st: self.file_list.set_status(iid, st))
        self.annotator.sam_predict_handler = self.engine.sam_predict
        self.annotator.sam_accept_handler = self.accept_sam_mask
        self.engine.carFinished.connect(self._car_finished)
        self.engine.carFailed.connect(self._car_failed)
        self.engine.samPredicted.connect(self._sam_predicted)
        self.engine.modelsReady.connect(self._models_ready)
        self.engine.modelsMissing.connect(self._models_missing)
        self.engine.error.connect(self.show_error)
        self.runner.finished.connect(self._job_finished)
        self.runner.failed.connect(self._job_failed)
        self.review_panel.maskActivated.connect(self.open_annotation)
        self.review_panel.acceptRequested.connect(self.accept_image)
        self.annotator.imageStatusChanged.connect(lambda *_: self.review_panel.schedule_refresh())
        self.carApplied.connect(lambda *_: self.review_panel.schedule_refresh())
        self.imageShown.connect(lambda *_: self.review_panel.schedule_refresh(800))
        self.autolabel.progressed.connect(self._autolabel_progressed)
        self.autolabel.imageLabelled.connect(self._autolabel_image)
        self.autolabel.imagesAdded.connect(lambda: self._refresh_file_list())
        self.autolabel.finished.connect(self._autolabel_finished)
        self.transfers.done.connect(self._transfer_done)
        self.transfers.failed.connect(lambda kind, text: self.status.showMessage(text, 10000))
        self._history_changed()

    # ----- small helpers
    def _update_title(self) -> None:
        parts = [APP_TITLE]
        if self.project is not None:
            parts.append(self.project.path.name)
        if self.test_models:
            parts.append("TEST MODELS (random weights, masks are meaningless)")
        self.setWindowTitle(" — ".join(parts))

    def _opacity(self, value: float) -> None:
        self.canvas.set_opacity(value)
        self.settings.opacity = value

    def _history_changed(self) -> None:
        self.undo_action.setEnabled(self.annotator.can_undo())
        self.redo_action.setEnabled(self.annotator.can_redo())

    def show_error(self, text: str) -> None:
        """Errors show in the status bar and, unless running headless tests, a dialog."""
        self.last_error = text
        log.warning("%s", text)
        self.status.showMessage(text, 10000)
        if QApplication.platformName() != "offscreen":
            QMessageBox.warning(self, APP_TITLE, text)

    def set_theme(self, name: str) -> None:
        from .theme import apply_theme

        self.settings.theme = name
        apply_theme(QApplication.instance(), name)

    def set_device(self, name: str) -> None:
        self.settings.device = name
        self.status.showMessage(f"Device {name} is used from the next start.", 6000)

    def show_help(self) -> None:
        HelpDialog(self).exec()

    def show_about(self) -> None:
        from .about_dialog import AboutDialog

        self.about_dialog = AboutDialog(self.engine.device_text(), self)
        self.about_dialog.open()

    # ----- models
    def model_manager(self):
        if self._model_manager is None:
            from ..engine.model_manager import ModelManager

            self._model_manager = ModelManager()
        return self._model_manager

    def start_models(self) -> None:
        """Load the models in the background, or open the models dialog when weights are missing."""
        if not self.test_models:
            try:
                missing = [s for s in self.model_manager().list() if not s.ok and not getattr(s, "optional", False)]
            except Exception as exc:
                log.exception("model check failed")
                missing, self.last_error = [], str(exc)
            if missing:
                names = ", ".join(s.name for s in missing)
                self.status.showMessage(f"Models missing: {names}. Open Models… to get them.", 0)
                self.show_models_dialog(f"Before CaR can run, it needs {len(missing)} model file(s): {names}. "
                                        "Download them, or choose files you already have. Offline: copy the files "
                                        "to the folders listed below. Images open and the manual tools work "
                                        "without them.")
                return
        self.engine.load_models()

    def show_models_dialog(self, intro: str = "") -> None:
        from .models_dialog import ModelsDialog

        if self.models_dialog is None:
            self.models_dialog = ModelsDialog(self.model_manager(), self.runner, intro if isinstance(intro, str) else "", self)
            self.models_dialog.modelsChanged.connect(self._models_changed)
        self.models_dialog.refresh()
        self.models_dialog.show()
        self.models_dialog.raise_()

    def _models_changed(self) -> None:
        if self.models_dialog is not None and not self.models_dialog.missing() and not self.engine.ready:
            self.engine.load_models()

    def _models_ready(self, names: dict) -> None:
        text = "\n".join(f"{k}: {v}" for k, v in names.items())
        short = names.get("proposal", "").split(" (")[0]
        self.status.set_device_text(f"{self.engine.device_text()}  ·  {short}" if short else self.engine.device_text())
        self.status.device_label.setToolTip(text)
        self.status.showMessage("Models loaded", 3000)

    def _models_missing(self, message: str) -> None:
        self.show_error(message)
        self.show_models_dialog(message)

    # ----- opening
    def ask_open_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open image", "", IMAGE_FILTER)
        if path:
            self.open_image(path)

    def ask_open_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open folder of images")
        if path:
            self.open_folder(path)

    def ask_open_project(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open project", "", PROJECT_FILTER)
        if path:
            self.open_project(path)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for p in self.settings.recent_projects():
            self.recent_menu.addAction(p, lambda p=p: self.open_project(p))
        if not self.recent_menu.actions():
            self.recent_menu.addAction("(none)").setEnabled(False)

    def _set_project(self, project: Project) -> None:
        self.engine.cancel_car()
        if self.autolabel.running and self.autolabel.project is not project:
            self.autolabel.cancel("another project was opened")
        self.runner.invalidate("load_image")
        if self.project is not None and self.project is not project:
            self.project.close()
        self.project = project
        self.annotator.set_project(project)
        self.image_id, self.image = None, None
        self.settings.add_recent_project(str(project.path))
        self._update_title()
        self._refresh_file_list(keep_errors=False)
        self.concept_bar.set_recent(self._recent_concepts())
        self.review_panel.set_project(project)
        self.quality_panel.set_project(project)
        self.tuned_defaults.set_project(project)

    def _refresh_file_list(self, keep_errors: bool = True) -> None:
        """Statuses from the project; images found unreadable in this session stay marked."""
        images = self.project.list_images() if self.project is not None else []
        unreadable = {k for k in self.file_list.keys() if keep_errors and self.file_list.status(k) == "error"}
        self.file_list.set_images([(im.id, im.rel_path, "error" if im.id in unreadable else im.status)
                                   for im in images])
        if self.image_id is not None:
            self.file_list.select_key(self.image_id)

    def open_folder(self, folder: str | Path, select: str | None = None) -> bool:
        try:
            project, elsewhere = project_for_folder(folder)
            project.add_images(folder)
        except CaRDesktopError as exc:
            self.show_error(str(exc))
            return False
        self._set_project(project)
        if elsewhere:
            self.status.showMessage(f"The folder is read-only: the project is kept in {project.path}", 10000)
        keys = self.file_list.keys()
        target = None
        if select is not None:
            rec = project.find_image(select)
            target = rec.id if rec is not None else None
        if target is None and keys:
            target = keys[0]
        if target is not None:
            self.show_image(target)
        return True

    def open_image(self, path: str | Path) -> bool:
        path = Path(path)
        return self.open_folder(path.parent, select=path.name)

    def open_project(self, path: str | Path) -> bool:
        try:
            project = Project.open(path)
        except CaRDesktopError as exc:
            self.show_error(str(exc))
            return False
        self._set_project(project)
        keys = self.file_list.keys()
        if keys:
            self.show_image(keys[0])
        return True

    def show_image(self, image_id: Any) -> None:
        """Read the image on the io lane; a newer request supersedes an older one."""
        if self.project is None:
            return
        self.engine.cancel_car()      # a run for the previous image must never land on this one
        path = self.project.image_path(image_id)
        self._requested_image = image_id
        self.file_list.select_key(image_id)
        self.runner.submit("load_image", lambda progress, cancel: load_image(path), lane="io",
                           context={"image_id": image_id, "path": path}, label=f"Opening {path.name}")

    def step_image(self, step: int) -> None:
        target = self.file_list.neighbour(self.image_id, step)
        if target is not None:
            self.show_image(target)

    def _job_finished(self, job: JobInfo, result: Any) -> None:
        if job.kind == "load_image":
            self._image_loaded(job.context["image_id"], result)
        elif job.kind == "export":
            self._export_done(result)

    def _job_failed(self, job: JobInfo, err: JobError) -> None:
        if job.kind == "load_image":
            image_id = job.context["image_id"]
            self.file_list.set_status(image_id, "error", err.message)
            self.show_error(f"{job.context['path'].name} was skipped: {err.message}")
        elif job.kind == "export":
            if self._export_progress is not None:
                self._export_progress.close()
            self.show_error(f"Export failed: {err.message}")

    def _image_loaded(self, image_id: int, image: np.ndarray) -> None:
        self.image_id, self.image = image_id, image
        self.tools["sam"].clear() if self.canvas.tool() is self.tools["sam"] else None
        h, w = image.shape[:2]
        rec = self.project.get_image(image_id) if self.project is not None else None
        if rec is not None and (rec.height, rec.width) != (h, w):
            log.warning("image %s is %dx%d on disk, %dx%d in the project", rec.rel_path, w, h, rec.width, rec.height)
        self.canvas.set_image(image)
        try:
            self.annotator.load_image(image_id, h, w)
        except CaRDesktopError as exc:
            self.show_error(str(exc))
        self.engine.set_image(image, image_id)
        self.file_list.select_key(image_id)
        pending, self._pending_annotation = self._pending_annotation, None
        if pending is not None and pending[0] == image_id:
            self.select_annotation(pending[1])
        if rec is not None:
            self.file_list.set_status(image_id, rec.status)
            self.setWindowFilePath(rec.rel_path)
        self.imageShown.emit(image_id)

    # ----- CaR
    def _recent_concepts(self) -> list[str]:
        if self.project is None:
            return []
        value = self.project.get_setting(RECENT_CONCEPTS_KEY, [])
        return [str(v) for v in value] if isinstance(value, list) else []

    def run_car(self, text: str, config: CaRConfig) -> None:
        if self.image is None:
            self.concept_bar.show_error("Open an image first.")
            return
        config = config.replace(device=self.settings.device)
        self._remember_concepts(text)
        if self.autolabel.running:
            self.status.showMessage("Auto-labelling is running: this run starts after the images in progress.", 6000)
        self.engine.run_car(self.image, self.image_id, text, config)

    def _remember_concepts(self, text: str) -> None:
        if self.project is not None:
            recent = [text] + [t for t in self._recent_concepts() if t != text]
            try:
                self.project.set_setting(RECENT_CONCEPTS_KEY, recent[:15])
            except CaRDesktopError as exc:
                log.warning("recent concepts not saved: %s", exc)
            self.concept_bar.set_recent(recent[:15])

    def force_keep(self, ghost_id: int) -> None:
        ghost = self.stack.get(ghost_id)
        if ghost is None or self.image is None:
            return
        text = ghost.extra.get("query_text", ghost.name).replace(", ", " | ")
        self.engine.run_car(self.image, self.image_id, text, self.concept_bar.config().replace(
            device=self.settings.device), kind="force_keep", extra={"ghost_id": ghost_id})

    def _car_finished(self, ctx: dict, result) -> None:
        if ctx.get("image_key") != self.image_id:
            return
        if "ghost_id" in ctx:
            kept = [c for c in result.concepts if c.mask.any()]
            if not kept:
                self.show_error("CaR found nothing for that concept even on its own.")
                return
            c = kept[0]
            self.annotator.force_keep(ctx["ghost_id"], c.mask, c.score, c.status_text)
            return
        added = self.annotator.apply_car_result(result, {"config": {k: ctx["config"].to_dict()[k] for k in (
            "preset", "eta", "theta", "lam", "prompts", "sam_mode")}})
        kept = sum(1 for c in result.concepts if c.status.value != "removed")
        msg = f"CaR: {kept} of {len(result.concepts)} concepts kept"
        if result.warnings:
            msg += " — " + "; ".join(result.warnings[:2])
        self.status.showMessage(msg, 8000)
        self.carApplied.emit(added)

    def _car_failed(self, ctx: dict, err: JobError) -> None:
        self.show_error(f"CaR failed: {err.message}")

    def cancel_job(self) -> None:
        if self.canvas.tool() is not None and getattr(self.canvas.tool(), "points", None):
            return  # Esc belongs to the polygon / SAM tool (the canvas handles it)
        self.engine.cancel_car()
        self.runner.cancel("download")

    # ----- tools
    def set_tool(self, key: str) -> None:
        tool = self.tools.get(key)
        if key == "sam" and not self.engine.sam_ready:
            self.status.showMessage("SAM is not loaded yet; clicks will work once the models are ready.", 6000)
        self.canvas.set_tool(tool)
        action = self.tool_actions.get(key)
        if action is not None and not action.isChecked():
            action.setChecked(True)
        self.canvas.setFocus()

    def _sam_predicted(self, key, mask) -> None:
        if key == self.image_id and self.canvas.tool() is self.tools["sam"]:
            self.tools["sam"].show_prediction(mask)

    def new_mask_by_sam(self) -> None:
        self.stack.select(-1)
        self.set_tool("sam")
        self.status.showMessage("Click the object (right click: background), then Enter to name it.", 8000)

    def accept_sam_mask(self, mask: np.ndarray) -> None:
        layer = self.annotator.selected_layer()
        if layer is not None:
            self.annotator.replace_mask(layer.id, mask, "SAM refine")
            return
        name = self.ask_category("New mask", "Concept of the new mask:")
        if name:
            new = self.annotator.add_layer(name, mask, source="sam", status="sam", status_text="SAM clicks",
                                           edited=True)
            if new is not None:
                self.stack.select(new.id)

    def ask_category(self, title: str, label: str) -> str | None:
        names = [c.name for c in self.project.list_categories()] if self.project is not None else []
        name, ok = QInputDialog.getItem(self, title, label, names or [""], 0, True)
        return name.strip() if ok and name.strip() else None

    def ask_relabel(self) -> None:
        layer = self.annotator.selected_layer()
        if layer is None:
            self.status.showMessage("Select a mask first.", 4000)
            return
        name = self.ask_category("Relabel", f"New concept for this {layer.name} mask:")
        if name:
            self.annotator.relabel(layer.id, name)

    def delete_selected(self) -> None:
        layer = self.stack.selected()
        if layer is not None:
            self.annotator.delete_layer(layer.id)

    # ----- export
    _export_progress: QProgressDialog | None = None

    def ask_export_coco(self) -> None:
        if self.project is None:
            self.show_error("Open a folder or project first.")
            return
        from .export_dialog import CocoExportDialog

        dlg = CocoExportDialog(str(self.project.path.with_suffix(".coco.json")), self)
        if dlg.exec():
            ids = [self.image_id] if dlg.current_only.isChecked() and self.image_id is not None else None
            self.export_coco(dlg.path.text(), image_ids=ids, **dlg.options())

    def export_coco(self, path: str | Path, **options) -> JobInfo | None:
        if self.project is None:
            return None
        from ..annotations.coco_export import export_coco

        project = self.project
        self._export_progress = QProgressDialog("Exporting COCO JSON…", "Cancel", 0, 0, self)
        self._export_progress.setWindowModality(Qt.WindowModality.WindowModal)
        self._export_progress.setMinimumDuration(300)
        job = self.runner.submit("export", lambda progress, cancel: export_coco(
            project, path, progress=lambda d, t: progress((d, t)), **options), lane="io", label="Export")
        self._export_progress.canceled.connect(lambda: self.runner.invalidate("export"))
        return job

    def _export_done(self, report) -> None:
        if self._export_progress is not None:
            self._export_progress.close()
        notes = "; ".join(getattr(report, "notes", [])[:3])
        self.status.showMessage(f"Exported {report.annotations} masks of {report.images} images to {report.path}"
                                + (f" ({notes})" if notes else ""), 10000)

    # ----- auto-labelling a folder
    def ask_autolabel(self) -> None:
        from .autolabel_dialog import AutoLabelDialog

        if self.autolabel.running:
            if self.autolabel_progress is not None:
                self.autolabel_progress.show()
                self.autolabel_progress.raise_()
            self.status.showMessage("An auto-label run is in progress: cancel it before starting another.", 6000)
            return
        text = self.concept_bar.text().strip() or (self._recent_concepts() or [""])[0]
        try:
            base = self.concept_bar.config().replace(device=self.settings.device)
        except CaRDesktopError:      # the bar's advanced settings are invalid: start from the plain preset
            from ..engine.config import PRESETS, preset

            name = self.settings.default_preset if self.settings.default_preset in PRESETS else "objects"
            base = preset(name, device=self.settings.device)
        dlg = AutoLabelDialog(folder=str(self.project.image_root) if self.project is not None else "",
                              concepts=text, preset_name=base.preset, sam_mode=base.sam_mode, base_config=base,
                              parent=self)
        if dlg.exec():
            self.start_autolabel(dlg.request())

    def start_autolabel(self, request) -> bool:
        """Open the folder's project if it is not the open one, then start the run in the background."""
        from .autolabel_dialog import AutoLabelProgressDialog

        folder = Path(request.folder) if request.folder is not None else None
        if folder is not None and not self._inside_project(folder):
            if not self.open_folder(folder):
                return False
        if self.project is None:
            self.show_error("Open a folder or project first.")
            return False
        try:
            started = self.autolabel.start(self.project, request)
        except CaRDesktopError as exc:
            self.show_error(str(exc))
            return False
        if not started:
            self.status.showMessage("An auto-label run is in progress.", 6000)
            return False
        self._remember_concepts(request.concepts)
        if self.autolabel_progress is not None:
            self.autolabel_progress.close()
        self.autolabel_progress = AutoLabelProgressDialog(request.concepts, self)
        self.autolabel_progress.cancelRequested.connect(lambda: self.autolabel.cancel())
        self.autolabel_progress.show()
        return True

    def _inside_project(self, folder: Path) -> bool:
        if self.project is None:
            return False
        try:
            folder.resolve().relative_to(self.project.image_root.resolve())
            return True
        except (ValueError, CaRDesktopError):
            return False

    def _autolabel_progressed(self, p) -> None:
        if self.autolabel_progress is not None:
            self.autolabel_progress.update_progress(p)

    def _autolabel_image(self, image_id: int, status: str, detail: str) -> None:
        self.file_list.set_status(image_id, status, detail)
        if image_id == self.image_id and status == "auto":
            self.annotator.reload()     # the open image's masks were replaced by the run
        self.review_panel.schedule_refresh(1000)

    def _autolabel_finished(self, p, stopped: bool, error: str) -> None:
        if self.autolabel_progress is not None:
            self.autolabel_progress.show_finished(p, stopped, error)
        if error:
            self.show_error(f"Auto-labelling stopped: {error}")
        elif p is not None:
            self.status.showMessage(f"Auto-label {'cancelled' if stopped else 'finished'}: {p.done} labelled, "
                                    f"{p.skipped} skipped, {p.failed} failed", 10000)
        if self.project is not None and self.autolabel.project is self.project:
            self.review_panel.refresh()     # the file list was updated image by image

    # ----- review queue
    def open_annotation(self, image_id: int, annotation_id: int) -> None:
        """Show the image with that mask selected (from the review queue)."""
        if self.project is None:
            return
        if image_id == self.image_id and self._requested_image == image_id:
            self._pending_annotation = None
            self.select_annotation(annotation_id)
            return
        self._pending_annotation = (image_id, annotation_id)
        if self._requested_image != image_id:
            self.show_image(image_id)

    def select_annotation(self, annotation_id: int) -> bool:
        layer_id = self.annotator.layer_for_annotation(annotation_id)
        if layer_id is None:
            self.status.showMessage("That mask is no longer in the project.", 5000)
            self.review_panel.schedule_refresh()
            return False
        self.stack.select(layer_id)
        layer = self.stack.get(layer_id)
        from .layers import bbox_of

        box = bbox_of(layer.mask) if layer is not None else None
        if box is not None:
            y0, y1, x0, x1 = box
            self.canvas.centerOn((x0 + x1) / 2, (y0 + y1) / 2)
        return True

    def accept_image(self, image_id: int) -> None:
        """Mark an image reviewed (the review queue's Accept)."""
        if self.project is None:
            return
        if image_id == self.image_id:
            self.annotator.mark_reviewed()
            return
        try:
            self.project.set_image_status(image_id, "reviewed")
        except CaRDesktopError as exc:
            self.show_error(str(exc))
            return
        self.file_list.set_status(image_id, "reviewed")
        self.review_panel.schedule_refresh()

    def accept_and_next(self) -> None:
        if self.review_panel.current() is not None:
            self.review_panel.accept_current()
        else:
            self.annotator.mark_reviewed()

    # ----- label PNGs and COCO import
    def ask_export_label_pngs(self) -> None:
        if self.project is None:
            self.show_error("Open a folder or project first.")
            return
        path = QFileDialog.getExistingDirectory(self, "Folder for the label PNGs", str(self.project.path.parent))
        if path:
            self.transfers.export_label_pngs(self.project, path)

    def ask_import_coco(self) -> None:
        if self.project is None:
            self.show_error("Open the folder of the images (or their project) first.")
            return
        dlg = ImportCocoDialog(str(self.project.image_root), self)
        if dlg.exec() and dlg.json_path.text().strip():
            self.transfers.import_coco(self.project, dlg.json_path.text().strip(), dlg.images_dir.text().strip())

    def _transfer_done(self, kind: str, report) -> None:
        if kind == "import_coco":
            self._refresh_file_list()
            self.annotator.reload()
            self.review_panel.refresh()
            self.status.showMessage(f"Imported {report.annotations_added} masks", 8000)
        else:
            self.status.showMessage(f"Wrote {report.images} label maps to {report.path}", 8000)

    # ----- closing
    def closeEvent(self, event) -> None:
        self.runner.shutdown(3000)
        if self.project is not None:
            self.project.close()
        self.settings.sync()
        super().closeEvent(event)
