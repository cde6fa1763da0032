"""The review queue and the window: jumping to a doubtful mask, accepting images, keeping the queue fresh.

A click in the queue opens the mask's image (or, if it is the open one, just selects the mask); the
queue refreshes, coalesced, whenever masks or image statuses change. Per-mask verdicts come from the
queue's row menu and the canvas's mask menu: Accept records it in the mask's provenance
(``annotations.review.accept_mask``), Reject deletes the mask through the annotator, on its image, so
Ctrl+Z brings it back.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from ..annotations.models import Rect
from ..annotations.review import accept_mask
from ..errors import CaRDesktopError

if TYPE_CHECKING:
    from .main_window import MainWindow

log = logging.getLogger(__name__)


class ReviewRouting(QObject):
    """Connects the review panel to the window's image, layers and file list."""

    def __init__(self, win: MainWindow) -> None:
        super().__init__(win)
        self.win = win
        self.panel = win.review_panel
        self._pending: tuple[int, int, str] | None = None   # (image id, annotation id, "select"|"reject")
        self.panel.maskActivated.connect(self.open_annotation)
        self.panel.verdictRequested.connect(self.verdict)
        self.panel.acceptRequested.connect(self.accept_image)
        win.annotator.imageStatusChanged.connect(lambda *_: self.panel.schedule_refresh())
        win.carApplied.connect(lambda *_: self.panel.schedule_refresh())
        win.imageShown.connect(self._image_shown)

    def _image_shown(self, image_id: int) -> None:
        pending, self._pending = self._pending, None
        if (pending is not None and pending[0] == image_id and self.select_annotation(pending[1])
                and pending[2] == "reject"):
            self.reject_mask(image_id, pending[1])
        self.panel.schedule_refresh(800)

    def open_annotation(self, image_id: int, annotation_id: int) -> None:
        """Show the image with that mask selected (from the review queue)."""
        win = self.win
        if win.project is None:
            return
        if image_id == win.image_id and win.requested_image == image_id:
            self._pending = None
            self.select_annotation(annotation_id)
            return
        self._pending = (image_id, annotation_id, "select")
        if win.requested_image != image_id:
            win.show_image(image_id)

    def select_annotation(self, annotation_id: int) -> bool:
        win = self.win
        layer_id = win.annotator.layer_for_annotation(annotation_id)
        if layer_id is None:
            win.status.showMessage("That mask is no longer in the project.", 5000)
            self.panel.schedule_refresh()
            return False
        win.stack.select(layer_id)
        layer = win.stack.get(layer_id)
        box = Rect.of_mask(layer.mask) if layer is not None else None
        if box is not None:
            win.canvas.centerOn((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)
        return True

    # ----- per-mask verdicts
    def verdict(self, image_id: int, annotation_id: int, accepted: bool) -> None:
        if accepted:
            self.accept_mask(annotation_id)
        else:
            self.reject_mask(image_id, annotation_id)

    def accept_mask(self, annotation_id: int) -> bool:
        """Record that a person accepted this mask (it stays as it is)."""
        win = self.win
        if win.project is None:
            return False
        try:
            accept_mask(win.project, annotation_id)
            win.annotator.set_provenance(annotation_id, win.project.get_annotation(annotation_id).provenance)
        except CaRDesktopError as exc:
            win.show_error(str(exc))
            return False
        win.status.showMessage("Mask accepted", 3000)
        self.panel.schedule_refresh()
        return True

    def reject_mask(self, image_id: int, annotation_id: int) -> None:
        """Delete the mask, undoably: on the open image at once, else once its image is shown."""
        win = self.win
        if win.project is None:
            return
        if image_id != win.image_id or win.requested_image != image_id:
            self._pending = (image_id, annotation_id, "reject")
            if win.requested_image != image_id:
                win.show_image(image_id)
            return
        layer_id = win.annotator.layer_for_annotation(annotation_id)
        if layer_id is None:
            win.status.showMessage("That mask is no longer in the project.", 5000)
        else:
            win.annotator.delete_layer(layer_id)
        self.panel.schedule_refresh()

    def _selected_annotation(self) -> int | None:
        layer = self.win.annotator.selected_layer()
        ann = None if layer is None else self.win.annotator.annotation_id(layer.id)
        if ann is None:
            self.win.status.showMessage("Select a saved mask first.", 4000)
        return ann

    def accept_selected(self) -> None:
        ann = self._selected_annotation()
        if ann is not None:
            self.accept_mask(ann)

    def reject_selected(self) -> None:
        ann = self._selected_annotation()
        if ann is not None and self.win.image_id is not None:
            self.reject_mask(self.win.image_id, ann)

    def accept_image(self, image_id: int) -> None:
        """Mark an image reviewed (the review queue's Accept)."""
        win = self.win
        if win.project is None:
            return
        if image_id == win.image_id:
            win.annotator.mark_reviewed()
            return
        try:
            win.project.set_image_status(image_id, "reviewed")
        except CaRDesktopError as exc:
            win.show_error(str(exc))
            return
        win.file_list.set_status(image_id, "reviewed")
        self.panel.schedule_refresh()

    def accept_and_next(self) -> None:
        if self.panel.current() is not None:
            self.panel.accept_current()
        else:
            self.win.annotator.mark_reviewed()
