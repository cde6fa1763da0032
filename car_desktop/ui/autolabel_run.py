"""Auto-labelling a folder from the window: the headless loop (``autolabel.run_autolabel``) in chunks.

The run is a chain of jobs: first one (on the "io" lane) that adds the folder's images to the project,
then one ``EngineClient.run_autolabel`` job per few images on the "engine" lane. Between two chunks the
lane is free for a moment, so a CaR run the annotator asks for on the image in front of them waits for a
few images, not for the whole folder. Each chunk runs ``run_autolabel`` on the images of the chunk with
the client's shared pipeline; the loop itself skips images already labelled with the same concepts and
settings, and never touches images a person reviewed or edited.

The counts of the whole run live in a ``RunTally`` that only the worker lane touches (the chunks run
one after another); the GUI receives frozen ``AutoLabelProgress`` snapshots of the whole run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from ..annotations.store import Project
from ..autolabel import AutoLabelJob, AutoLabelProgress, AutoLabelReport, Failure, add_folder
from .engine_client import CaRConfig, ConceptList, EngineClient
from .workers import JobError

log = logging.getLogger(__name__)

#: Images per job: small enough that an interactive CaR run waits only a few images, large enough that
#: the loop's decode-ahead thread still overlaps most decoding with the engine.
CHUNK = 4


@dataclass(frozen=True)
class AutoLabelRequest:
    """What the dialog asks for. ``folder`` None: every image already in the project."""

    concepts: ConceptList
    config: CaRConfig
    folder: Path | None = None
    overwrite: bool = False


class RunTally:
    """Counts of a whole run, merged from the per-chunk snapshots. Touched by the worker lane only."""

    def __init__(self, images: int, early_failures: list[Failure]) -> None:
        self.start = time.monotonic()
        self.total = images + len(early_failures)
        self.early = len(early_failures)
        self.done = 0
        self.skipped = 0
        self.failures: list[Failure] = list(early_failures)
        self._base = (0, 0, list(self.failures))

    def begin_chunk(self) -> None:
        self._base = (self.done, self.skipped, list(self.failures))

    def update(self, p: AutoLabelProgress) -> AutoLabelProgress:
        done0, skipped0, failures0 = self._base
        self.done, self.skipped = done0 + p.done, skipped0 + p.skipped
        self.failures = failures0 + list(p.failures)
        return self.snapshot(p.event, p.current, p.image_id)

    def snapshot(self, event: str, current: str | None = None, image_id: int | None = None) -> AutoLabelProgress:
        processed = self.done + len(self.failures)
        todo = max(processed, self.total - self.skipped)
        elapsed = time.monotonic() - self.start
        labelled = processed - self.early      # unreadable files found while adding say nothing of the speed
        rate = eta = None
        if labelled > 0 and elapsed > 0:
            per_s = labelled / elapsed
            rate, eta = per_s * 60.0, (todo - processed) / per_s
        return AutoLabelProgress(event, self.total, todo, processed, self.done, self.skipped, len(self.failures),
                                 elapsed, rate, eta, current, image_id, tuple(self.failures))


class AutoLabelRunner(QObject):
    """Drives one auto-label run at a time; the window shows its signals."""

    progressed = Signal(object)               # AutoLabelProgress of the whole run
    imageLabelled = Signal(int, str, str)     # image id, file-list status ('auto' | 'error'), detail
    imagesAdded = Signal()                    # the folder brought new images into the project
    finished = Signal(object, bool, str)      # last AutoLabelProgress, stopped, error message ('' if none)

    def __init__(self, client: EngineClient, *, chunk: int = CHUNK, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.runner = client.runner
        self.chunk = max(1, int(chunk))
        self.project: Project | None = None
        self.request: AutoLabelRequest | None = None
        self._ids: list[int] = []
        self._cursor = 0
        self._tally: RunTally | None = None
        self._stopping = ""
        self.last: AutoLabelProgress | None = None
        self.reports: list[AutoLabelReport] = []

    @property
    def running(self) -> bool:
        return self.request is not None

    # ----- control (GUI thread)
    def start(self, project: Project, request: AutoLabelRequest) -> bool:
        """Start a run; False (and nothing happens) while another one is running."""
        if self.running:
            return False
        self.project, self.request = project, request
        self._ids, self._cursor, self._tally, self._stopping = [], 0, None, ""
        self.last, self.reports = None, []
        count_before = project.count_images()

        def plan(progress, cancel) -> tuple[list[int], RunTally, bool]:
            if request.folder is not None:
                ids, failures = add_folder(project, request.folder)
            else:
                ids, failures = [r.id for r in project.list_images()], []
            cancel.check()
            return ids, RunTally(len(ids), failures), project.count_images() != count_before

        self.runner.submit("autolabel_plan", plan, lane="io", label="Auto-label: listing images",
                           on_done=self._planned, on_failed=self._failed, on_cancelled=self._cancelled)
        return True

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop at the engine's next check; everything finished so far stays saved."""
        if self.running:
            self._stopping = reason or "cancelled"
            self.runner.cancel("autolabel_plan")
            self.runner.cancel("autolabel")

    # ----- the chain
    def _planned(self, planned: tuple[list[int], RunTally, bool]) -> None:
        if not self.running:
            return
        self._ids, self._tally, added = planned
        if added:
            self.imagesAdded.emit()
        self.last = self._tally.snapshot("planned")
        self.progressed.emit(self.last)
        self._next_chunk()

    def _next_chunk(self) -> None:
        if self._stopping or self._cursor >= len(self._ids):
            self._finish(bool(self._stopping), "")
            return
        ids = self._ids[self._cursor:self._cursor + self.chunk]
        self._cursor += len(ids)
        request, project, tally = self.request, self.project, self._tally
        assert request is not None and project is not None and tally is not None
        job = AutoLabelJob(request.concepts, request.config, image_ids=ids, overwrite=request.overwrite,
                           test_models=self.client.test_models)

        def whole_run(p: AutoLabelProgress) -> AutoLabelProgress:
            if p.event == "planned":
                tally.begin_chunk()
            return tally.update(p)

        first, last = self._cursor - len(ids) + 1, self._cursor
        self.client.run_autolabel(project, job, whole_run=whole_run, on_progress=self._progress,
                                  on_done=self._chunk_done, on_failed=self._failed, on_cancelled=self._cancelled,
                                  label=f"Auto-label (images {first}–{last} of {len(self._ids)})")

    def _finish(self, stopped: bool, error: str) -> None:
        last = self._tally.snapshot("finished") if self._tally is not None else self.last
        self.last = last
        self.request = None
        self.finished.emit(last, stopped, error)

    # ----- from the jobs (GUI thread)
    def _progress(self, payload: AutoLabelProgress) -> None:
        self.last = payload
        if payload.event == "image done" and payload.image_id is not None:
            self.imageLabelled.emit(payload.image_id, "auto", "")
        elif payload.event == "image failed" and payload.image_id is not None:
            reason = payload.failures[-1].reason if payload.failures else ""
            self.imageLabelled.emit(payload.image_id, "error", reason)
        self.progressed.emit(payload)

    def _chunk_done(self, report: AutoLabelReport) -> None:
        if not self.running:
            return
        self.reports.append(report)
        if report.stopped and not self._stopping:
            self._stopping = "cancelled"
        self._next_chunk()

    def _failed(self, err: JobError) -> None:
        if self.running:
            # After a cancel (e.g. the project was closed under it) a failure is just the stop.
            self._finish(True, "" if self._stopping else err.message)

    def _cancelled(self) -> None:
        if self.running:
            self._finish(True, "")
