"""The callable class Ray Data runs on each worker actor of ``batch --ray``: one CaR pipeline per actor.

``CaRWorker`` loads the models once, when the actor starts, then labels every batch of image files it is
given (rows of ``path`` and ``bytes`` from ``ray.data.read_binary_files``). Each file's bytes are decoded
with our own image reader (EXIF orientation, 16-bit, CMYK...) straight from its bytes, CaR
runs through the same per-image function as the local batch (``autolabel.segment_image``), and the
worker answers one compact JSON row per image (``compact_result``: RLE masks, scores, statuses,
timings) - never a full-resolution array. A row's ``status`` is "done" (with ``result``), "failed"
(this image only, with ``error``: unreadable file, engine error) or "fatal" (every image would fail:
missing weights, bad config), which ends the run. Workers never open the project: the driver is its
only writer. Nothing here imports Ray.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .autolabel import AutoLabelJob, decode_image, load_failure, segment_image
from .compact_result import compact_result
from .engine.errors import Cancelled, CaRDesktopError

log = logging.getLogger(__name__)

#: Builds a worker's pipeline: ``factory(config, test_models=...)``; ``CaRPipeline`` by default.
PipelineFactory = Callable[..., Any]


class CaRWorker:
    """One CaR pipeline, labelling the images of the batches Ray Data hands to this actor."""

    def __init__(self, job: AutoLabelJob, test_models: bool, pipeline_factory: PipelineFactory | None = None) -> None:
        self.job = job
        self.fatal: str | None = None
        if pipeline_factory is None:
            from .engine.pipeline import CaRPipeline

            pipeline_factory = CaRPipeline
        self.pipeline = pipeline_factory(job.config, test_models=test_models)
        try:
            self.pipeline.load_models()
        except CaRDesktopError as exc:
            # Answered for every image rather than raised: Ray would only restart the actor, forever.
            self.fatal = str(exc)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        paths = [str(p) for p in batch["path"]]
        payloads = [json.dumps(self.label(path, data), default=str) for path, data in zip(paths, batch["bytes"])]
        return {"path": paths, "payload": payloads}

    def label(self, path: str, data: bytes) -> dict[str, Any]:
        """One image's answer row (see the module docstring). ``path`` names the file in messages."""
        if self.fatal is not None:
            return {"status": "fatal", "error": self.fatal}
        t0 = time.perf_counter()
        image = self.decode(path, data)
        if isinstance(image, str):
            return {"status": "failed", "error": image}
        t1 = time.perf_counter()
        try:
            result = segment_image(self.pipeline, image, self.job, None, path)
        except Cancelled:
            raise  # the worker process is being interrupted: Ray retries the image elsewhere
        except CaRDesktopError as exc:
            return {"status": "fatal", "error": str(exc)}
        if isinstance(result, str):
            return {"status": "failed", "error": result}
        t2 = time.perf_counter()
        compact = compact_result(result)
        compact["timings"]["decode"] = t1 - t0
        compact["timings"]["encode"] = time.perf_counter() - t2
        return {"status": "done", "result": compact}

    def decode(self, path: str, data: bytes) -> np.ndarray | str:
        """The image as the engine wants it (decoded from its bytes with our reader), or why it cannot be read."""
        try:
            return decode_image(path, bytes(data))
        except Exception as exc:  # noqa: BLE001 - a decoder failure is this image's, not the run's
            return load_failure(exc, path)
