"""Starting the desktop window: ``launch_gui`` (called by the CLI when no sub-command is given)."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import cast

log = logging.getLogger(__name__)

#: Set (to anything) to print ``first_paint <unix time>`` when the window first paints, then quit
#: (``benchmarks/bench_startup.py`` measures start-up with it).
FIRST_PAINT_ENV = "CAR_DESKTOP_EXIT_AFTER_FIRST_PAINT"


def _exit_after_first_paint(window, app) -> None:
    from PySide6.QtCore import QEvent, QObject

    class FirstPaint(QObject):
        def eventFilter(self, obj, event) -> bool:
            if event.type() == QEvent.Type.Paint and not getattr(self, "seen", False):
                self.seen = True
                print(f"first_paint {time.time():.6f}", flush=True)
                os._exit(0)   # not app.quit(): the model load may be importing torch on a worker
            return False

    window._first_paint = FirstPaint(window)
    window.installEventFilter(window._first_paint)


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
    if os.environ.get(FIRST_PAINT_ENV):
        _exit_after_first_paint(window, app)
    window.show()
    for arg in (a for a in argv if not a.startswith("-")):
        window.open_path(arg)
        break
    return int(app.exec())
