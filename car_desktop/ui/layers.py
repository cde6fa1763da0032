"""The mask layers shown over the image: one ``MaskLayer`` per annotation, held in a ``LayerStack``.

The stack is the canvas's and the concept panel's view model. It knows nothing of the project store:
the annotation controller fills it and writes edits back. Masks are (H, W) bool arrays at full image
resolution; partial updates name the changed rectangle so the canvas re-composites only that part.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal

from ..annotations.models import Rect
from ..arrays import check_mask

log = logging.getLogger(__name__)


@dataclass
class MaskLayer:
    """One mask over the image, with what the concept panel shows about it."""

    id: int
    name: str
    color: tuple[int, int, int]
    mask: np.ndarray
    visible: bool = True
    score: float | None = None
    status: str = "kept"            # "kept", "removed", "kept_without_competition", "manual", "sam"
    status_text: str = ""
    category_id: int | None = None
    edited: bool = False
    concept: str = ""               # the concept as typed ("car | automobile"); the category's key

    @property
    def removed(self) -> bool:
        return self.status == "removed"

    @property
    def area(self) -> int:
        return int(self.mask.sum())


class LayerStack(QObject):
    """Ordered mask layers of the current image (later layers draw on top) and the selection."""

    reset = Signal()                        # image or whole layer list replaced
    layerChanged = Signal(int, object)      # layer id, Rect or None (whole layer / properties)
    selectionChanged = Signal(int)          # layer id or -1

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._layers: list[MaskLayer] = []
        self._size: tuple[int, int] = (0, 0)
        self._selected: int = -1
        self._next_id = 1
        self._solo: tuple[int, dict[int, bool]] | None = None   # (solo layer, visibility before)

    # ----- reading
    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image the masks belong to."""
        return self._size

    def layers(self) -> list[MaskLayer]:
        return list(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def get(self, layer_id: int) -> MaskLayer | None:
        for layer in self._layers:
            if layer.id == layer_id:
                return layer
        return None

    def find(self, **attrs) -> MaskLayer | None:
        for layer in self._layers:
            if all(getattr(layer, k) == v for k, v in attrs.items()):
                return layer
        return None

    @property
    def selected_id(self) -> int:
        return self._selected

    def selected(self) -> MaskLayer | None:
        return self.get(self._selected)

    def layer_at(self, x: int, y: int) -> MaskLayer | None:
        """The topmost visible layer covering image pixel (x, y)."""
        h, w = self._size
        if not (0 <= x < w and 0 <= y < h):
            return None
        for layer in reversed(self._layers):
            if layer.visible and layer.mask[y, x]:
                return layer
        return None

    # ----- changing
    def set_image_size(self, height: int, width: int) -> None:
        """Start a new image: drop every layer."""
        self._size = (int(height), int(width))
        self._layers = []
        self._selected = -1
        self._solo = None
        self.reset.emit()
        self.selectionChanged.emit(-1)

    def replace_all(self, layers: list[MaskLayer]) -> None:
        for layer in layers:
            self._check_mask(layer.mask)
        self._layers = list(layers)
        self._solo = None
        self._next_id = max([self._next_id] + [layer.id + 1 for layer in layers])
        if self.get(self._selected) is None:
            self._selected = -1
        self.reset.emit()
        self.selectionChanged.emit(self._selected)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def add(self, layer: MaskLayer) -> MaskLayer:
        self._check_mask(layer.mask)
        if self.get(layer.id) is not None:
            raise ValueError(f"layer id {layer.id} already used")
        self._next_id = max(self._next_id, layer.id + 1)
        self._layers.append(layer)
        self.layerChanged.emit(layer.id, None)
        return layer

    def remove(self, layer_id: int) -> MaskLayer | None:
        layer = self.get(layer_id)
        if layer is None:
            return None
        self._layers.remove(layer)
        if self.solo_id == layer_id:
            self.solo(layer_id)   # the mask shown alone is gone: show the others again, as they were
        if self._selected == layer_id:
            self.select(-1)
        self.layerChanged.emit(layer_id, None)
        return layer

    def touched(self, layer_id: int, rect: Rect | None = None) -> None:
        """Announce a change made in place (e.g. a brush stroke drawing straight into the mask)."""
        self.layerChanged.emit(layer_id, rect)

    def update(self, layer_id: int, **props) -> None:
        """Change display properties (name, color, visible, score, status, status_text, ...)."""
        layer = self._require(layer_id)
        for key, value in props.items():
            if not hasattr(layer, key) or key in ("id", "mask"):
                raise AttributeError(key)
            setattr(layer, key, value)
        self.layerChanged.emit(layer_id, None)

    def select(self, layer_id: int) -> None:
        if layer_id != -1 and self.get(layer_id) is None:
            layer_id = -1
        if layer_id != self._selected:
            self._selected = layer_id
            self.selectionChanged.emit(layer_id)

    @property
    def solo_id(self) -> int:
        """The layer shown alone (``solo``), or -1."""
        return -1 if self._solo is None else self._solo[0]

    def solo(self, layer_id: int) -> bool:
        """Show only ``layer_id`` (True), or, when it is already shown alone, give every layer back the
        visibility it had before (False). Display only: nothing is saved."""
        if self._solo is not None:
            was, before = self._solo
            self._solo = None
            for layer in self._layers:
                if layer.visible != before.get(layer.id, True):
                    self.update(layer.id, visible=before.get(layer.id, True))
            if was == layer_id or self.get(layer_id) is None:
                return False
        if self.get(layer_id) is None:
            return False
        before = {layer.id: layer.visible for layer in self._layers}
        for layer in self._layers:
            if layer.visible != (layer.id == layer_id):
                self.update(layer.id, visible=layer.id == layer_id)
        self._solo = (layer_id, before)
        return True

    # ----- helpers
    def _require(self, layer_id: int) -> MaskLayer:
        layer = self.get(layer_id)
        if layer is None:
            raise KeyError(f"no layer {layer_id}")
        return layer

    def _check_mask(self, mask: np.ndarray) -> None:
        check_mask(mask, self._size)
