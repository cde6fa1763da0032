"""The concept panel: one row per mask layer with colour, visibility, score and status.

Status reads "kept (score 0.83)", "removed at step 2 (score 0.12)" or "kept without competition".
The context menu force-keeps a removed concept, renames, recolours, shows the mask alone, or deletes; the
panel only emits requests, the annotation controller carries them out (so they are undoable and saved).
Names are shortened (``long_text``; the full name is in the tooltip) so a long concept never widens it.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QColorDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QMenu,
    QSlider,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .imaging import qcolor
from .layers import LayerStack, MaskLayer
from .long_text import elide, fit_to_screen, tooltip

log = logging.getLogger(__name__)

COL_NAME, COL_SCORE, COL_STATUS = 0, 1, 2


def colour_icon(rgb: tuple[int, int, int], size: int = 14) -> QIcon:
    pix = QPixmap(size, size)
    pix.fill(qcolor(rgb))
    return QIcon(pix)


class ConceptPanel(QWidget):
    """The list of layers of the current image; the opacity slider of the overlay sits on top."""

    forceKeepRequested = Signal(int)
    renameRequested = Signal(int, str)
    recolourRequested = Signal(int, object)      # layer id, (r, g, b)
    deleteRequested = Signal(int)
    visibilityRequested = Signal(int, bool)
    soloRequested = Signal(int)
    opacityChanged = Signal(float)

    def __init__(self, stack: LayerStack, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.stack = stack
        self.tree = QTreeWidget()
        self.tree.setColumnCount(3)
        self.tree.setHeaderLabels(["Concept", "Score", "Status"])
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._context_menu)
        self.tree.itemChanged.connect(self._item_changed)
        self.tree.currentItemChanged.connect(self._current_changed)
        self.tree.itemDoubleClicked.connect(lambda item, col: self._rename(item.data(0, Qt.ItemDataRole.UserRole)))
        header = self.tree.header()
        # The name column is sized by the panel, never by a (possibly 2,000-character) name.
        # (names are elided to MAX_CHARS and again to the column's width).
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(COL_SCORE, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_STATUS, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(40)
        header.resizeSection(COL_NAME, 140)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setMinimumWidth(200)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.setToolTip("Opacity of the mask layers")
        self.opacity.valueChanged.connect(lambda v: self.opacityChanged.emit(v / 100.0))
        top = QHBoxLayout()
        top.addWidget(QLabel("Opacity"))
        top.addWidget(self.opacity, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(self.tree, 1)
        self._items: dict[int, QTreeWidgetItem] = {}
        stack.reset.connect(self.rebuild)
        stack.layerChanged.connect(self._layer_changed)
        stack.selectionChanged.connect(self._selection_changed)
        self.rebuild()

    # ----- model -> view
    def rebuild(self) -> None:
        with QSignalBlocker(self.tree):
            self.tree.clear()
            self._items = {}
            for layer in self.stack.layers():
                self._items[layer.id] = self._make_item(layer)
        self._selection_changed(self.stack.selected_id)

    def _make_item(self, layer: MaskLayer) -> QTreeWidgetItem:
        item = QTreeWidgetItem(self.tree)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setData(0, Qt.ItemDataRole.UserRole, layer.id)
        self._fill(item, layer)
        return item

    def _fill(self, item: QTreeWidgetItem, layer: MaskLayer) -> None:
        item.setText(COL_NAME, elide(layer.name))
        item.setIcon(COL_NAME, colour_icon(layer.color))
        item.setCheckState(COL_NAME, Qt.CheckState.Checked if layer.visible else Qt.CheckState.Unchecked)
        item.setText(COL_SCORE, "" if layer.score is None else f"{layer.score:.2f}")
        status = layer.status_text or layer.status
        if layer.edited and not layer.removed:
            status += " · edited"
        item.setText(COL_STATUS, status)
        item.setToolTip(COL_NAME, f"{tooltip(layer.name)}\n{status}, {layer.area} px")
        item.setToolTip(COL_STATUS, status)
        grey = QBrush(QColor(140, 140, 140)) if layer.removed else QBrush()
        for col in range(3):
            item.setForeground(col, grey)

    def _layer_changed(self, layer_id: int, rect) -> None:
        if rect is not None:
            return   # pixels only: the row does not change
        layer = self.stack.get(layer_id)
        with QSignalBlocker(self.tree):
            item = self._items.get(layer_id)
            if layer is None:
                if item is not None:
                    self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))
                    del self._items[layer_id]
                return
            if item is None:
                self._items[layer_id] = self._make_item(layer)
            else:
                self._fill(item, layer)

    def _selection_changed(self, layer_id: int) -> None:
        with QSignalBlocker(self.tree):
            item = self._items.get(layer_id)
            self.tree.setCurrentItem(item) if item is not None else self.tree.clearSelection()

    # ----- view -> requests
    def _id_of(self, item: QTreeWidgetItem | None) -> int:
        return -1 if item is None else int(item.data(0, Qt.ItemDataRole.UserRole))

    def _current_changed(self, current: QTreeWidgetItem | None, _previous) -> None:
        self.stack.select(self._id_of(current))

    def _item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        if column == COL_NAME:
            layer = self.stack.get(self._id_of(item))
            visible = item.checkState(COL_NAME) == Qt.CheckState.Checked
            if layer is not None and layer.visible != visible:
                self.visibilityRequested.emit(layer.id, visible)

    def _context_menu(self, pos) -> None:
        layer_id = self._id_of(self.tree.itemAt(pos))
        layer = self.stack.get(layer_id)
        if layer is None:
            return
        menu = QMenu(self)
        if layer.removed:
            menu.addAction("Force keep", lambda: self.forceKeepRequested.emit(layer_id))
        menu.addAction("Rename…", lambda: self._rename(layer_id))
        menu.addAction("Colour…", lambda: self._recolour(layer_id))
        menu.addAction("Hide" if layer.visible else "Show",
                       lambda: self.visibilityRequested.emit(layer_id, not layer.visible))
        menu.addAction("Show all masks" if self.stack.solo_id == layer_id else "Show only this mask (O)",
                       lambda: self.soloRequested.emit(layer_id))
        menu.addSeparator()
        menu.addAction("Delete", lambda: self.deleteRequested.emit(layer_id))
        menu.exec(self.tree.viewport().mapToGlobal(pos))

    def _rename(self, layer_id: int) -> None:
        layer = self.stack.get(layer_id)
        if layer is None:
            return
        dialog = QInputDialog(self)
        dialog.setWindowTitle("Rename")
        dialog.setLabelText(f"New name of the concept {elide(layer.name)}:")
        dialog.setTextValue(layer.name)
        fit_to_screen(dialog)
        ok = dialog.exec() == QInputDialog.DialogCode.Accepted
        name = dialog.textValue()
        if ok and name.strip() and name.strip() != layer.name:
            self.renameRequested.emit(layer_id, name.strip())

    def _recolour(self, layer_id: int) -> None:
        layer = self.stack.get(layer_id)
        if layer is None:
            return
        colour = QColorDialog.getColor(qcolor(layer.color), self, f"Colour of {layer.name}")
        if colour.isValid():
            self.recolourRequested.emit(layer_id, (colour.red(), colour.green(), colour.blue()))
