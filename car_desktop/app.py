"""Starting the desktop window: ``launch_gui`` (called by the CLI when no sub-command is given)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import cast

log = logging.getLogger(__name__)


def launch_gui(test_models: bool = False, argv: list[str] | None = None) -> int:
    """Open the window; an optional image, folder or project path in ``argv`` is opened at start."""
    from PySide6.QtWidgets import QApplication

    from .ui.main_window import MainWindow
    from .ui.settings import Settings
    from .ui.theme import apply_theme

    argv = list(argv or [])
    qt_args = [sys.argv[0], *[a for a in argv if a.startswith("-")]]
    app = cast(QApplication, QApplication.instance()) or QApplication(qt_args)
    app.setApplicationName("CaR Desktop")
    app.setOrganizationName("car-desktop")
    from PySide6.QtGui import QIcon

    from .paths import resource_path

    app.setWindowIcon(QIcon(str(resource_path("icons", "car-desktop.svg"))))
    app.setDesktopFileName("io.github.car_desktop")  # matches the packaged .desktop file
    settings = Settings()
    apply_theme(app, settings.theme)
    window = MainWindow(test_models=test_models, settings=settings)
    window.show()
    for arg in (a for a in argv if not a.startswith("-")):
        path = Path(arg)
        if path.is_dir():
            window.open_folder(path)
        elif path.suffix == ".cardb":
            window.open_project(path)
        elif path.is_file():
            window.open_image(path)
        else:
            log.warning("not found: %s", path)
        break
    return int(app.exec())
