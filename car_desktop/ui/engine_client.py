"""The window's access to the engine: model loading, CaR runs and SAM clicks, all on worker lanes.

The pipeline (one per process) is created and loaded on the "engine" lane; CaR runs go there too.
SAM embeddings and clicks use the "sam" lane and the pipeline's shared ``SamSession``, whose
embedding cache makes the clicks after the first instant. Every request names the image it is for
(a key); results for an image that is no longer shown are dropped by generation (``JobRunner``) and,
as a second guard, by key.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QObject, Signal

from ..engine.config import CaRConfig
from ..engine.errors import WeightsMissingError
from .workers import JobError, JobInfo, JobRunner

log = logging.getLogger(__name__)


def default_pipeline_factory(test_models: bool, config: CaRConfig | None):
    from ..engine.pipeline import shared_pipeline

    return shared_pipeline(test_models=test_models, config=config)


class EngineClient(QObject):
    """Turns GUI requests into worker jobs and worker results into signals for the window."""

    modelsReady = Signal(dict)                 # model names
    modelsMissing = Signal(str)                # message naming what is missing
    carFinished = Signal(object, object)       # context dict, CaRResult
    carFailed = Signal(object, object)         # context dict, JobError
    carCancelled = Signal(object)              # context dict
    samPredicted = Signal(object, object)      # image key, mask (bool ndarray)
    samEmbedded = Signal(object)               # image key
    error = Signal(str)

    def __init__(self, runner: JobRunner, *, test_models: bool = False, config: CaRConfig | None = None,
                 pipeline_factory: Callable[[bool, CaRConfig | None], Any] | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.test_models = test_models
        self.config = config or CaRConfig()
        self._factory = pipeline_factory or default_pipeline_factory
        self._pipeline = None          # touched only on worker lanes once created
        self._sam = None
        self.ready = False
        self.sam_ready = False
        self._image_key: Any = None
        self._image: np.ndarray | None = None
        self._low_res: dict[Any, np.ndarray] = {}
        runner.finished.connect(self._on_finished)
        runner.failed.connect(self._on_failed)
        runner.cancelled.connect(self._on_cancelled)

    # ----- models
    def _get_pipeline(self):
        if self._pipeline is None:
            self._pipeline = self._factory(self.test_models, self.config)
        return self._pipeline

    def pipeline(self):
        """The shared pipeline, created on first use. Call it only from a job on the "engine" lane."""
        return self._get_pipeline()

    def load_models(self) -> JobInfo:
        def job(progress, cancel):
            pipe = self._get_pipeline()
            pipe.load_models(progress=progress, cancel=cancel)
            sam = None
            if getattr(pipe, "config", self.config).sam_mode != "off" or True:
                try:
                    sam = pipe.sam_session()
                except WeightsMissingError as exc:
                    log.warning("SAM not available: %s", exc)
            return {"names": dict(getattr(pipe, "model_names", {})), "sam": sam}

        return self.runner.submit("load_models", job, lane="engine", label="Loading models")

    def device_text(self) -> str:
        pipe = self._pipeline
        device = getattr(pipe, "device", None) if pipe is not None else None
        if device is None:
            device = self.config.device
        return f"device: {device}" + ("  ·  TEST MODELS (random weights)" if self.test_models else "")

    # ----- CaR
    def run_car(self, image: np.ndarray, image_key: Any, text: str, config: CaRConfig,
                kind: str = "car", extra: dict | None = None) -> JobInfo:
        context = {"image_key": image_key, "text": text, "config": config, **(extra or {})}

        def job(progress, cancel):
            pipe = self._get_pipeline()
            return pipe.run(image, text, config=config, progress=progress, cancel=cancel)

        return self.runner.submit(kind, job, lane="engine", context=context, label="CaR")

    def cancel_car(self) -> None:
        self.runner.invalidate("car")
        self.runner.invalidate("force_keep")

    # ----- SAM
    def set_image(self, image: np.ndarray | None, image_key: Any) -> None:
        """The image now shown: stale SAM jobs are dropped, the embedding is computed in the background."""
        self._image, self._image_key = image, image_key
        self._low_res = {}
        self.runner.invalidate("sam_click")
        self.runner.invalidate("sam_embed")
        if image is not None and self.sam_ready:
            self.prefetch(image, image_key, kind="sam_embed")

    def prefetch(self, image: np.ndarray, image_key: Any, kind: str = "sam_prefetch") -> None:
        sam = self._sam

        def job(progress, cancel):
            progress("SAM embedding")
            sam.prefetch(image)
            return image_key

        if sam is not None:
            self.runner.submit(kind, job, lane="sam", context={"image_key": image_key}, label="SAM embedding")

    def sam_predict(self, points: list[tuple[float, float]], labels: list[int]) -> None:
        if self._sam is None or self._image is None:
            self.error.emit("SAM is not loaded yet: open Models… to get its weights, or wait for loading.")
            return
        sam, image, key = self._sam, self._image, self._image_key

        def job(progress, cancel):
            sam.set_image(image)     # instant when the embedding is cached
            cancel.check()
            return sam.predict(points, labels, multimask=len(points) == 1)

        self.runner.submit("sam_click", job, lane="sam", context={"image_key": key}, label="SAM")

    # ----- results
    def _on_finished(self, job: JobInfo, result: Any) -> None:
        ctx = job.context or {}
        if job.kind == "load_models":
            self._sam = result.get("sam")
            self.ready = True
            self.sam_ready = self._sam is not None
            self.modelsReady.emit(result.get("names", {}))
            if self._image is not None and self.sam_ready:
                self.prefetch(self._image, self._image_key, kind="sam_embed")
        elif job.kind in ("car", "force_keep"):
            if ctx.get("image_key") != self._image_key:
                self.runner.dropped += 1
                return
            self.carFinished.emit(ctx, result)
        elif job.kind == "sam_click":
            if ctx.get("image_key") != self._image_key:
                return
            self.samPredicted.emit(ctx.get("image_key"), result.mask)
        elif job.kind in ("sam_embed", "sam_prefetch"):
            self.samEmbedded.emit(result)

    def _on_failed(self, job: JobInfo, err: JobError) -> None:
        if job.kind == "load_models":
            if err.exception_type in ("WeightsMissingError", "WeightsCorruptError"):
                self.modelsMissing.emit(err.message)
            else:
                self.error.emit(f"Could not load the models: {err.message}")
        elif job.kind in ("car", "force_keep"):
            self.carFailed.emit(job.context or {}, err)
        elif job.kind.startswith("sam"):
            self.error.emit(f"SAM: {err.message}")

    def _on_cancelled(self, job: JobInfo) -> None:
        if job.kind in ("car", "force_keep"):
            self.carCancelled.emit(job.context or {})
