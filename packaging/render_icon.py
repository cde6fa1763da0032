"""Render resources/icons/car-desktop.svg to PNG (256 px by default) with Qt's SVG renderer.

Run after editing the SVG: ``python packaging/render_icon.py [SIZE ...]``. Offscreen, no display needed.
The 256 px PNG is committed; other sizes are written as car-desktop-<size>.png when asked for.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parents[1] / "resources" / "icons"


def render(size: int, svg: Path = ICONS / "car-desktop.svg", out: Path | None = None) -> Path:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # noqa: F841 - needed for painting
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    out = out or (ICONS / ("car-desktop.png" if size == 256 else f"car-desktop-{size}.png"))
    if not image.save(str(out)):
        raise SystemExit(f"could not write {out}")
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["256"]:
        print(render(int(arg)))
