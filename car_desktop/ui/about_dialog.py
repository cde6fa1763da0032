"""Help > About: the version (from ``car_desktop.__version__``, its only home), the libraries and the device."""

from __future__ import annotations

import platform
import sys

import PySide6
from PySide6.QtCore import Qt, qVersion
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QLayout, QVBoxLayout, QWidget

from .. import __version__


def version_lines(device_text: str = "") -> list[str]:
    """Python, Qt and, when already imported, torch and open_clip (never imported here just to show them)."""
    lines = [f"Python {platform.python_version()}", f"Qt {qVersion()} · PySide6 {PySide6.__version__}"]
    for name in ("torch", "open_clip", "segment_anything"):
        module = sys.modules.get(name)
        if module is not None:
            lines.append(f"{name} {getattr(module, '__version__', '')}".strip())
    if device_text:
        lines.append(device_text)
    return lines


class AboutDialog(QDialog):
    def __init__(self, device_text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About CaR Desktop")
        title = QLabel(f"<h2>CaR Desktop {__version__}</h2>")
        title.setTextFormat(Qt.TextFormat.RichText)
        self.version_label = title
        text = QLabel("Segment any concepts you type, in any image, without training: CLIP as RNN (CaR) "
                      "proposes and prunes the masks, SAM refines them, and you correct them by hand before "
                      "exporting COCO JSON.")
        text.setWordWrap(True)
        text.setFixedWidth(440)     # a wrapped label in a dialog needs a width to know its height
        details = QLabel("\n".join(version_lines(device_text)))
        details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(text)
        layout.addWidget(details)
        layout.addWidget(buttons)
        layout.setSizeConstraint(QLayout.SizeConstraint.SetFixedSize)
