"""The UI's one way to the engine: model loading, CaR runs, auto-label chunks, SAM clicks, image decoding
and the model manager, all as jobs on worker lanes.

No other module of ``car_desktop.ui`` imports ``car_desktop.engine`` (a test checks it): the engine
types the UI needs (config and presets, the parsed ``ConceptList``, results and progress, errors) are
re-exported here from the engine's small modules, which import neither Qt nor torch. The heavy parts
(the pipeline, image decoding, the model manager) are imported inside jobs or on first use, so opening
the window does not import torch.

The pipeline (one per process) is created and loaded on the "engine" lane; CaR runs and auto-label
chunks go there too. SAM embeddings and clicks use the "sam" lane and the pipeline's shared SAM
session, whose embedding cache makes the clicks after the first instant. Every request names the image
it is for (a key). A CaR run's job kind names its image (``car:<key>``), so changing image does not
cancel it: its result comes back with its request and the window stores it on that image; SAM
results for an image no longer shown are dropped by generation (``JobRunner``) and by key. The pipeline
and model objects are typed by the ``Protocol``s below, which the real engine and the tests' fakes both
satisfy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from PySide6.QtCore import QObject, Signal

from ..cancel import CancelToken
from ..engine.concepts import ConceptList
from ..engine.config import (
    DEFAULT_BACKGROUND_WORDS,
    DEVICE_CHOICES,
    PRECISION_CHOICES,
    PRESET_DESCRIPTIONS,
    PRESETS,
    SAM_MODES,
    VISUAL_PROMPTS,
    CaRConfig,
    preset,
)
from ..engine.errors import ConceptError, ImageLoadError, VideoLoadError, WeightsCorruptError, WeightsMissingError
from ..engine.model_facts import ModelFacts, facts_text
from ..engine.results import CaRResult, Progress
from ..engine.video_io import VIDEO_EXTENSIONS
from .workers import JobError, JobInfo, JobRunner, ProgressFn

if TYPE_CHECKING:
    from ..annotations.store import Project
    from ..annotations.video_store import VideoRecord
    from ..autolabel import AutoLabelJob, AutoLabelProgress, AutoLabelReport
    from ..engine.video_io import FrameSource, VideoInfo
    from ..videolabel import VideoJob, VideoProgress, VideoReport

__all__ = [
    "DEFAULT_BACKGROUND_WORDS",
    "DEVICE_CHOICES",
    "PRECISION_CHOICES",
    "PRESETS",
    "PRESET_DESCRIPTIONS",
    "SAM_MODES",
    "VIDEO_EXTENSIONS",
    "VISUAL_PROMPTS",
    "CaRConfig",
    "CaRResult",
    "CarRequest",
    "ConceptError",
    "ConceptList",
    "EngineClient",
    "ImageLoadError",
    "ModelCatalog",
    "ModelFacts",
    "ModelStatusLike",
    "PipelineLike",
    "Progress",
    "SamSessionLike",
    "VideoLoadError",
    "facts_text",
    "preset",
]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- what the UI needs
@runtime_checkable
class SamPredictionLike(Protocol):
    @property
    def mask(self) -> np.ndarray: ...


@runtime_checkable
class SamSessionLike(Protocol):
    """The shared SAM session (``engine.sam_interactive.SamSession``)."""

    def prefetch(self, image: np.ndarray) -> object: ...
    def set_image(self, image: np.ndarray) -> object: ...
    def predict(self, points: Sequence[tuple[float, float]] = ..., labels: Sequence[int] = ..., *args: Any,
                multimask: bool = ...) -> SamPredictionLike: ...


@runtime_checkable
class PipelineLike(Protocol):
    """What the client asks of a CaR pipeline (``engine.pipeline.CaRPipeline``)."""

    @property
    def model_names(self) -> Mapping[str, str]: ...
    @property
    def device(self) -> str: ...
    @property
    def test_models(self) -> bool: ...
    def load_models(self, progress: ProgressFn | None = ..., cancel: CancelToken | None = ...) -> None: ...
    def sam_session(self) -> SamSessionLike | None: ...
    def run(self, image: np.ndarray, concepts: ConceptList, *, config: CaRConfig | None = ...,
            progress: ProgressFn | None = ..., cancel: CancelToken | None = ...) -> CaRResult: ...


@runtime_checkable
class ModelStatusLike(Protocol):
    """One row of the model list (``engine.model_manager.ModelStatus``)."""

    @property
    def name(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def optional(self) -> bool: ...
    @property
    def verified(self) -> bool: ...
    @property
    def path(self) -> Path: ...
    @property
    def folder(self) -> Path | None: ...
    @property
    def size(self) -> int | None: ...
    @property
    def expected_size(self) -> int | None: ...
    @property
    def downloaded(self) -> int | None: ...
    @property
    def detail(self) -> str: ...


@runtime_checkable
class ModelCatalog(Protocol):
    """The weights the app needs and how to get them (``engine.model_manager.ModelManager``)."""

    def list(self) -> Sequence[ModelStatusLike]: ...
    def set_local_file(self, name: str, path: str) -> None: ...
    def download(self, name: str, progress: Callable[[int, int | None], None] | None = ...,
                 cancel: CancelToken | None = ...) -> object: ...


PipelineFactory = Callable[[bool, CaRConfig], PipelineLike]


def default_pipeline_factory(test_models: bool, config: CaRConfig) -> PipelineLike:
    from ..engine.pipeline import shared_pipeline

    return shared_pipeline(test_models=test_models, config=config)


def default_model_manager() -> ModelCatalog:
    from ..engine.model_manager import ModelManager

    return ModelManager()


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file as the engine sees it (uint8 RGB, EXIF orientation applied). Raises ImageLoadError."""
    from ..engine.image_io import load_image

    return load_image(path)


@dataclass(frozen=True)
class CarRequest:
    """One CaR run the window asked for; it comes back with the result."""

    image_key: Any
    concepts: ConceptList
    config: CaRConfig
    ghost_id: int | None = None      # a force-keep run for the removed concept shown in this layer


@dataclass(frozen=True)
class _Loaded:
    names: dict[str, str]
    device: str
    sam: SamSessionLike | None


# ----------------------------------------------------------------------------- the client
class EngineClient(QObject):
    """Turns GUI requests into worker jobs and worker results into signals for the window."""

    modelsReady = Signal(dict)                 # model names
    modelsMissing = Signal(str)                # message naming what is missing
    carFinished = Signal(object, object)       # CarRequest, CaRResult
    carFailed = Signal(object, object)         # CarRequest, JobError
    carCancelled = Signal(object)              # CarRequest
    samPredicted = Signal(object, object)      # image key, mask (bool ndarray)
    samEmbedded = Signal(object)               # image key
    error = Signal(str)

    def __init__(self, runner: JobRunner, *, test_models: bool = False, config: CaRConfig | None = None,
                 pipeline_factory: PipelineFactory | None = None, model_manager: ModelCatalog | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.test_models = test_models
        self.config = config or CaRConfig()
        self._factory = pipeline_factory or default_pipeline_factory
        self._manager = model_manager
        self._pipeline: PipelineLike | None = None    # touched only on the engine lane once created
        self._sam: SamSessionLike | None = None
        self._device = self.config.device
        self.ready = False
        self.sam_ready = False
        self._image_key: Any = None
        self._image: np.ndarray | None = None
        self._clip: tuple[Any, int, FrameSource] | None = None   # the clip frames are read from (io lane only)

    # ----- models
    def _get_pipeline(self) -> PipelineLike:
        if self._pipeline is None:
            self._pipeline = self._factory(self.test_models, self.config)
        return self._pipeline

    def model_manager(self) -> ModelCatalog:
        """The model manager (created on first use; its module pulls in the download code)."""
        if self._manager is None:
            self._manager = default_model_manager()
        return self._manager

    def load_models(self) -> JobInfo:
        def job(progress: ProgressFn, cancel: CancelToken) -> _Loaded:
            pipe = self._get_pipeline()
            pipe.load_models(progress=progress, cancel=cancel)
            sam = None
            try:
                sam = pipe.sam_session()   # also for SAM clicks when CaR runs without SAM
            except WeightsMissingError as exc:
                log.warning("SAM not available: %s", exc)
            return _Loaded(dict(pipe.model_names), pipe.device, sam)

        return self.runner.submit("load_models", job, lane="engine", label="Loading models",
                                  on_done=self._models_loaded, on_failed=self._models_failed)

    def _models_loaded(self, loaded: _Loaded) -> None:
        self._sam, self._device = loaded.sam, loaded.device
        self.ready = True
        self.sam_ready = self._sam is not None
        self.modelsReady.emit(loaded.names)
        if self._image is not None:
            self._embed(self._image, self._image_key)

    def _models_failed(self, err: JobError) -> None:
        if err.exception_type in (WeightsMissingError.__name__, WeightsCorruptError.__name__):
            self.modelsMissing.emit(err.message)
        else:
            self.error.emit(f"Could not load the models: {err.message}")

    def device_text(self) -> str:
        return f"device: {self._device}" + ("  ·  TEST MODELS (random weights)" if self.test_models else "")

    # ----- CaR
    @staticmethod
    def car_kind(request: CarRequest) -> str:
        """The job kind of a run: one per image (and per force-keep), so switching image does not
        supersede a run, while a second run on the same image does."""
        return f"{'car' if request.ghost_id is None else 'force_keep'}:{request.image_key}"

    def run_car(self, image: np.ndarray, request: CarRequest) -> JobInfo:
        """Run CaR on ``image``; ``carFinished`` / ``carFailed`` / ``carCancelled`` answer with ``request``.
        The result comes back whichever image is shown by then: the window stores it on its own image."""
        def job(progress: ProgressFn, cancel: CancelToken) -> CaRResult:
            return self._get_pipeline().run(image, request.concepts, config=request.config, progress=progress,
                                            cancel=cancel)

        return self.runner.submit(self.car_kind(request), job, lane="engine", label="CaR",
                                  on_done=lambda result: self.carFinished.emit(request, result),
                                  on_failed=lambda err: self.carFailed.emit(request, err),
                                  on_cancelled=lambda: self.carCancelled.emit(request))

    def car_running(self) -> list[JobInfo]:
        return [j for j in self.runner.running() if j.kind.split(":", 1)[0] in ("car", "force_keep")]

    def cancel_car(self) -> int:
        """Stop every CaR run (an explicit cancel, or another project); returns how many were running."""
        kinds = {j.kind for j in self.car_running() if not j.token.cancelled}
        for kind in kinds:
            self.runner.invalidate(kind)
        return len(kinds)

    def run_autolabel(self, project: Project, job: AutoLabelJob, *,
                      whole_run: Callable[[AutoLabelProgress], AutoLabelProgress],
                      on_progress: Callable[[AutoLabelProgress], None],
                      on_done: Callable[[AutoLabelReport], None], on_failed: Callable[[JobError], None],
                      on_cancelled: Callable[[], None], label: str) -> JobInfo:
        """Run the folder loop (``autolabel.run_autolabel``) on ``job``'s images with the shared pipeline.
        ``whole_run`` turns each of its progress snapshots into one of the whole run (on the worker);
        those reach ``on_progress`` (and the status bar) on the GUI thread."""
        from ..autolabel import run_autolabel

        def work(progress: ProgressFn, cancel: CancelToken) -> AutoLabelReport:
            return run_autolabel(self._get_pipeline(), project, job, progress=lambda p: progress(whole_run(p)),
                                 cancel=cancel)

        return self.runner.submit("autolabel", work, lane="engine", label=label, on_done=on_done,
                                  on_failed=on_failed, on_cancelled=on_cancelled, on_progress=on_progress)

    # ----- images
    def read_image(self, path: Path, on_done: Callable[[np.ndarray], None],
                   on_failed: Callable[[JobError], None]) -> JobInfo:
        """Decode an image on the io lane; a newer request supersedes an older one."""
        return self.runner.submit("load_image", lambda progress, cancel: read_image(path), lane="io",
                                  label=f"Opening {path.name}", on_done=on_done, on_failed=on_failed)

    # ----- SAM
    def set_image(self, image: np.ndarray | None, image_key: Any) -> None:
        """The image now shown: stale SAM jobs are dropped, the embedding is computed in the background."""
        self._image, self._image_key = image, image_key
        self.runner.invalidate("sam_click")
        self.runner.invalidate("sam_embed")
        if image is not None:
            self._embed(image, image_key)

    def _embed(self, image: np.ndarray, image_key: Any) -> None:
        sam = self._sam
        if sam is None:
            return

        def job(progress: ProgressFn, cancel: CancelToken) -> Any:
            progress("SAM embedding")
            sam.prefetch(image)
            return image_key

        self.runner.submit("sam_embed", job, lane="sam", label="SAM embedding", on_done=self.samEmbedded.emit)

    def sam_predict(self, points: list[tuple[float, float]], labels: list[int]) -> None:
        if self._sam is None or self._image is None:
            self.error.emit("SAM is not loaded yet: open Models… to get its weights, or wait for loading.")
            return
        sam, image, key = self._sam, self._image, self._image_key

        def job(progress: ProgressFn, cancel: CancelToken) -> np.ndarray:
            sam.set_image(image)     # instant when the embedding is cached
            cancel.check()
            return sam.predict(points, labels, multimask=len(points) == 1).mask

        def done(mask: np.ndarray) -> None:
            if key == self._image_key:
                self.samPredicted.emit(key, mask)

        self.runner.submit("sam_click", job, lane="sam", label="SAM", quiet=True, on_done=done,
                           on_failed=lambda err: self.error.emit(f"SAM: {err.message}"))

    # ----- video: frames on the io lane, labelling and propagation on the engine lane
    def open_clip(self, project: Project, path: Path, on_done: Callable[[tuple[VideoRecord, VideoInfo]], None],
                  on_failed: Callable[[JobError], None]) -> JobInfo:
        """Add a clip (file or frame folder) to the project, or find it again (``videolabel.add_clip``)."""
        def job(progress: ProgressFn, cancel: CancelToken) -> tuple[VideoRecord, VideoInfo]:
            from ..videolabel import add_clip

            return add_clip(project, path)

        return self.runner.submit("open_clip", job, lane="io", label=f"Opening {Path(path).name}", on_done=on_done,
                                  on_failed=on_failed)

    def read_frame(self, project: Project, video_id: int, index: int,
                   on_done: Callable[[tuple[int, np.ndarray]], None], on_failed: Callable[[JobError], None]) -> JobInfo:
        """Decode frame ``index`` of a clip on the io lane; the clip stays open for the next frames."""
        def job(progress: ProgressFn, cancel: CancelToken) -> tuple[int, np.ndarray]:
            from ..videolabel import open_clip

            if self._clip is None or self._clip[:2] != (project, video_id):
                self._close_clip()
                self._clip = (project, video_id, open_clip(project, video_id))
            return index, self._clip[2].read(index)

        return self.runner.submit("read_frame", job, lane="io", label="Reading frame", quiet=True, on_done=on_done,
                                  on_failed=on_failed)

    def close_clip(self) -> None:
        """Close the clip frames were read from (on the io lane, after any frame still being read)."""
        self.runner.submit("close_clip", lambda progress, cancel: self._close_clip(), lane="io", quiet=True)

    def _close_clip(self) -> None:
        if self._clip is not None:
            self._clip[2].close()
            self._clip = None

    def run_video(self, project: Project, video_id: int, job: VideoJob, *,
                  on_progress: Callable[[VideoProgress], None], on_done: Callable[[VideoReport], None],
                  on_failed: Callable[[JobError], None], on_cancelled: Callable[[], None]) -> JobInfo:
        """CaR on the clip's key frames, then SAM 2 between them (``videolabel.run_video``)."""
        def work(progress: ProgressFn, cancel: CancelToken) -> VideoReport:
            from ..videolabel import run_video

            return run_video(self._get_pipeline(), project, video_id, job, progress=progress, cancel=cancel)

        return self.runner.submit("video", work, lane="engine", label="Labelling the clip", on_done=on_done,
                                  on_failed=on_failed, on_cancelled=on_cancelled, on_progress=on_progress)

    def propagate_clip(self, project: Project, video_id: int, sam2_model: str, *, categories: list[int] | None = None,
                       from_frame: int | None = None, on_progress: Callable[[VideoProgress], None],
                       on_done: Callable[[VideoReport], None], on_failed: Callable[[JobError], None],
                       on_cancelled: Callable[[], None]) -> JobInfo:
        """SAM 2 carries the clip's objects from their key frames (``videolabel.propagate``)."""
        def work(progress: ProgressFn, cancel: CancelToken) -> VideoReport:
            from ..engine.sam2_models import TEST_MODEL, load_sam2
            from ..videolabel import open_clip, propagate

            progress("loading SAM 2")
            handle = load_sam2(TEST_MODEL if self.test_models else sam2_model, self.config.device, cancel=cancel)
            with open_clip(project, video_id) as source:
                return propagate(project, video_id, handle, source, categories=categories, from_frame=from_frame,
                                 progress=progress, cancel=cancel)

        return self.runner.submit("video", work, lane="engine", label="Propagating with SAM 2", on_done=on_done,
                                  on_failed=on_failed, on_cancelled=on_cancelled, on_progress=on_progress)

