"""Clips in the window: opening one, showing its frames, CaR on a frame, labelling and propagating the
clip in the background, re-propagating an edited object, undoing runs, exporting.

``VideoMode`` owns the timeline (``video_timeline``) and the Video menu. A clip is opened into the
folder's project (``EngineClient.open_clip``) and listed as one row of the file list. A frame is an
image of the project: it is decoded on the io lane and shown through the window's own image path, so
the canvas, the layers, every editing tool, SAM clicks and the per-frame undo work on it unchanged.

CaR typed in the concept bar runs on the frame shown; the window hands the result here
(``take_car_result``; also when the user moved to another frame meanwhile), where it is stored as a key
frame (``video_masks.store_key_result``) and, when
the clip was propagated before, the runs around it are redone (the frame re-seeds its neighbours; a
concept CaR finds absent there is removed there). Storing the key frame is itself an undo step.
"Label clip…" runs CaR on key frames every N
frames or at scene cuts and propagates (``EngineClient.run_video``); "Propagate" carries the objects
from the stored key frames; "Re-propagate from this frame" carries only the selected object, forward
from the frame shown (after an edit). Frames fill in as they finish (the frame shown is reloaded
when a run writes it). Each run is one undo step: Ctrl+Z undoes the edits of the frame shown first,
then the last run (``video_masks.undo``, on the io lane); the journals are kept within a memory budget.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu

from ..annotations import video_masks, video_store
from ..annotations.video_export import export_video_coco
from ..annotations.ytvis import export_ytvis
from ..errors import CaRDesktopError
from ..videolabel import VideoJob, VideoProgress, VideoReport
from .engine_client import VIDEO_EXTENSIONS, CarRequest, CaRResult, ConceptList
from .video_dialog import VideoChoice, VideoLabelDialog
from .video_timeline import Timeline
from .workers import JobError

if TYPE_CHECKING:
    from .main_window import MainWindow

log = logging.getLogger(__name__)

#: Undo journals of runs kept at most (bytes of the masks they replaced).
UNDO_BUDGET = 256 * 1024 * 1024
LAST_JOB_SETTING = "video.last_job"
VIDEO_FILTER = f"Videos ({' '.join('*' + e for e in sorted(VIDEO_EXTENSIONS))});;All files (*)"


class VideoMode(QObject):
    """See the module docstring."""

    clipShown = Signal(int)          # clip id
    frameShown = Signal(int)         # frame index
    runFinished = Signal(object)     # VideoReport
    undone = Signal()

    def __init__(self, win: MainWindow) -> None:
        super().__init__(win)
        self.win = win
        self.timeline = Timeline()
        self.timeline.hide()
        self.timeline.frameRequested.connect(self.show_frame)
        self.video: video_store.VideoRecord | None = None
        self.frame = 0
        self._frame_ids: list[int] = []
        self._frame_of: dict[int, int] = {}
        self._loading: int | None = None
        self._pending: int | None = None
        self._journals: list[video_masks.Journal] = []
        self._done: set[int] = set()
        self.running = False
        self.last_report: VideoReport | None = None
        self._actions: list[QAction] = []
        self._build_menu()
        win.file_list.videoActivated.connect(self.show_clip)

    # ----------------------------------------------------------------------------- menu
    def _build_menu(self) -> None:
        bar = self.win.menuBar()
        menu = QMenu("&Video", self.win)
        help_menu = bar.actions()[-1] if bar.actions() else None
        bar.insertMenu(help_menu, menu) if help_menu is not None else bar.addMenu(menu)

        def add(text: str, slot: Any, shortcut: str | None = None, clip_only: bool = True, tip: str = "") -> QAction:
            action = QAction(text, self.win)
            if shortcut:
                action.setShortcut(QKeySequence(shortcut))
            if tip:
                action.setStatusTip(tip)
            action.triggered.connect(slot)
            menu.addAction(action)
            self.win.addAction(action)
            if clip_only:
                action.setEnabled(False)
                self._actions.append(action)
            return action

        add("Open video…", self.ask_open, "Ctrl+Alt+O", clip_only=False)
        add("Open frame folder…", self.ask_open_folder, clip_only=False,
            tip="A folder of numbered frames (frame_0001.png, ...) as one clip")
        menu.addSeparator()
        add("Label clip…", self.ask_label, "Ctrl+Alt+L",
            tip="CaR on key frames (every N frames or at scene cuts), then SAM 2 through the clip")
        add("Propagate", lambda: self.propagate(), "Ctrl+Alt+P",
            tip="SAM 2 carries every object from its key frames (only what changed is redone)")
        add("Re-propagate selected object from this frame", self.repropagate_selected, "Ctrl+Alt+R",
            tip="After editing a mask: carry only this object forward from the frame shown")
        add("Undo last propagation run", self.undo_run)
        menu.addSeparator()
        add("Previous frame", lambda: self.timeline.step(-1), ",")
        add("Next frame", lambda: self.timeline.step(+1), ".")
        add("Previous key frame", lambda: self.timeline.jump_key(-1), "<")
        add("Next key frame", lambda: self.timeline.jump_key(+1), ">")
        add("Play / pause", self.timeline.toggle_play, "Ctrl+Space")
        menu.addSeparator()
        add("Export clip as COCO…", lambda: self.ask_export("coco"))
        add("Export clip as YouTube-VIS…", lambda: self.ask_export("ytvis"))

    def _enable(self, on: bool) -> None:
        for action in self._actions:
            action.setEnabled(on)

    # ----------------------------------------------------------------------------- project and list
    def set_project(self, project: Any) -> None:
        """A project was opened: leave the clip, list the project's clips."""
        self.leave()
        self._journals.clear()
        self.refresh_list()

    def refresh_list(self) -> None:
        project = self.win.project
        rows = []
        if project is not None:
            for v in video_store.list_videos(project):
                counts = video_store.frame_status_counts(project, v.id)
                status = ("reviewed" if counts.get("reviewed", 0) == v.frame_count else
                          "auto" if counts.get("auto", 0) or counts.get("reviewed", 0) else "new")
                rows.append((v.id, v.rel_path, v.frame_count, status))
        self.win.file_list.set_videos(rows)
        if self.video is not None:
            self.win.file_list.select_video(self.video.id)

    # ----------------------------------------------------------------------------- opening
    def ask_open(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.win, "Open video", "", VIDEO_FILTER)
        if path:
            self.open_path(path)

    def ask_open_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self.win, "Open a folder of numbered frames")
        if path:
            self.open_path(path)

    def open_path(self, path: str | Path) -> None:
        """Add a clip to the project of its folder (opened if needed) and show it."""
        path = Path(path)
        project = self.win.project
        inside = project is not None and path.resolve().is_relative_to(project.image_root.resolve())
        if not inside and not self.win.open_folder(path.parent):
            return
        assert self.win.project is not None
        self.win.engine.open_clip(self.win.project, path, lambda got: self._opened(*got),
                                  lambda err: self.win.show_error(f"{path.name}: {err.message}"))

    def _opened(self, record: video_store.VideoRecord, info: Any) -> None:
        for warning in info.warnings:
            self.win.status.showMessage(warning, 15000)
        self.refresh_list()
        self.show_clip(record.id)

    def show_clip(self, video_id: int) -> None:
        project = self.win.project
        if project is None:
            return
        try:
            self.video = video_store.get_video(project, video_id)
            self._frame_ids = video_store.frame_ids(project, video_id)
        except CaRDesktopError as exc:
            self.win.show_error(str(exc))
            return
        self._frame_of = {image_id: i for i, image_id in enumerate(self._frame_ids)}
        self._done = set()
        self.timeline.set_clip(self.video.frame_count, self.video.fps)
        self.timeline.show()
        self._enable(True)
        self.refresh_marks()
        self.win.file_list.select_video(video_id)
        self.clipShown.emit(video_id)
        self.show_frame(0)

    def leave(self) -> None:
        """Back to images: the timeline goes, the clip is closed."""
        if self.video is None:
            return
        self.video = None
        self._frame_ids, self._frame_of = [], {}
        self.timeline.stop()
        self.timeline.hide()
        self._enable(False)
        self.win.engine.close_clip()

    # ----------------------------------------------------------------------------- frames
    def show_frame(self, index: int) -> None:
        """Decode and show frame ``index`` (a newer request while one is decoding replaces older ones)."""
        if self.video is None or self.win.project is None:
            return
        index = min(max(index, 0), self.video.frame_count - 1)
        if self._loading is not None:
            self._pending = index
            return
        self._loading = index
        video_id = self.video.id
        self.win.engine.read_frame(self.win.project, video_id, index, lambda got: self._frame_read(video_id, *got),
                                   self._frame_failed)

    def _frame_read(self, video_id: int, index: int, image: np.ndarray) -> None:
        self._loading = None
        if self.video is None or self.video.id != video_id:
            return
        if self._pending is not None and self._pending != index:
            pending, self._pending = self._pending, None
            self.show_frame(pending)
            return
        self._pending = None
        self.frame = index
        self.win.show_frame_image(self._frame_ids[index], image)
        self.timeline.set_frame(index)
        self.win.file_list.select_video(video_id)
        self.frameShown.emit(index)

    def _frame_failed(self, err: JobError) -> None:
        self._loading, self._pending = None, None
        self.timeline.stop()
        self.win.show_error(f"The frame cannot be shown: {err.message}")

    def refresh_marks(self) -> None:
        if self.video is None or self.win.project is None:
            return
        project, video_id = self.win.project, self.video.id
        spans = [s for ranges in video_store.gaps(project, video_id).values() for s in ranges]
        self.timeline.set_marks(video_store.key_frames(project, video_id), spans)

    def _reload_frame(self) -> None:
        if self.video is not None and self.win.image_id in self._frame_of:
            self.win.annotator.reload()

    # ----------------------------------------------------------------------------- CaR on a frame
    def take_car_result(self, request: CarRequest, result: CaRResult) -> bool:
        """Store a CaR run on a clip's frame as a key frame (True), or leave it to the window (False: not a
        frame). A frame no longer shown gets it too: moving on never loses a run. Undoable (one step)
        while its clip is open; a run that lands on a clip no longer open says so."""
        project = self.win.project
        if project is None or request.ghost_id is not None or not isinstance(request.image_key, int):
            return False
        located = video_store.frame_of_image(project, request.image_key)
        if located is None:
            return False
        video_id, index = located
        is_open = self.video is not None and self.video.id == video_id
        shown = is_open and request.image_key == self.win.image_id
        annotator = self.win.annotator
        journal = video_masks.Journal(video_id, f"CaR on frame {index + 1}")
        ok, applied = annotator.guard(video_masks.store_key_result, project, video_id, index, result,
                                      journal=journal)
        if not ok or applied is None:
            return True
        kept = sum(1 for c in result.concepts if c.status != "removed")
        text = f"CaR on frame {index + 1}: {kept} of {len(result.concepts)} concepts kept; key frame added"
        if not is_open:
            clip = video_store.get_video(project, video_id).rel_path
            self.win.status.showMessage(f"{text} to {clip} after you left it (reopen it to see it; not undoable "
                                        "from here).", 10000)
            return True
        self._push(journal)          # one undo step with the key frame record (the layers' undo would miss it)
        if shown:
            annotator.reload()
        self.win.menus.history_changed()
        if applied.status_changed:
            self.refresh_list()
        self.refresh_marks()
        self.win.status.showMessage(text if shown else f"{text} (finished after you moved to another frame)", 8000)
        if shown:
            self.win.carApplied.emit(applied.added)
        if video_store.run_records(project, video_id):
            self.propagate()  # the frame re-seeds the runs around it
        return True

    # ----------------------------------------------------------------------------- runs
    def _last_choice(self) -> VideoChoice:
        saved = self.win.project.get_setting(LAST_JOB_SETTING, {}) if self.win.project is not None else {}
        saved = saved if isinstance(saved, dict) else {}
        return VideoChoice(str(saved.get("concepts") or self.win.concept_bar.text()), int(saved.get("every", 30)),
                           bool(saved.get("scene_cuts", False)), float(saved.get("cut_threshold", 0.5)),
                           str(saved.get("sam2_model", "tiny")))

    def ask_label(self) -> None:
        if self.video is None:
            return
        dialog = VideoLabelDialog(self._last_choice(), self.video.frame_count, self.win)
        if dialog.exec():
            self.label(dialog.choice())

    def label(self, choice: VideoChoice) -> None:
        """CaR on the key frames of ``choice``, then propagation, in the background."""
        if self.video is None or self.win.project is None or self.running:
            return
        try:
            config = self.win.settings.engine_config(self.win.concept_bar.config())
            concepts = ConceptList.parse(choice.concepts, check_length=False)   # the worker shortens long ones
            job = VideoJob(concepts, config, every=choice.every, scene_cuts=choice.scene_cuts,
                           cut_threshold=choice.cut_threshold, sam2_model=choice.sam2_model,
                           test_models=self.win.test_models)
            self.win.project.set_setting(LAST_JOB_SETTING, choice.__dict__)
        except CaRDesktopError as exc:
            self.win.show_error(str(exc))
            return
        self._start()
        self.win.engine.run_video(self.win.project, self.video.id, job, on_progress=self._progress,
                                  on_done=self._finished, on_failed=self._failed, on_cancelled=self._cancelled)

    def propagate(self, categories: list[int] | None = None, from_frame: int | None = None) -> None:
        if self.video is None or self.win.project is None or self.running:
            return
        self._start()
        self.win.engine.propagate_clip(self.win.project, self.video.id, self._last_choice().sam2_model,
                                       categories=categories, from_frame=from_frame, on_progress=self._progress,
                                       on_done=self._finished, on_failed=self._failed, on_cancelled=self._cancelled)

    def repropagate_selected(self) -> None:
        layer = self.win.annotator.selected_layer()
        if layer is None or layer.category_id is None:
            self.win.status.showMessage("Select the mask of the object to carry forward first.", 6000)
            return
        self.propagate([layer.category_id], from_frame=self.frame)

    def _start(self) -> None:
        self.running = True
        self._done = set()
        self.timeline.set_done(())

    def _progress(self, p: VideoProgress | str) -> None:
        if not isinstance(p, VideoProgress) or p.frame is None:
            return
        if p.stage == "propagation":
            self._done.add(p.frame)
            self.timeline.set_done(self._done)
        if p.frame == self.frame and self.video is not None:
            self._reload_frame()   # the frame shown was just written: show its new masks
        if p.stage == "key frames":
            self.refresh_marks()

    def _finished(self, report: VideoReport) -> None:
        self.running = False
        self.last_report = report
        if report.journal is not None and not report.journal.empty:
            self._push(report.journal)
        self._after_run()
        text = (f"Clip: {report.keys_labelled} key frame(s) labelled, {report.frames_stored} frame(s) propagated"
                + (", stopped" if report.stopped else ""))
        self.win.status.showMessage(text, 10000)
        self.runFinished.emit(report)

    def _failed(self, err: JobError) -> None:
        self.running = False
        self._after_run()
        self.win.show_error(f"Video: {err.message}")

    def _cancelled(self) -> None:
        self.running = False
        self._after_run()
        self.win.status.showMessage("Video run cancelled; the frames done so far are kept (Propagate resumes).", 8000)

    def _after_run(self) -> None:
        self.timeline.set_done(())
        self.refresh_marks()
        self.refresh_list()
        self._reload_frame()
        self.win.menus.history_changed()

    # ----------------------------------------------------------------------------- undo
    def _push(self, journal: video_masks.Journal) -> None:
        self._journals.append(journal)
        while len(self._journals) > 1 and sum(j.nbytes for j in self._journals) > UNDO_BUDGET:
            self._journals.pop(0)

    def can_undo(self) -> bool:
        return self.win.annotator.can_undo() or (self.video is not None and bool(self._journals) and not self.running)

    def undo(self) -> None:
        """Ctrl+Z: the frame's own edits first, then the last propagation run."""
        if self.win.annotator.can_undo():
            self.win.annotator.undo()
        else:
            self.undo_run()

    def undo_run(self) -> None:
        project = self.win.project
        if not self._journals or project is None or self.running:
            return
        journal = self._journals.pop()

        def done(_redo: video_masks.Journal) -> None:
            self._after_run()
            self.win.status.showMessage(f"Undone: {journal.label}", 6000)
            self.undone.emit()

        def failed(err: JobError) -> None:
            self._journals.append(journal)
            self.win.show_error(f"Undo failed: {err.message}")

        self.win.runner.submit("video_undo", lambda progress, cancel: video_masks.undo(project, journal), lane="io",
                               label="Undoing the run", on_done=done, on_failed=failed)

    # ----------------------------------------------------------------------------- export
    def ask_export(self, kind: str) -> None:
        if self.video is None or self.win.project is None:
            return
        title = "Export clip as COCO" if kind == "coco" else "Export clip as YouTube-VIS"
        path, _ = QFileDialog.getSaveFileName(self.win, title, "", "JSON (*.json)")
        if path:
            self.export(kind, Path(path))

    def export(self, kind: str, path: Path) -> None:
        project, video_id = self.win.project, self.video.id if self.video is not None else None
        if project is None or video_id is None:
            return

        def job(progress: Any, cancel: Any) -> Any:
            if kind == "coco":
                return export_video_coco(project, path, [video_id], fmt="rle")
            return export_ytvis(project, path, [video_id])

        def done(report: Any) -> None:
            self.win.status.showMessage(f"Wrote {report.annotations} annotations to {report.path}", 8000)

        def failed(err: JobError) -> None:
            self.win.show_error(f"Export failed: {err.message}")

        # One kind per format: a COCO and a YouTube-VIS export may run one after the other.
        self.win.runner.submit(f"video_export_{kind}", job, lane="io", label="Exporting the clip", on_done=done,
                               on_failed=failed)
