"""The window's menus, toolbar and keyboard shortcuts: every ``QAction`` is made here, and each is wired
to the window or to one of its controllers (annotator, transfers, auto-label, review queue). The F1
list is generated from these actions (``help_dialog``), so it names every shortcut. The canvas's mask
menu (right click on a mask) reuses the same actions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMenu, QToolBar

from .engine_client import DEVICE_CHOICES, PRECISION_CHOICES
from .quality_panel import install_quality_panel
from .settings import THEMES

#: Menu text of each precision choice: what "auto" decides is the engine's (device.resolve_precision).
PRECISION_TEXT = {"auto": "auto (bf16 where this CPU runs it faster)", "fp32": "fp32 (exact)",
                  "bf16": "bf16 (CPU)", "fp16": "fp16 (CUDA only)"}

if TYPE_CHECKING:
    from .main_window import MainWindow

log = logging.getLogger(__name__)

#: Tool keys, labels and shortcuts, in toolbar order ("select" is the plain canvas).
TOOLS = (("select", "Select", "V"), ("brush", "Brush", "B"), ("eraser", "Eraser", "E"),
         ("polygon_add", "Polygon +", "P"), ("polygon_subtract", "Polygon −", "Shift+P"), ("sam", "SAM clicks", "S"))


class WindowActions:
    """Builds the menu bar and the tool bar of ``win`` and keeps the actions others enable or check."""

    def __init__(self, win: MainWindow) -> None:
        self.win = win
        self.tools: dict[str, QAction] = {}
        self.tool_group = QActionGroup(win)
        self._build()

    def _action(self, menu: QMenu, text: str, slot: Callable[..., object],
                shortcut: str | tuple[str, ...] | None = None, tip: str = "", checkable: bool = False) -> QAction:
        action = QAction(text, self.win)
        if shortcut:
            keys = (shortcut,) if isinstance(shortcut, str) else shortcut
            action.setShortcuts([QKeySequence(k) for k in keys])
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if tip:
            action.setStatusTip(tip)
        action.setCheckable(checkable)
        action.triggered.connect(slot)
        menu.addAction(action)
        self.win.addAction(action)
        return action

    def _build(self) -> None:
        win = self.win
        mb = win.menuBar()
        f = mb.addMenu("&File")
        self._action(f, "Open image…", win.ask_open_image, "Ctrl+O")
        self._action(f, "Open folder…", win.ask_open_folder, "Ctrl+Shift+O")
        self._action(f, "Open project…", win.ask_open_project, "Ctrl+P")
        self.recent_menu = f.addMenu("Recent projects")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        f.addSeparator()
        transfers = win.transfers
        self._action(f, "Export COCO JSON…", lambda: transfers.ask_export_coco(win.project, win.image_id), "Ctrl+E")
        self._action(f, "Export label PNGs…", lambda: transfers.ask_export_label_pngs(win.project),
                     tip="One palette PNG per image: pixel value = concept id, 0 = background")
        self._action(f, "Import COCO…", lambda: transfers.ask_import_coco(win.project),
                     tip="Add the masks of a COCO JSON to this project")
        f.addSeparator()
        self._action(f, "Auto-label folder…", win.autolabel_controller.ask, "Ctrl+Shift+L",
                     tip="Run CaR with one concept list over every image of a folder, in the background")
        f.addSeparator()
        self._action(f, "Quit", win.close, "Ctrl+Q")

        a = win.annotator
        e = mb.addMenu("&Edit")
        self.undo = self._action(e, "Undo", lambda: win.video.undo(), "Ctrl+Z")
        self.redo = self._action(e, "Redo", a.redo, ("Ctrl+Shift+Z", "Ctrl+Y"))
        e.addSeparator()
        self.edit_polygon = self._action(e, "Edit mask as polygon", win.edit_polygon, "Ctrl+J",
                                         tip="Drag vertices, double-click an edge to add one, right-click to "
                                             "delete one; Enter applies, Esc cancels")
        self.delete_mask = self._action(e, "Delete mask", win.delete_selected, "Delete")
        self._action(e, "Fill holes", lambda: a.apply_op("fill_holes"), "H")
        self._action(e, "Remove specks", lambda: a.apply_op("remove_specks"))
        self._action(e, "Split into instances", a.split_selected)
        self._action(e, "Merge same concept", a.merge_into_selected)
        self.relabel = self._action(e, "Relabel mask…", win.ask_relabel, "L")
        e.addSeparator()
        self.accept_mask = self._action(e, "Accept mask", win.review.accept_selected,
                                        tip="Record that the selected mask is right")
        self.reject_mask = self._action(e, "Reject mask", win.review.reject_selected,
                                        tip="Delete the selected mask (Ctrl+Z brings it back)")
        self._action(e, "Mark image reviewed", a.mark_reviewed, "Ctrl+Return")
        self._action(e, "Accept image and go to the next doubtful mask", win.review.accept_and_next,
                     "Ctrl+Shift+Return")
        self._action(e, "Cancel: the tool's clicks, else the selection, else the running job", win.cancel_job,
                     "Esc")

        v = mb.addMenu("&View")
        self._action(v, "Fit", win.canvas.fit, "F")
        self._action(v, "100 %", win.canvas.actual_size, "1")
        self._action(v, "Previous image", lambda: win.step_image(-1), "A")
        self._action(v, "Next image", lambda: win.step_image(+1), "D")
        # The arrows only while the canvas has the focus: lists and text fields keep theirs.
        for text, step, key in (("Previous image (canvas)", -1, "Left"), ("Next image (canvas)", +1, "Right")):
            arrow = self._action(v, text, lambda _=False, s=step: win.step_image(s), key)
            arrow.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
            win.canvas.addAction(arrow)
        self.solo = self._action(v, "Show only the selected mask", win.solo_selected, "O",
                                 tip="O again shows the other masks as they were")
        review_toggle = win.review_dock.toggleViewAction()
        review_toggle.setText("Review queue")
        v.addAction(review_toggle)
        messages_toggle = win.messages_dock.toggleViewAction()
        messages_toggle.setText("Messages")
        messages_toggle.setShortcut(QKeySequence("Ctrl+Shift+M"))
        messages_toggle.setStatusTip("Every message of this session, in full")
        v.addAction(messages_toggle)
        win.addAction(messages_toggle)
        win.quality_panel = install_quality_panel(win, v)
        self._choice_menu(v.addMenu("Theme"), [(n, n.capitalize()) for n in THEMES], win.settings.theme,
                          win.set_theme)

        t = mb.addMenu("&Tools")
        toolbar = QToolBar("Tools", win)
        toolbar.setObjectName("Tools")
        self.toolbar = toolbar
        win.addToolBar(toolbar)
        for key, label, shortcut in TOOLS:
            act = self._action(t, label, lambda _=False, k=key: win.set_tool(k), shortcut, checkable=True)
            self.tool_group.addAction(act)
            toolbar.addAction(act)
            self.tools[key] = act
        self.tools["select"].setChecked(True)
        t.addSeparator()
        self._action(t, "New mask by SAM clicks…", win.new_mask_by_sam, "N")
        toolbar.addSeparator()
        for text, slot in (("Fit", win.canvas.fit), ("Undo", lambda: win.video.undo()), ("Redo", a.redo)):
            toolbar.addAction(text, slot)

        m = mb.addMenu("&Models")
        self._action(m, "Models…", win.show_models_dialog)
        self._choice_menu(m.addMenu("Device"), [(d, d) for d in DEVICE_CHOICES], win.settings.device, win.set_device)
        self._choice_menu(m.addMenu("Precision"), [(p, PRECISION_TEXT.get(p, p)) for p in PRECISION_CHOICES],
                          win.settings.precision, win.set_precision)
        h = mb.addMenu("&Help")
        self._action(h, "Keyboard shortcuts", win.show_help, "F1")
        self._action(h, "About CaR Desktop", win.show_about)

    def mask_menu(self, layer_id: int) -> QMenu:
        """The canvas's right-click menu of a mask (already selected by the click)."""
        menu = QMenu(self.win)
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)   # one per right click: gone once dismissed
        for action in (self.edit_polygon, self.solo, self.relabel):
            menu.addAction(action)
        menu.addSeparator()
        for action in (self.accept_mask, self.reject_mask, self.delete_mask):
            menu.addAction(action)
        return menu

    def _choice_menu(self, menu: QMenu, choices: list[tuple[str, str]], current: str,
                     choose: Callable[[str], None]) -> None:
        """Exclusive checkable entries (theme, device, precision)."""
        group = QActionGroup(self.win)
        for value, text in choices:
            act = self._action(menu, text, lambda _=False, v=value: choose(v), checkable=True)
            act.setChecked(value == current)
            group.addAction(act)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.win.settings.prune_recent():
            self.recent_menu.addAction(path).triggered.connect(lambda _=False, p=path: self.win.open_project(p))
        if not self.recent_menu.actions():
            self.recent_menu.addAction("(none)").setEnabled(False)

    def history_changed(self) -> None:
        self.undo.setEnabled(self.win.video.can_undo())
        self.redo.setEnabled(self.win.annotator.can_redo())

    def check_tool(self, key: str) -> None:
        action = self.tools.get(key)
        if action is not None and not action.isChecked():
            action.setChecked(True)
