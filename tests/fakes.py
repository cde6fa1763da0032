"""The tests' one set of stand-ins for the engine and the model manager (fast, deterministic, no torch).

``FakePipeline`` satisfies ``ui.engine_client.PipelineLike`` (and what ``autolabel.run_autolabel``
asks of a pipeline); ``FakeSam`` the SAM session; ``FakeManager`` ``ModelCatalog``; ``FakeHost`` the
tools' ``EditHost``; ``car_result`` builds a scripted ``CaRResult``; ``fake_window`` opens the main
window on a fake engine. Each test module configures them instead of writing its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from car_desktop.annotations import mask_ops
from car_desktop.annotations.models import Edit, Rect
from car_desktop.cancel import CancelToken, check
from car_desktop.engine.concepts import Concept, ConceptList
from car_desktop.engine.config import CaRConfig
from car_desktop.engine.errors import WeightsMissingError
from car_desktop.engine.results import CaRResult, ConceptResult, ConceptStatus, Progress, StepTrace

__all__ = ["FakeHost", "FakeManager", "FakePipeline", "FakeSam", "FakeStatus", "car_result", "fake_window"]


@dataclass(frozen=True)
class FakePrediction:
    mask: np.ndarray
    iou: float = 0.9


class FakeSam:
    """A SAM session: a click gives the 10x10 square around the first point."""

    def __init__(self) -> None:
        self.images = 0
        self._shape: tuple[int, int] = (0, 0)

    def prefetch(self, image: np.ndarray) -> str:
        self.images += 1
        return "key"

    def set_image(self, image: np.ndarray) -> str:
        self._shape = image.shape[:2]
        return "key"

    def predict(self, points=(), labels=(), *args, multimask: bool = True) -> FakePrediction:
        mask = np.zeros(self._shape, bool)
        x, y = points[0]
        mask[max(0, int(y) - 5):int(y) + 5, max(0, int(x) - 5):int(x) + 5] = True
        return FakePrediction(mask)


def car_result(rows: list[tuple[str, np.ndarray | None, float]], *, config: dict | None = None,
               model_names: dict[str, str] | None = None, steps: int = 1, sam_iou: float | None = None) -> CaRResult:
    """A scripted CaR result: per concept, in order, (the typed text, its mask or None when the loop
    removed it (at step 2, with that score), its score). ``sam_iou`` marks the kept masks SAM-accepted."""
    concepts = ConceptList.parse([r[0] for r in rows])
    shape = next((m.shape for _, m, _ in rows if m is not None), (1, 1))
    out = []
    for i, ((_, mask, score), c) in enumerate(zip(rows, concepts, strict=True)):
        if mask is None:
            out.append(ConceptResult(i, c, np.zeros(shape, bool), 0.0, ConceptStatus.REMOVED, 2, score))
        else:
            out.append(ConceptResult(i, c, mask, score, ConceptStatus.KEPT, sam_accepted=None if sam_iou is None
                                     else True, sam_iou=sam_iou))
    return CaRResult(out, [StepTrace(k + 1, [], {}, []) for k in range(steps)], np.zeros(shape, np.int32), shape,
                     config=dict(config if config is not None else CaRConfig().to_dict()),
                     model_names=dict(model_names or {}))


def band_mask(i: int, h: int, w: int) -> np.ndarray:
    """The i-th of a few overlapping diagonal bands (review-queue tests' masks)."""
    m = np.zeros((h, w), bool)
    m[4 + 3 * i: 14 + 3 * i, 4 + 6 * i: 20 + 6 * i] = True
    return m


def removed_if_absent(index: int, count: int, concept: Concept) -> bool:
    """The default removal rule: a concept called 'absent' is removed (unless it is the only one)."""
    return concept.name == "absent" and count > 1


@dataclass
class FakePipeline:
    """Deterministic CaR.

    ``masks="bands"``: concept i of n gets the i-th vertical band (rows h/4..3h/4), score 0.8 - 0.1 i;
    ``masks="channels"``: concept i keeps the pixels whose channel i % 3 is above 127, score 0.5 + i / 10.
    ``removed(i, n, concept)`` says which concepts the loop removes (at step 2, score 0.12); one concept
    left alone is "kept without competition". A run waits on ``gate`` (until set) and takes one of
    ``permits`` if given, checking the cancel token meanwhile; ``fail_with`` / ``fail_on`` make it raise.
    """

    masks: str = "bands"
    removed: Callable[[int, int, Concept], bool] = removed_if_absent
    sam: FakeSam | None = field(default_factory=FakeSam)
    gate: threading.Event | None = None
    permits: threading.Semaphore | None = None
    delay: float = 0.0                       # seconds of "work" per run (cancellable)
    fail_with: Exception | None = None       # raised by every run
    fail_on: set[int] = field(default_factory=set)   # run numbers (0-based) that raise RuntimeError
    before_return: Callable[[int], None] | None = None
    model_names: dict[str, str] = field(default_factory=lambda: {"proposal": "fake"})
    device: str = "cpu"
    test_models: bool = False
    calls: list[ConceptList] = field(default_factory=list)
    configs: list[CaRConfig | None] = field(default_factory=list)
    shapes: list[tuple[int, int]] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def load_models(self, progress=None, cancel=None) -> None:
        if progress:
            progress(Progress("load", message="fake"))

    def sam_session(self, config=None) -> FakeSam | None:
        return self.sam

    def _wait(self, cancel: CancelToken | None) -> None:
        while self.gate is not None and not self.gate.wait(0.01):
            check(cancel)
        while self.permits is not None and not self.permits.acquire(timeout=0.01):
            check(cancel)
        end = time.monotonic() + self.delay
        while time.monotonic() < end:
            check(cancel)
            time.sleep(0.005)
        check(cancel)

    def run(self, image: np.ndarray, concepts, *, config: CaRConfig | None = None, progress=None,
            cancel: CancelToken | None = None) -> CaRResult:
        n = len(self.calls)
        parsed = ConceptList.parse(concepts)
        self.calls.append(parsed)
        self.configs.append(config)
        self.shapes.append(image.shape[:2])
        self.started.set()
        if progress:
            progress(Progress("proposals", 1, 0.5))
        self._wait(cancel)
        if self.fail_with is not None:
            raise self.fail_with
        if n in self.fail_on:
            raise RuntimeError("boom")
        if self.before_return is not None:
            self.before_return(n)
            check(cancel)                    # like the pipeline's last check before it returns
        h, w = image.shape[:2]
        out = []
        for i, c in enumerate(parsed):
            if self.removed(i, len(parsed), c):
                out.append(ConceptResult(i, c, np.zeros((h, w), bool), 0.0, ConceptStatus.REMOVED, 2, 0.12))
                continue
            if self.masks == "channels":
                mask, score = image[:, :, i % 3] > 127, 0.5 + i / 10
            else:
                band = w // len(parsed)
                mask = np.zeros((h, w), bool)
                mask[h // 4: 3 * h // 4, i * band + 1:(i + 1) * band - 1] = True
                score = 0.8 - 0.1 * i
            out.append(ConceptResult(i, c, mask, score, ConceptStatus.KEPT))
        kept = [c for c in out if c.status is not ConceptStatus.REMOVED]
        if len(kept) == 1:
            kept[0].status = ConceptStatus.KEPT_ALONE
        config = config or CaRConfig()
        return CaRResult(out, [], np.zeros((h, w), np.int32), (h, w), timings={"proposals": 0.01, "crf": 0.002},
                         config=config.to_dict(), model_names=dict(self.model_names))


@dataclass
class FakeStatus:
    """One row of the model list (``ModelStatus``)."""

    name: str
    ok: bool
    title: str = ""
    optional: bool = False
    verified: bool = False
    size: int | None = None
    expected_size: int | None = 350_000_000
    downloaded: int | None = None
    detail: str = ""
    folder: Path | None = Path("/nowhere")

    @property
    def state(self) -> str:
        return "present" if self.ok else "missing"

    @property
    def path(self) -> Path:
        return Path("/nowhere") / self.name


class FakeManager:
    """A model catalogue: missing weights until a local file is chosen; downloads fail offline."""

    def __init__(self, missing: bool) -> None:
        self._missing = missing
        self.local: dict[str, str] = {}

    def list(self) -> list[FakeStatus]:
        return [FakeStatus(name, not self._missing, size=None if self._missing else 10)
                for name in ("ViT-B-16", "sam_vit_b")]

    def set_local_file(self, name: str, path: str) -> None:
        self.local[name] = path
        self._missing = False

    def download(self, name: str, progress=None, cancel=None) -> Path:
        raise WeightsMissingError(f"{name}: no internet; put the file in /nowhere")


class FakeHost:
    """The ``EditHost`` the tools talk to: applies their edits to the stack's layers and records them."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.commits: list[tuple[int, Edit, str]] = []
        self.messages: list[str] = []
        self.sam_requests: list[tuple[list, list]] = []
        self.accepted: list[np.ndarray] = []

    def selected_layer(self):
        return self.stack.selected()

    def layer_touched(self, layer_id: int, rect: Rect) -> None:
        self.stack.touched(layer_id, rect)

    def commit_mask_edit(self, layer_id: int, edit: Edit, label: str) -> None:
        mask_ops.apply_edit(self.stack.get(layer_id).mask, edit, inplace=True)
        self.commits.append((layer_id, edit, label))

    def message(self, text: str) -> None:
        self.messages.append(text)

    def sam_predict(self, points, labels) -> None:
        self.sam_requests.append((points, labels))

    def sam_accept(self, mask: np.ndarray) -> None:
        self.accepted.append(mask)


def fake_window(qtbot, folder: Path, pipeline: FakePipeline | None = None):
    """The main window, shown, on ``pipeline`` (default: a ``FakePipeline`` without SAM), with its
    settings in ``folder``; ``window.fake`` is the pipeline. Imports Qt only when called."""
    from PySide6.QtCore import QSettings

    from car_desktop.ui.main_window import MainWindow
    from car_desktop.ui.settings import Settings

    pipe = pipeline if pipeline is not None else FakePipeline(sam=None)
    settings = Settings(QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(test_models=True, settings=settings, pipeline_factory=lambda t, c: pipe)
    window.fake = pipe
    qtbot.addWidget(window)
    window.show()
    return window


def window_on_photo(qtbot, tmp_path: Path, data_dir: Path):
    """``fake_window`` with a folder of one 64x48 photo (a.png) opened and shown."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.open(data_dir / "astronaut.jpg").convert("RGB").resize((64, 48)).save(folder / "a.png")
    window = fake_window(qtbot, tmp_path)
    with qtbot.waitSignal(window.imageShown, timeout=5000):
        assert window.open_folder(folder)
    return window
