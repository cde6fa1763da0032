"""Where the UI meets the engine: only ``ui/engine_client.py`` imports it, opening the window does not
import torch, and the real engine objects and the tests' fakes both satisfy the client's protocols."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import car_desktop

PACKAGE = Path(car_desktop.__file__).parent


def _engine_imports(path: Path) -> list[str]:
    """The ``car_desktop.engine`` modules a file of ``car_desktop/ui`` imports (absolute or relative)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = {0: "", 1: "car_desktop.ui", 2: "car_desktop"}[node.level]
            module = ".".join(p for p in (base, node.module or "") if p)
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [n for n in names if n == "car_desktop.engine" or n.startswith("car_desktop.engine.")]
    return found


def test_ui_reaches_the_engine_only_through_the_client():
    offenders = {p.name: _engine_imports(p) for p in sorted((PACKAGE / "ui").glob("*.py"))
                 if p.name != "engine_client.py" and _engine_imports(p)}
    assert offenders == {}
    assert _engine_imports(PACKAGE / "ui" / "engine_client.py")     # the scan sees the client's own imports


def test_opening_the_window_module_does_not_import_torch():
    """The basis of a fast start: the window, its widgets and the engine types it uses load without
    torch, open_clip or segment_anything (the engine loads them in the background)."""
    code = ("import sys\nimport car_desktop.ui.main_window\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'segment_anything', "
            "'torchvision') or m in ('car_desktop.engine.pipeline', 'car_desktop.engine.image_io', "
            "'car_desktop.engine.model_manager'))\n"
            "print(heavy)\nsys.exit(1 if heavy else 0)")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr


def test_engine_objects_and_fakes_satisfy_the_client_protocols(tmp_path):
    from car_desktop.engine.model_manager import ModelManager
    from car_desktop.engine.pipeline import CaRPipeline
    from car_desktop.ui.engine_client import ModelCatalog, ModelStatusLike, PipelineLike, SamSessionLike
    from fakes import FakeManager, FakePipeline, FakeSam, FakeStatus

    real = CaRPipeline(test_models=True)
    manager = ModelManager(cache_dir=tmp_path)
    for obj, proto in ((real, PipelineLike), (FakePipeline(), PipelineLike), (FakeSam(), SamSessionLike),
                       (manager, ModelCatalog), (FakeManager(missing=True), ModelCatalog),
                       (manager.list()[0], ModelStatusLike), (FakeStatus("x", True), ModelStatusLike)):
        assert isinstance(obj, proto), (type(obj).__name__, proto.__name__)
    from car_desktop.engine.sam_interactive import SamSession

    assert all(callable(getattr(SamSession, m)) for m in ("prefetch", "set_image", "predict"))
