"""The review queue panel: the project's masks, the most doubtful first, to check one after another.

"Kept without competition" comes first (its score of 1 is not a confidence), then the lowest CaR
scores, with SAM's verdict shown; the order and the filters are ``annotations.review``'s. Choosing a
row asks the window to open that image with that mask selected, where the normal tools fix it;
"Accept image" marks the image reviewed and moves on to the next doubtful mask of another image; a
row's context menu accepts or rejects one mask (``verdictRequested``), and the counter on top says how
many of the project's images are reviewed.
The queue is read on the "query" lane through its own read-only connection, one page at a time, so a
project of any size never stalls the window (200 000 masks: about 0.3 s a page on a laptop core), and
only while the panel is visible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..annotations.provenance import KEPT_ALONE
from ..annotations.review import (
    SORTS,
    ReviewFilter,
    ReviewItem,
    ReviewPage,
    ReviewProgress,
    queue_concepts,
    review_page,
    review_progress,
)
from ..annotations.store import Project
from .concept_panel import colour_icon
from .lazy_refresh import LazyRefreshMixin
from .long_text import elide, tooltip
from .workers import JobError, JobInfo, JobRunner

log = logging.getLogger(__name__)

KIND = "review_query"
PAGE = 300


@dataclass(frozen=True)
class _Queue:
    """One answer of the query lane: a page of the queue of ``project`` and what the filters show."""

    project: Project
    page: ReviewPage
    concepts: list[tuple[int, str, int]]
    colors: dict[int, tuple[int, int, int]]
    progress: ReviewProgress


#: Characters of a concept name shown in the queue's narrow column and filter (the tooltip has all).
NAME_CHARS = 40
#: Default widths of the columns a user may resize (set again for each project, never carried over).
CONCEPT_WIDTH, IMAGE_WIDTH = 130, 110
COL_CONCEPT, COL_SCORE, COL_SAM, COL_IMAGE, COL_STATUS = range(5)

#: The "Images" filter: label -> image statuses.
IMAGE_FILTERS: dict[str, tuple[str, ...]] = {
    "To review": ("auto",),
    "Reviewed": ("reviewed",),
    "All images": (),
}
#: The "Masks" filter: label -> ReviewFilter fields.
MASK_FILTERS: dict[str, dict[str, Any]] = {
    "All masks": {},
    "Not accepted yet": {"accepted": False},
    "Not edited": {"edited": False},
    "Edited": {"edited": True},
    "Kept without competition": {"car_statuses": (KEPT_ALONE,)},
    "SAM rejected": {"sam": ("rejected",)},
    "SAM accepted": {"sam": ("accepted",)},
}
ALONE_TIP = ("Kept without competition: the only concept left in the image scores 1 by construction, "
             "which says nothing about the mask; these come first.")


class ReviewPanel(LazyRefreshMixin, QWidget):
    """The queue; emits ``maskActivated(image_id, annotation_id)`` and ``acceptRequested(image_id)``."""

    maskActivated = Signal(int, int)
    acceptRequested = Signal(int)
    verdictRequested = Signal(int, int, bool)   # image id, annotation id, accepted (False: reject = delete)
    refreshed = Signal(int)            # rows shown (tests wait on it)

    def __init__(self, runner: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.project: Project | None = None
        self.items: list[ReviewItem] = []
        self.total = 0
        self._limit = PAGE
        self._colors: dict[int, tuple[int, int, int]] = {}
        self._keep: int | None = None          # annotation id to select after the next refresh
        self._advance_from: int | None = None  # image just accepted: select the next mask of another image

        self.concept_combo = QComboBox()
        self.concept_combo.setToolTip("Only the masks of one concept")
        self.concept_combo.addItem("All concepts", None)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("Images still to review (auto-labelled), reviewed ones, or all")
        for label in IMAGE_FILTERS:
            self.image_combo.addItem(label, label)
        self.mask_combo = QComboBox()
        self.mask_combo.setToolTip("Only some masks: edited or not by a person, kept alone, SAM's verdict")
        for label in MASK_FILTERS:
            self.mask_combo.addItem(label, label)
        self.sort_combo = QComboBox()
        self.sort_combo.setToolTip("Order of the queue (each order puts the most doubtful first inside it)")
        for key, label in SORTS.items():
            self.sort_combo.addItem(label.capitalize(), key)
        for combo in (self.concept_combo, self.image_combo, self.mask_combo, self.sort_combo):
            combo.currentIndexChanged.connect(lambda _i: self.refresh(reset_page=True))
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)

        self.tree = QTreeWidget()
        self.tree.setColumnCount(5)
        self.tree.setHeaderLabels(["Concept", "Score", "SAM", "Image", "Status"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.headerItem().setToolTip(COL_SCORE, "CaR score; 'alone': " + ALONE_TIP)
        self.tree.headerItem().setToolTip(COL_SAM, "Whether SAM's refinement was accepted (its IoU with CaR's mask)")
        header = self.tree.header()
        header.setStretchLastSection(True)
        for col in (COL_SCORE, COL_SAM):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        for col in (COL_CONCEPT, COL_IMAGE):   # long names must not size the column
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
        header.setMinimumSectionSize(36)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(lambda pos: self._row_menu(pos))
        self._reset_columns()
        self.tree.currentItemChanged.connect(self._current_changed)
        self.tree.itemClicked.connect(lambda item, _col: self._activate(item))

        self.progress_label = QLabel("")
        self.progress_label.setToolTip("Images a person marked reviewed, of all the project's images")
        self.summary = QLabel("")
        self.more_button = QPushButton("More")
        self.more_button.setToolTip(f"Show {PAGE} more masks")
        self.more_button.clicked.connect(self.show_more)
        self.prev_button = QPushButton("◀")
        self.prev_button.setToolTip("Previous mask of the queue")
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button = QPushButton("▶")
        self.next_button.setToolTip("Next mask of the queue")
        self.next_button.clicked.connect(lambda: self.step(+1))
        self.accept_button = QPushButton("Accept image")
        self.accept_button.setToolTip("Mark this mask's image reviewed and go to the next doubtful mask "
                                      "(Ctrl+Shift+Enter)")
        self.accept_button.clicked.connect(self.accept_current)
        for b in (self.prev_button, self.next_button):
            b.setFixedWidth(self.fontMetrics().horizontalAdvance("◀") + 24)

        filters1 = QHBoxLayout()
        filters1.addWidget(self.concept_combo, 1)
        filters1.addWidget(self.image_combo, 1)
        filters2 = QHBoxLayout()
        filters2.addWidget(self.mask_combo, 1)
        filters2.addWidget(self.sort_combo, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.more_button)
        actions = QHBoxLayout()
        actions.addWidget(self.prev_button)
        actions.addWidget(self.next_button)
        actions.addStretch(1)
        actions.addWidget(self.accept_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(3)
        layout.addWidget(self.progress_label)
        layout.addLayout(filters1)
        layout.addLayout(filters2)
        layout.addWidget(self.tree, 1)
        layout.addLayout(bottom)
        layout.addLayout(actions)

        self.setMinimumWidth(220)
        self.init_lazy_refresh()
        self._update_buttons()

    # ----- state
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.items, self.total, self._limit = [], 0, PAGE
        self._colors = {}
        with QSignalBlocker(self.concept_combo):
            self.concept_combo.clear()
            self.concept_combo.addItem("All concepts", None)
        self.tree.clear()
        self.progress_label.setText("")
        self._reset_columns()
        self.refresh()

    def _reset_columns(self) -> None:
        header = self.tree.header()
        header.resizeSection(COL_CONCEPT, CONCEPT_WIDTH)
        header.resizeSection(COL_IMAGE, IMAGE_WIDTH)

    def review_filter(self) -> ReviewFilter:
        cid = self.concept_combo.currentData()
        return ReviewFilter(category_ids=() if cid is None else (int(cid),),
                            image_statuses=IMAGE_FILTERS[self.image_combo.currentData()],
                            **MASK_FILTERS[self.mask_combo.currentData()])

    def sort(self) -> str:
        return self.sort_combo.currentData()

    def _current_index(self) -> int:
        """The current row, -1 without one."""
        item = self.tree.currentItem()
        return -1 if item is None else self.tree.indexOfTopLevelItem(item)

    def current(self) -> ReviewItem | None:
        index = self._current_index()
        return self.items[index] if 0 <= index < len(self.items) else None

    def _update_buttons(self) -> None:
        cur, index = self.current(), self._current_index()
        self.accept_button.setEnabled(cur is not None and cur.image_status != "reviewed")
        self.prev_button.setEnabled(cur is not None and index > 0)
        self.next_button.setEnabled(bool(self.items) and (cur is None or index < len(self.items) - 1))

    # ----- querying (io lane)
    def refresh(self, reset_page: bool = False) -> JobInfo | None:
        self._timer.stop()
        if reset_page:
            self._limit = PAGE
        if self.project is None:
            self.tree.clear()
            self.items, self.total = [], 0
            self.summary.setText("No project open")
            self._update_buttons()
            return None
        cur = self.current()
        if self._keep is None and cur is not None:
            self._keep = cur.annotation_id
        project, flt, sort, limit = self.project, self.review_filter(), self.sort(), self._limit

        def query(progress, cancel) -> _Queue:
            page = review_page(project, flt, sort=sort, limit=limit)
            concepts = queue_concepts(project, flt)
            colors = {c.id: c.color for c in project.list_categories()}
            return _Queue(project, page, concepts, colors, review_progress(project))

        return self.runner.submit(KIND, query, lane="query", label="Review queue", on_done=self._show,
                                  on_failed=self._failed)

    def show_more(self) -> None:
        self._limit += PAGE
        self.refresh()

    def _failed(self, err: JobError) -> None:
        self.summary.setText(f"Could not read the queue: {err.message}")

    def _show(self, queue: _Queue) -> None:
        if queue.project is not self.project:
            return
        page, concepts = queue.page, queue.concepts
        self._colors = queue.colors
        self._fill_concepts(concepts)
        self.progress_label.setText(queue.progress.text)
        self.items, self.total = page.items, page.total
        keep, advance_from = self._keep, self._advance_from
        self._keep = self._advance_from = None
        with QSignalBlocker(self.tree):
            self.tree.clear()
            self.tree.addTopLevelItems([self._make_item(it) for it in self.items])
            target = None
            if keep is not None:
                target = next((i for i, it in enumerate(self.items) if it.annotation_id == keep), None)
            row = self.tree.topLevelItem(target) if target is not None else None
            if row is not None:
                self.tree.setCurrentItem(row)
        shown, total = len(self.items), self.total
        self.summary.setText(f"{total} mask{'s' if total != 1 else ''} in the queue"
                             + (f", {shown} shown" if shown < total else ""))
        self.more_button.setVisible(shown < total)
        self._update_buttons()
        if advance_from is not None:
            self._advance(advance_from)
        self.refreshed.emit(shown)

    def _fill_concepts(self, concepts: list[tuple[int, str, int]]) -> None:
        current = self.concept_combo.currentData()
        with QSignalBlocker(self.concept_combo):
            self.concept_combo.clear()
            self.concept_combo.addItem("All concepts", None)
            for cid, name, n in concepts:
                self.concept_combo.addItem(colour_icon(self._colors.get(cid, (128, 128, 128))),
                                           f"{elide(name, NAME_CHARS)} ({n})", cid)
                self.concept_combo.setItemData(self.concept_combo.count() - 1, tooltip(name),
                                               Qt.ItemDataRole.ToolTipRole)
            index = self.concept_combo.findData(current)
            if index < 0 and current is not None:   # its masks all left the queue: keep the filter visible
                self.concept_combo.addItem(f"(concept {current}: 0)", current)
                index = self.concept_combo.count() - 1
            self.concept_combo.setCurrentIndex(max(0, index))

    def _make_item(self, it: ReviewItem) -> QTreeWidgetItem:
        item = QTreeWidgetItem()
        item.setText(COL_CONCEPT, elide(it.category_name, NAME_CHARS))
        item.setIcon(COL_CONCEPT, colour_icon(self._colors.get(it.category_id, (128, 128, 128))))
        item.setText(COL_SCORE, it.score_text)
        item.setTextAlignment(COL_SCORE, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        item.setText(COL_SAM, it.sam_text)
        item.setText(COL_IMAGE, it.rel_path)
        status = [it.status_short]
        if it.accepted:
            status.append("accepted")
        if it.edited:
            status.append("edited")
        if it.image_status == "reviewed":
            status.append("image reviewed")
        item.setText(COL_STATUS, " · ".join(status))
        tip = f"{tooltip(it.category_name)}\nin {it.rel_path}: {it.car_text}, {it.area} px"
        if it.kept_alone:
            tip += "\n" + ALONE_TIP
        item.setToolTip(COL_CONCEPT, tip)
        item.setToolTip(COL_SCORE, ALONE_TIP if it.kept_alone else tip)
        item.setToolTip(COL_IMAGE, it.rel_path)
        if it.kept_alone:
            item.setForeground(COL_SCORE, QBrush(QColor(200, 120, 20)))
        if it.sam_accepted is False:
            item.setForeground(COL_SAM, QBrush(QColor(220, 60, 60)))
        if it.image_status == "reviewed":
            for col in range(5):
                item.setForeground(col, QBrush(QColor(140, 140, 140)))
        if it.edited:
            font = QFont(item.font(COL_CONCEPT))
            font.setItalic(True)
            item.setFont(COL_CONCEPT, font)
        return item

    # ----- choosing and accepting
    def _current_changed(self, current: QTreeWidgetItem | None, _previous) -> None:
        self._update_buttons()
        if current is not None:
            self._activate(current)

    def _activate(self, item: QTreeWidgetItem) -> None:
        index = self.tree.indexOfTopLevelItem(item)
        if 0 <= index < len(self.items):
            it = self.items[index]
            self.maskActivated.emit(it.image_id, it.annotation_id)

    def _row_menu(self, pos) -> QMenu | None:
        """Pop up the menu that accepts / rejects the mask of the row under ``pos`` (returned, for tests)."""
        item = self.tree.itemAt(pos)
        index = -1 if item is None else self.tree.indexOfTopLevelItem(item)
        if not 0 <= index < len(self.items):
            return None
        it = self.items[index]
        menu = QMenu(self)
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)   # one per right click: gone once dismissed
        menu.addAction("Accept mask", lambda: self.verdictRequested.emit(it.image_id, it.annotation_id, True))
        menu.addAction("Reject mask (delete it; Ctrl+Z brings it back)",
                       lambda: self.verdictRequested.emit(it.image_id, it.annotation_id, False))
        menu.addSeparator()
        menu.addAction("Show", lambda: self.maskActivated.emit(it.image_id, it.annotation_id))
        menu.addAction("Accept image", lambda: self.acceptRequested.emit(it.image_id))
        menu.popup(self.tree.viewport().mapToGlobal(pos))
        return menu

    def select_row(self, index: int) -> None:
        row = self.tree.topLevelItem(index) if 0 <= index < self.tree.topLevelItemCount() else None
        if row is not None:
            self.tree.setCurrentItem(row)   # emits maskActivated

    def step(self, delta: int) -> None:
        item = self.tree.currentItem()
        self.select_row(max(0, self._current_index() + delta) if item is not None else 0)

    def accept_current(self) -> None:
        """Mark the current mask's image reviewed; after the refresh, go to the next mask of another image."""
        it = self.current()
        if it is None:
            return
        index = self._current_index()
        after = next((x.annotation_id for x in self.items[index + 1:] if x.image_id != it.image_id), None)
        self._keep = after
        self._advance_from = it.image_id
        self.acceptRequested.emit(it.image_id)
        self.refresh()

    def _advance(self, accepted_image: int) -> None:
        cur, item = self.current(), self.tree.currentItem()
        if cur is not None and item is not None and cur.image_id != accepted_image:
            self._activate(item)
            return
        index = next((i for i, it in enumerate(self.items) if it.image_id != accepted_image
                      and it.image_status != "reviewed"), None)
        if index is not None:
            self.select_row(index)
