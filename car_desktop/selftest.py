"""``car-desktop --self-test``: proves an installed or frozen copy of the app works, end to end.

It checks that the bundled resources are where ``paths`` looks for them, opens the main window
offscreen with the tiny random-weight test models, opens a built-in synthetic image through the
window's own folder/project path, runs one CaR segmentation through the same ``EngineClient`` /
``JobRunner`` worker lanes the GUI uses (proposals, classifier, CRF in its helper process, SAM
refinement), and checks that a non-empty mask landed in the window and in the project. Nothing is
downloaded and nothing of the user's is touched: caches, data, config and settings all live in a
temporary folder. Exit code 0 means it passed; otherwise one line on stderr says what broke. Packaging
scripts and CI run it against the built wheel and the PyInstaller app.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np

log = logging.getLogger(__name__)

#: One concept is always "kept without competition", so a mask comes back even with random weights.
SELF_TEST_CONCEPTS = "sky"
DEFAULT_TIMEOUT_S = 300.0
ICON_NAMES = ("car-desktop.svg", "car-desktop.png")


class SelfTestError(Exception):
    """A self-test check failed; the message says which and why."""


class _WarningCollector(logging.Handler):
    """Keeps the engine's warnings, so a silent fallback (e.g. CRF helper not starting) is noticed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


def synthetic_image(height: int = 120, width: int = 160) -> np.ndarray:
    """A small RGB scene: a blue sky gradient over green ground, a red box and a yellow disc."""
    img = np.zeros((height, width, 3), np.uint8)
    horizon = height // 2
    ramp = np.linspace(200, 120, horizon, dtype=np.float32)[:, None]
    img[:horizon, :, 0] = (ramp * 0.45).astype(np.uint8)
    img[:horizon, :, 1] = (ramp * 0.7).astype(np.uint8)
    img[:horizon, :, 2] = ramp.astype(np.uint8)
    img[horizon:] = (50, 140, 60)
    img[horizon - 10:horizon + 25, 20:60] = (200, 30, 30)
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height // 4) ** 2 + (xx - 3 * width // 4) ** 2 <= (height // 8) ** 2
    img[disc] = (250, 220, 40)
    return img


def check_resources() -> dict[str, Path]:
    """The bundled files the app reads at run time, found through ``paths`` exactly as the app does."""
    from . import paths
    from .engine import clip_models
    from .engine.manifest import load_manifest

    found: dict[str, Path] = {}
    manifest = paths.resource_path("models.json")
    if not manifest.is_file():
        raise SelfTestError(f"model manifest missing: {manifest} (resources folder: {paths.resources_dir()})")
    try:
        load_manifest(manifest)
    except Exception as exc:  # noqa: BLE001 - any failure to read it is a packaging fault
        raise SelfTestError(f"model manifest {manifest} does not load: {exc}") from None
    found["models.json"] = manifest
    qss = paths.resource_path("style", "app.qss")
    if not qss.is_file():
        raise SelfTestError(f"style sheet missing: {qss}")
    found["style/app.qss"] = qss
    for name in ICON_NAMES:
        icon = paths.resource_path("icons", name)
        if not icon.is_file() or icon.stat().st_size == 0:
            raise SelfTestError(f"app icon missing: {icon}")
        found[f"icons/{name}"] = icon
    configs = sorted(Path(clip_models.MODEL_CONFIG_DIR).glob("*.json"))
    if not configs:
        raise SelfTestError(f"no test model configs in {clip_models.MODEL_CONFIG_DIR}")
    for cfg in configs:
        try:
            json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SelfTestError(f"model config {cfg} unreadable: {exc}") from None
        found[f"model_configs/{cfg.name}"] = cfg
    return found


def _isolate(root: Path) -> None:
    """Point every user folder into ``root`` and keep the run offline and headless."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["CAR_DESKTOP_NO_DOWNLOAD"] = "1"
    for env, sub in (("CAR_DESKTOP_CACHE", "cache"), ("CAR_DESKTOP_DATA", "data"),
                     ("CAR_DESKTOP_CONFIG", "config")):
        os.environ[env] = str(root / sub)


def _wait(app, predicate: Callable[[], bool], timeout: float, what: str,
          failure: Callable[[], str | None]) -> None:
    """Spin the Qt event loop until ``predicate`` holds, a failure is reported, or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        app.processEvents()
        problem = failure()
        if problem:
            raise SelfTestError(f"{what}: {problem}")
        if predicate():
            return
        if time.monotonic() > deadline:
            raise SelfTestError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


def _run_window(root: Path, timeout: float, report: Callable[[str], None]) -> dict:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from . import __version__
    from .ui.main_window import MainWindow
    from .ui.settings import Settings
    from .ui.theme import apply_theme

    app = cast(QApplication, QApplication.instance()) or QApplication([sys.argv[0] if sys.argv else "car-desktop"])
    app.setApplicationName("CaR Desktop")
    app.setApplicationVersion(__version__)
    app.setOrganizationName("car-desktop")
    settings = Settings(QSettings(str(root / "settings.ini"), QSettings.Format.IniFormat))
    apply_theme(app, settings.theme)
    if not app.styleSheet().strip():
        raise SelfTestError("the application style sheet (resources/style/app.qss) was not applied: "
                            "the theme code did not find it in this installation")

    folder = root / "images"
    folder.mkdir(parents=True)
    from PIL import Image

    Image.fromarray(synthetic_image()).save(folder / "synthetic.png")

    errors: list[str] = []
    window = MainWindow(test_models=True, settings=settings)
    window.engine.carFailed.connect(lambda _ctx, err: errors.append(f"CaR failed: {err.message}\n{err.details}"))
    window.engine.modelsMissing.connect(lambda msg: errors.append(f"models missing: {msg}"))
    window.engine.error.connect(lambda msg: errors.append(msg))
    shown: list[object] = []
    applied: list[list] = []
    window.imageShown.connect(shown.append)
    window.carApplied.connect(applied.append)
    names: list[dict] = []
    results: list[object] = []
    window.engine.carFinished.connect(lambda _ctx, result: results.append(result))
    window.engine.modelsReady.connect(names.append)
    failure = lambda: errors[0] if errors else None  # noqa: E731
    try:
        window.show()
        if not window.isVisible():
            raise SelfTestError("the main window did not show")
        t0 = time.monotonic()
        if not window.open_folder(folder):
            raise SelfTestError(f"could not open the image folder: {window.last_error}")
        _wait(app, lambda: bool(shown), timeout, "the synthetic image to show", failure)
        _wait(app, lambda: window.engine.ready, timeout, "the test models to load", failure)
        report(f"window shown, models loaded in {time.monotonic() - t0:.1f} s: "
               + "; ".join(f"{k}: {v}" for k, v in sorted((names[0] if names else {}).items())))
        t1 = time.monotonic()
        window.concept_bar.set_text(SELF_TEST_CONCEPTS)
        window.concept_bar.request_run()
        _wait(app, lambda: bool(applied), timeout, "the segmentation result", failure)
        elapsed = time.monotonic() - t1
        layers = [layer for layer in applied[0] if not getattr(layer, "removed", False)]
        if not layers:
            raise SelfTestError("the segmentation returned no kept concept")
        pixels = int(sum(int(np.count_nonzero(layer.mask)) for layer in layers))
        if pixels == 0:
            raise SelfTestError("the segmentation returned an empty mask")
        shape = tuple(layers[0].mask.shape)
        if shape != synthetic_image().shape[:2]:
            raise SelfTestError(f"the mask has shape {shape}, the image {synthetic_image().shape[:2]}")
        stored = window.project.count_annotations(window.image_id) if window.project is not None else 0
        if stored < 1:
            raise SelfTestError("the mask was not saved to the project")
        timings = dict(getattr(results[0], "timings", {}) or {}) if results else {}
        return {"concepts": [layer.name for layer in layers], "mask_pixels": pixels, "segment_s": elapsed,
                "saved_annotations": stored, "sam_ready": window.engine.sam_ready, "timings": timings}
    finally:
        window.close()
        app.processEvents()


def run_self_test(timeout: float = DEFAULT_TIMEOUT_S, keep: bool = False,
                  stream=None) -> int:
    """Run every check; print one line per step and return the process exit code (0: passed)."""
    stream = stream or sys.stdout
    from . import __version__

    def report(text: str) -> None:
        print(f"self-test: {text}", file=stream, flush=True)

    start = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="car-desktop-selftest-"))
    collector = _WarningCollector()
    logging.getLogger("car_desktop").addHandler(collector)
    try:
        _isolate(root)
        report(f"car-desktop {__version__}, Python {sys.version.split()[0]}, "
               f"{'frozen' if getattr(sys, 'frozen', False) else 'installed'} at {Path(__file__).resolve().parent}")
        found = check_resources()
        report(f"resources ok: {', '.join(sorted(found))} (in {found['models.json'].parent})")
        result = _run_window(root, timeout, report)
        fallbacks = [m for m in collector.messages if "helper process unavailable" in m]
        if fallbacks:
            raise SelfTestError(f"the CRF helper process did not start: {fallbacks[0]}")
        from .engine import crf

        # The helper is a spawned child: in a frozen app it only works when the entry point calls
        # multiprocessing.freeze_support(), so its absence here is a packaging fault worth failing on.
        if getattr(crf, "_pool", None) is None:
            raise SelfTestError("the CRF did not run in its helper process")
        report(f"segmented {result['concepts']} in {result['segment_s']:.1f} s: "
               f"{result['mask_pixels']} mask pixels, {result['saved_annotations']} annotation(s) saved, "
               f"SAM {'loaded' if result['sam_ready'] else 'NOT loaded'}; stages: "
               + ", ".join(f"{k} {v:.2f} s" for k, v in result["timings"].items()))
        if not result["sam_ready"]:
            raise SelfTestError("the tiny test SAM did not load")
    except SelfTestError as exc:
        print(f"self-test FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:  # a crash is a failure with its traceback, never a hang
        log.exception("self-test crashed")
        print(f"self-test FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        logging.getLogger("car_desktop").removeHandler(collector)
        try:
            from .engine import crf

            crf.shutdown_pool()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
        if not keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    report(f"passed in {time.monotonic() - start:.1f} s")
    return 0
