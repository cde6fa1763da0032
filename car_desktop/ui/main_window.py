"""The main window: lays out the canvas, panels, concept bar and status bar, opens images, folders and
projects, and routes CaR and SAM requests.

It owns no editing, engine or file logic itself: ``Annotator`` does edits, undo and saving (``car_apply``
puts CaR results on it); ``EngineClient`` is the only way to the engine (model loading, CaR runs, SAM
clicks, image decoding); ``JobRunner`` runs the jobs. The menus are built by ``WindowActions``; exports
and imports are ``Transfers``; the folder run is ``AutoLabelController``; the review queue's routing is
``ReviewRouting``. Errors are shown without the window dying, and every message is also kept, in
full, in the "Messages" dock (``messages.MessageLog``, which also receives the app's logged warnings).

A CaR run belongs to the image it was started on: changing image does not stop it, and its result is
stored there (``car_apply.land_car_result``); only an explicit cancel (Esc, Cancel) or opening another
project stops a run, and a message says so. An image that cannot be read replaces the canvas with a
notice naming the file and the reason; a folder with no readable image gets a project only if the user
says so. Images, folders and projects can be dropped on the window (``open_path``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QDir, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QMainWindow,
    QMessageBox,
    QVBoxLayout,
    QWidget,
)

from ..annotations.models import ExportReport, ImportReport
from ..annotations.store import Project
from ..errors import CaRDesktopError
from .annotator import Annotator
from .autolabel_controller import AutoLabelController
from .autolabel_run import AutoLabelRunner
from .canvas import Canvas
from .car_apply import land_car_result, show_car_result, show_forced
from .category_dialog import ask_category
from .concept_bar import ConceptBar
from .concept_panel import ConceptPanel
from .engine_client import CaRConfig, CarRequest, CaRResult, ConceptList, EngineClient, ModelCatalog, PipelineFactory
from .help_dialog import HelpDialog
from .layers import LayerStack
from .long_text import elide
from .messages import MessageLog, install_bridge, remove_bridge
from .polygon_edit import PolygonEditTool
from .project_session import IMAGE_FILTER, PROJECT_FILTER, open_folder, probe_folder
from .quality_panel import QualityPanel
from .review_panel import ReviewPanel
from .review_routing import ReviewRouting
from .settings import Settings
from .status import JobStatusBar
from .tools import BrushTool, PolygonTool, SamClickTool, Tool
from .transfer import Transfers
from .tuned_defaults import TunedDefaults
from .video_controller import VideoMode
from .video_file_list import MediaFileList
from .window_actions import WindowActions
from .workers import JobError, JobRunner

log = logging.getLogger(__name__)

APP_TITLE = "CaR Desktop"
RECENT_CONCEPTS_KEY = "ui.recent_concepts"
MODELS_FALLBACK_MS = 1000      # start loading the models of a window not yet painted after this long
START_HINT = ("Open a folder of images (Ctrl+Shift+O),\nan image (Ctrl+O) or a project (Ctrl+P),\n"
              "pick one under File > Recent projects,\nor drop an image, a folder or a .cardb file here.")


class MainWindow(QMainWindow):
    """The annotation window."""

    quality_panel: QualityPanel    # docked by ``WindowActions`` (``install_quality_panel``)

    imageShown = Signal(object)      # image id (tests wait on it)
    carApplied = Signal(object)      # list of layers added
    carLanded = Signal(int, object)  # image id, CarApplied: a run stored on an image no longer shown

    def __init__(self, *, test_models: bool = False, settings: Settings | None = None,
                 pipeline_factory: PipelineFactory | None = None, model_manager: ModelCatalog | None = None,
                 check_models: bool = True) -> None:
        super().__init__()
        self.test_models = test_models
        self.settings = settings or Settings()
        self.runner = JobRunner(self)
        self.stack = LayerStack(self)
        self.annotator = Annotator(self.stack, self)
        self.canvas = Canvas(self.stack)
        self.concept_bar = ConceptBar(self.settings.default_preset)
        self.concept_panel = ConceptPanel(self.stack)
        self.file_list = MediaFileList()
        self.status = JobStatusBar(self.runner)
        self.setStatusBar(self.status)
        self.engine = EngineClient(self.runner, test_models=test_models,
                                   config=self.settings.engine_config(CaRConfig()), pipeline_factory=pipeline_factory,
                                   model_manager=model_manager, parent=self)
        self.review_panel = ReviewPanel(self.runner)
        self.tuned_defaults = TunedDefaults(self.concept_bar, self)
        self.autolabel = AutoLabelRunner(self.engine, parent=self)
        self.autolabel_controller = AutoLabelController(self, self.autolabel)
        self.transfers = Transfers(self.runner, self)
        self.about_dialog: QWidget | None = None
        self.models_dialog: Any = None
        self.requested_image: int | None = None   # the image being read (``image_id`` once shown)
        self.project: Project | None = None
        self.image_id: int | None = None
        self.image: np.ndarray | None = None
        self.last_error = ""

        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.concept_bar)
        lay.addWidget(self.canvas, 1)
        self.setCentralWidget(central)
        self.setAcceptDrops(True)
        self.canvas.set_notice(START_HINT)
        self.messages = MessageLog()
        concepts_dock = self._dock("Concepts", self.concept_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.messages_dock = self._dock("Messages", self.messages, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.messages_dock.setFeatures(self.messages_dock.features() | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.messages_dock.hide()
        self.messages_dock.toggleViewAction().setChecked(False)   # a hide before show sends no hide event
        self._log_bridge = install_bridge(self.messages)
        images_dock = self._dock("Images", self.file_list, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.review_dock = self._dock("Review queue", self.review_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.review_dock.setFeatures(self.review_dock.features() | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        # The queue's columns (concept, score, SAM, image, status) need the room; the file list less so.
        self.resizeDocks([self.review_dock, concepts_dock], [430, 340], Qt.Orientation.Horizontal)
        self.resizeDocks([images_dock, self.review_dock], [200, 600], Qt.Orientation.Vertical)
        self.review = ReviewRouting(self)

        self.sam_tool = SamClickTool(self.annotator)
        self.tools: dict[str, Tool] = {
            "brush": BrushTool(self.annotator), "eraser": BrushTool(self.annotator, erase=True),
            "polygon_add": PolygonTool(self.annotator), "polygon_subtract": PolygonTool(self.annotator, subtract=True),
            "sam": self.sam_tool, "polygon_edit": PolygonEditTool(self.annotator),
        }
        self.polygon_editor: PolygonEditTool = self.tools["polygon_edit"]  # type: ignore[assignment]
        self.polygon_editor.finished = lambda: self.set_tool("select")
        self.menus = WindowActions(self)
        self.video = VideoMode(self)
        lay.addWidget(self.video.timeline)
        self._connect()
        self.concept_panel.opacity.setValue(int(self.settings.opacity * 100))
        self.canvas.set_opacity(self.settings.opacity)
        self._update_title()
        self.status.set_device_text(self.engine.device_text())
        self.resize(1400, 900)
        # Models load once the window has painted: a worker importing torch meanwhile would hold the
        # interpreter and delay the first paint. A window never shown starts them a little later.
        self._models_pending = check_models
        if check_models:
            QTimer.singleShot(MODELS_FALLBACK_MS, self._start_models_once)

    # ----- construction
    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(area, dock)
        return dock

    def _connect(self) -> None:
        self.concept_bar.runRequested.connect(self.run_car)
        self.concept_bar.presetChanged.connect(lambda n: setattr(self.settings, "default_preset", n))
        self.concept_panel.opacityChanged.connect(self._opacity)
        self.concept_panel.visibilityRequested.connect(self.annotator.set_visible)
        self.concept_panel.soloRequested.connect(self.stack.solo)
        self.concept_panel.renameRequested.connect(self.annotator.rename)
        self.concept_panel.recolourRequested.connect(self.annotator.recolour)
        self.concept_panel.deleteRequested.connect(self.annotator.delete_layer)
        self.concept_panel.forceKeepRequested.connect(self.force_keep)
        self.file_list.imageActivated.connect(self.show_image)
        self.canvas.hovered.connect(self.status.set_hover)
        self.canvas.layerMenuRequested.connect(lambda lid, pos: self.menus.mask_menu(lid).exec(pos))
        self.canvas.cursorMoved.connect(self._pixel_readout)
        self.status.messagePosted.connect(self.messages.add)
        self.annotator.rowsChanged.connect(lambda: self.review_panel.schedule_refresh())
        self.annotator.info.connect(lambda text: self.status.showMessage(text, 5000))
        self.annotator.failed.connect(self.show_error)
        self.annotator.historyChanged.connect(self.menus.history_changed)
        self.annotator.imageStatusChanged.connect(lambda iid, st: self.file_list.set_status(iid, st))
        self.annotator.samPredictRequested.connect(self.engine.sam_predict)
        self.annotator.samAccepted.connect(self.accept_sam_mask)
        self.engine.carFinished.connect(self._car_finished)
        self.engine.carFailed.connect(self._car_failed)
        self.engine.carCancelled.connect(self._car_cancelled)
        self.engine.samPredicted.connect(self._sam_predicted)
        self.engine.modelsReady.connect(self._models_ready)
        self.engine.modelsMissing.connect(self._models_missing)
        self.engine.error.connect(self.show_error)
        self.transfers.done.connect(self._transfer_done)
        self.transfers.failed.connect(lambda kind, text: self.status.showMessage(text, 10000))
        self.transfers.problem.connect(self.show_error)
        self.menus.history_changed()

    # ----- small helpers
    def _update_title(self) -> None:
        parts = [APP_TITLE]
        if self.project is not None:
            parts.append(self.project.path.name)
        if self.test_models:
            parts.append("TEST MODELS (random weights, masks are meaningless)")
        self.setWindowTitle(" — ".join(parts))

    def _pixel_readout(self, x: int, y: int) -> None:
        """The pixel under the cursor and its colour, in the status bar's own field."""
        text = f"{x}, {y}"
        image = self.image
        if image is not None and 0 <= y < image.shape[0] and 0 <= x < image.shape[1]:
            text += "  RGB " + " ".join(str(int(v)) for v in np.atleast_1d(image[y, x])[:3])
        self.status.pixel_label.setText(text)

    def _opacity(self, value: float) -> None:
        self.canvas.set_opacity(value)
        self.settings.opacity = value

    def show_error(self, text: str) -> None:
        """Errors show in the status bar and, unless running headless tests, a dialog."""
        self.last_error = text
        self.messages.add(text, "error")
        log.warning("%s", text)
        self.status.showMessage(text, 10000)
        if QApplication.platformName() != "offscreen":
            QMessageBox.warning(self, APP_TITLE, text)

    def set_theme(self, name: str) -> None:
        from .theme import apply_theme

        self.settings.theme = name
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, name)

    def set_device(self, name: str) -> None:
        self.settings.device = name
        self.status.showMessage(f"Device {name} is used from the next start.", 6000)

    def set_precision(self, name: str) -> None:
        self.settings.precision = name
        self.status.showMessage(f"Precision {name} is used from the next run.", 6000)

    def show_help(self) -> None:
        HelpDialog(self).exec()

    def show_about(self) -> None:
        from .about_dialog import AboutDialog

        self.about_dialog = AboutDialog(self.engine.device_text(), self)
        self.about_dialog.open()

    # ----- models
    def paintEvent(self, event) -> None:
        super().paintEvent(event)
        if self._models_pending:
            QTimer.singleShot(0, self._start_models_once)

    def _start_models_once(self) -> None:
        if self._models_pending:
            self._models_pending = False
            self.start_models()

    def start_models(self) -> None:
        """Load the models in the background, or open the models dialog when weights are missing."""
        if not self.test_models:
            try:
                missing = [s for s in self.engine.model_manager().list() if not s.ok and not s.optional]
            except Exception as exc:  # a broken manifest must not stop the window from opening
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
            self.models_dialog = ModelsDialog(self.engine.model_manager(), self.runner, intro, self)
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
    def start_folder(self) -> str:
        """Where file dialogs start: the open project's image folder, else the home folder."""
        if self.project is not None:
            try:
                return str(self.project.image_root)
            except CaRDesktopError:
                pass
        return QDir.homePath()

    def ask_open_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open image", self.start_folder(), IMAGE_FILTER)
        if path:
            self.open_image(path)

    def ask_open_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open folder of images", self.start_folder())
        if path:
            self.open_folder(path)

    def ask_open_project(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open project", self.start_folder(), PROJECT_FILTER)
        if path:
            self.open_project(path)

    def open_path(self, path: str | Path) -> bool:
        """Open whatever ``path`` is: a folder, a project (.cardb) or an image (command line, drops)."""
        path = Path(path)
        if path.is_dir():
            return self.open_folder(path)
        if path.suffix.lower() == ".cardb":
            return self.open_project(path)
        if path.is_file():
            return self.open_image(path)
        self.show_error(f"{path} was not found.")
        return False

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.open_path(files[0])

    def _set_project(self, project: Project) -> None:
        if self.project is not project and self.engine.cancel_car():
            self.status.showMessage("CaR run cancelled: another project was opened. Nothing of it was saved.", 8000)
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
        self.video.set_project(project)
        self.refresh_file_list(keep_errors=False)
        self.concept_bar.set_recent(self.recent_concepts())
        self.review_panel.set_project(project)
        self.quality_panel.set_project(project)
        self.tuned_defaults.set_project(project)

    def refresh_file_list(self, keep_errors: bool = True) -> None:
        """Statuses from the project; images found unreadable in this session stay marked."""
        images = self.project.list_images() if self.project is not None else []
        unreadable = {k for k in self.file_list.keys() if keep_errors and self.file_list.status(k) == "error"}
        self.file_list.set_images([(im.id, im.rel_path, "error" if im.id in unreadable else im.status)
                                   for im in images])
        if self.image_id is not None:
            self.file_list.select_key(self.image_id)

    def open_folder(self, folder: str | Path, select: str | None = None) -> bool:
        folder = Path(folder)
        try:
            probe = probe_folder(folder)
        except OSError as exc:
            self.show_error(f"Cannot read the folder {folder}: {exc.strerror or exc}")
            return False
        if not probe.readable and not self._confirm_empty_project(folder, probe.failures):
            return False
        try:
            opened = open_folder(folder)
        except CaRDesktopError as exc:
            self.show_error(str(exc))
            return False
        project = opened.project
        self._set_project(project)
        self.file_list.add_failures([(f.rel_path, f.reason) for f in opened.failures])
        failed = {f.rel_path: f.reason for f in opened.failures}
        if select is not None and select in failed:
            self._show_unreadable(select, failed[select])
            return False
        if opened.in_user_data:
            self.status.showMessage(f"The folder is read-only: the project is kept in {project.path}", 10000)
        keys = self.file_list.image_keys()
        target = None
        if select is not None:
            rec = project.find_image(select)
            target = rec.id if rec is not None else None
        if target is None and keys:
            target = keys[0]
        if target is not None:
            self.show_image(target)
        elif opened.failures:
            first = opened.failures[0]
            self._show_unreadable(first.rel_path, first.reason)
        return True

    def _confirm_empty_project(self, folder: Path, failures: list[tuple[str, str]]) -> bool:
        """A folder without a project and without a readable image: say why, and make a project only if
        the user wants one (an empty project file beside unreadable files is rarely wanted)."""
        if failures:
            rel, reason = failures[0]
            more = f" (and {len(failures) - 1} more unreadable file(s))" if len(failures) > 1 else ""
            why = f"cannot read {rel}: {reason}{more}"
        else:
            why = "it has no image files"
        answer = QMessageBox.question(
            self, APP_TITLE, f"{folder} has no image that can be opened: {why}.\n\n"
            "Create a project for it anyway (to add images later)?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer == QMessageBox.StandardButton.Yes:
            return True
        self.status.showMessage(f"No project was created for {folder}: {why}.", 10000)
        self.file_list.add_failures(failures)
        if failures:
            self._show_unreadable(*failures[0], report=False)
        return False

    def _show_unreadable(self, name: str, reason: str, report: bool = True) -> None:
        """An image that cannot be read: the canvas says so instead of showing the previous image."""
        self.image_id, self.image = None, None
        self.annotator.load_image(None, 0, 0)
        self.engine.set_image(None, None)
        self.canvas.show_notice(f"Cannot read {Path(name).name}: {reason}")
        if report:
            self.show_error(f"Cannot read {name}: {reason}")

    def open_image(self, path: str | Path) -> bool:
        path = Path(path)
        return self.open_folder(path.parent, select=path.name)

    def open_project(self, path: str | Path) -> bool:
        try:
            project = Project.open(path)
        except CaRDesktopError as exc:
            self.show_error(str(exc))
            return False
        uri = project.image_root_uri
        if uri is not None:  # the window reads local files only: say so, open nothing
            project.close()
            self.show_error(f"{path}: its images are in {uri}, not in a local folder; the window "
                            f"shows local images only (copy them, then: car-desktop relink {path} FOLDER)")
            return False
        self._set_project(project)
        images, clips = self.file_list.image_keys(), self.file_list.clip_ids()
        if images:
            self.show_image(images[0])
        elif clips:   # a project of clips only: its first clip (a clip row is not an image id)
            self.video.show_clip(clips[0])
        return True

    def show_image(self, image_id: int) -> None:
        """Read the image on the io lane; a newer request supersedes an older one."""
        if self.project is None:
            return
        self.video.leave()
        path = self.project.image_path(image_id)
        self.requested_image = image_id
        self.file_list.select_key(image_id)

        def failed(err: JobError) -> None:
            self.file_list.set_status(image_id, "error", err.message)
            self._show_unreadable(path.name, err.message, report=False)
            self.show_error(f"{path.name} was skipped: {err.message}")

        self.engine.read_image(path, lambda image: self._image_loaded(image_id, image), failed)

    def step_image(self, step: int) -> None:
        current = self.image_id if self.image_id is not None else self.requested_image
        if current is None:
            return
        target = self.file_list.neighbour(current, step)
        if target is not None:
            self.show_image(target)

    def show_frame_image(self, image_id: int, image: np.ndarray) -> None:
        """Show a decoded clip frame (the video controller read it) as the image ``image_id``."""
        self._image_loaded(image_id, image)

    def _image_loaded(self, image_id: int, image: np.ndarray) -> None:
        self.image_id, self.image = image_id, image
        if self.canvas.tool() is self.sam_tool:
            self.sam_tool.clear()
        h, w = image.shape[:2]
        rec = self.project.get_image(image_id) if self.project is not None else None
        if rec is not None and (rec.height, rec.width) != (h, w):
            log.warning("image %s is %dx%d on disk, %dx%d in the project", rec.rel_path, w, h, rec.width, rec.height)
        self.canvas.set_notice("")
        self.canvas.set_image(image)
        try:
            self.annotator.load_image(image_id, h, w)
        except CaRDesktopError as exc:
            self.show_error(str(exc))
        self.engine.set_image(image, image_id)
        self.file_list.select_key(image_id)
        if rec is not None:
            self.file_list.set_status(image_id, rec.status)
            self.setWindowFilePath(rec.rel_path)
        self.imageShown.emit(image_id)

    # ----- CaR
    def recent_concepts(self) -> list[str]:
        if self.project is None:
            return []
        value = self.project.get_setting(RECENT_CONCEPTS_KEY, [])
        return [str(v) for v in value] if isinstance(value, list) else []

    def remember_concepts(self, text: str) -> None:
        if self.project is not None:
            recent = [text] + [t for t in self.recent_concepts() if t != text]
            try:
                self.project.set_setting(RECENT_CONCEPTS_KEY, recent[:15])
            except CaRDesktopError as exc:
                log.warning("recent concepts not saved: %s", exc)
            self.concept_bar.set_recent(recent[:15])

    def run_car(self, concepts: ConceptList, config: CaRConfig) -> None:
        if self.image is None:
            self.concept_bar.show_error("Open an image first.")
            return
        self.remember_concepts(concepts.text)
        if self.test_models:
            self.messages.add("This run uses the test models (random weights): its masks are meaningless.",
                              "warning")
        if self.autolabel.running:
            self.status.showMessage("Auto-labelling is running: this run starts after the images in progress.", 6000)
        config = self.settings.engine_config(config)
        self.engine.run_car(self.image, CarRequest(self.image_id, concepts, config))

    def force_keep(self, ghost_id: int) -> None:
        """Run CaR on a removed concept alone and keep what it finds."""
        ghost = self.stack.get(ghost_id)
        if ghost is None or self.image is None:
            return
        try:
            concepts = ConceptList.parse([ghost.concept or ghost.name], check_length=False)
            config = self.settings.engine_config(self.concept_bar.config())
        except CaRDesktopError as exc:
            self.show_error(str(exc))
            return
        self.engine.run_car(self.image, CarRequest(self.image_id, concepts, config, ghost_id=ghost_id))

    def _car_finished(self, request: CarRequest, result: CaRResult) -> None:
        if self.video.take_car_result(request, result):
            return
        for warning in result.warnings:
            self.messages.add(f"CaR: {warning}", "warning")
        if request.image_key != self.image_id:
            self._car_landed(request, result)
            return
        if request.ghost_id is not None:
            show_forced(self.annotator, request.ghost_id, result)
            return
        added = show_car_result(self.annotator, result)
        kept = sum(1 for c in result.concepts if c.status != "removed")
        msg = f"CaR: {kept} of {len(result.concepts)} concepts kept"
        if result.warnings:
            msg += " — " + "; ".join(result.warnings[:2])
        self.status.showMessage(msg, 8000)
        self.carApplied.emit(added)

    def _image_name(self, image_id: Any) -> str:
        try:
            return self.project.get_image(image_id).rel_path if self.project is not None else str(image_id)
        except (CaRDesktopError, TypeError, KeyError):
            return f"image {image_id}"

    def _car_landed(self, request: CarRequest, result: CaRResult) -> None:
        """A run whose image is no longer shown: store it there, undoable when that image is back."""
        if self.project is None or not isinstance(request.image_key, int):
            return
        image_id = request.image_key
        force = request.concepts.labels[0] if request.ghost_id is not None else None
        applied = land_car_result(self.annotator, image_id, result, force_concept=force)
        if applied is None:
            return
        if applied.status_changed:
            self.file_list.set_status(image_id, "auto")
        name = self._image_name(image_id)
        self.status.showMessage(f"CaR on {name} finished after you moved on: {len(applied.added)} mask(s) saved "
                                f"there (open it to see them; Ctrl+Z there undoes the run).", 10000)
        self.review_panel.schedule_refresh()
        self.carLanded.emit(image_id, applied)

    def _car_failed(self, request: CarRequest, err: JobError) -> None:
        self.show_error(f"CaR failed on {self._image_name(request.image_key)}: {err.message}")

    def _car_cancelled(self, request: CarRequest) -> None:
        self.status.showMessage(f"CaR run on {self._image_name(request.image_key)} cancelled: nothing of it was "
                                "saved.", 8000)

    def cancel_job(self) -> None:
        """Esc: first the active tool's clicks (or polygon edit), then the selected mask, then running jobs."""
        tool = self.canvas.tool()
        if tool is not None and tool.has_pending_input():
            tool.cancel_input()
            return
        if self.stack.selected_id != -1:
            self.stack.select(-1)
            return
        self.engine.cancel_car()
        self.runner.cancel("download")
        self.runner.cancel("video")   # a clip's labelling or propagation (what is done is kept)

    # ----- tools
    def set_tool(self, key: str) -> None:
        if key == "sam" and not self.engine.sam_ready:
            self.status.showMessage("SAM is not loaded yet; clicks will work once the models are ready.", 6000)
        self.canvas.set_tool(self.tools.get(key))
        self.menus.check_tool(key)
        self.canvas.setFocus()

    def edit_polygon(self) -> None:
        """Turn the selected mask into an editable polygon (Enter applies, Esc cancels)."""
        if self.annotator.selected_layer() is None:
            self.status.showMessage("Select a mask first, then Edit as polygon (Ctrl+J).", 5000)
            return
        self.set_tool("polygon_edit")
        if not self.polygon_editor.editing():
            self.set_tool("select")

    def solo_selected(self) -> None:
        """Show only the selected mask (O again shows the others as they were)."""
        layer = self.stack.selected()
        if layer is None:
            self.status.showMessage("Select a mask first.", 4000)
            return
        alone = self.stack.solo(layer.id)
        self.status.showMessage(f"Showing only {elide(layer.name)} (O shows all)" if alone else "Showing all masks",
                                4000)

    def _sam_predicted(self, key: Any, mask: np.ndarray) -> None:
        if key == self.image_id and self.canvas.tool() is self.sam_tool:
            self.sam_tool.show_prediction(mask)

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

    def ask_category(self, title: str, label: str, current: str = "") -> str | None:
        names = [c.name for c in self.project.list_categories()] if self.project is not None else []
        return ask_category(self, title, label, names, current)

    def ask_relabel(self) -> None:
        layer = self.annotator.selected_layer()
        if layer is None:
            self.status.showMessage("Select a mask first.", 4000)
            return
        name = self.ask_category("Relabel", f"New concept for this {layer.name} mask:", layer.name)
        if name and name != layer.name:
            self.annotator.relabel(layer.id, name)

    def delete_selected(self) -> None:
        layer = self.stack.selected()
        if layer is not None:
            self.annotator.delete_layer(layer.id)

    # ----- exports and imports (Transfers does the work)
    def _transfer_done(self, kind: str, report: ExportReport | ImportReport) -> None:
        if isinstance(report, ImportReport):
            self.refresh_file_list()
            self.annotator.reload()
            self.review_panel.refresh()
            self.status.showMessage(f"Imported {report.annotations_added} masks", 8000)
        else:
            self.status.showMessage(f"Wrote {report.annotations} masks of {report.images} images to {report.path}",
                                    8000)

    # ----- closing
    def closeEvent(self, event) -> None:
        remove_bridge(self._log_bridge)
        self.runner.shutdown(3000)
        if self.project is not None:
            self.project.close()
        self.settings.sync()
        super().closeEvent(event)
