"""The review queue and the window: jumping to a doubtful mask, accepting images, keeping the queue fresh.

A click in the queue opens the mask's image (or, if it is the open one, just selects the mask); the
queue refreshes, coalesced, whenever masks or image statuses change.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from ..annotations.models import Rect
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
        self._pending: tuple[int, int] | None = None     # (image id, annotation id) to select once shown
        self.panel.maskActivated.connect(self.open_annotation)
        self.panel.acceptRequested.connect(self.accept_image)
        win.annotator.imageStatusChanged.connect(lambda *_: self.panel.schedule_refresh())
        win.carApplied.connect(lambda *_: self.panel.schedule_refresh())
        win.imageShown.connect(self._image_shown)

    def _image_shown(self, image_id: int) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == image_id:
            self.select_annotation(pending[1])
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
        self._pending = (image_id, annotation_id)
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
