"""Background work: every model call runs on a worker thread, never on the GUI thread.

``JobRunner`` owns a few serial lanes (a one-thread ``QThreadPool`` each: "engine" for model loading
and CaR runs, "sam" for embeddings and clicks, "io" for downloads and exports, "query" for read-only
project queries such as the review queue, so a slow query never delays opening an image). A job is a plain
function ``fn(progress, cancel) -> result``. Each submission of a *kind* ("car", "sam_click", ...) gets
a new generation number; submitting again supersedes (and cancels) the previous job of that kind, and
a result, progress report or error whose generation is no longer current is dropped on arrival, so a
stale CaR result never lands on the next image.
"""

from __future__ import annotations

import itertools
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from ..engine.cancel import CancelToken
from ..engine.errors import Cancelled, CaRDesktopError

log = logging.getLogger(__name__)

ProgressFn = Callable[[Any], None]
JobFn = Callable[[ProgressFn, CancelToken], Any]


@dataclass
class JobInfo:
    """What the GUI knows about a submitted job."""

    id: int
    kind: str
    generation: int
    lane: str
    token: CancelToken
    context: Any = None            # whatever the submitter wants back with the result (image key, ...)
    label: str = ""
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class JobError:
    """A failure reported by a worker: user errors carry their own message, bugs a traceback."""

    message: str
    user_error: bool
    exception_type: str
    details: str = ""


class _Signals(QObject):
    """Emitted from the worker thread; delivered queued to the runner living on the GUI thread."""

    progress = Signal(int, object)
    done = Signal(int, object)
    failed = Signal(int, object)
    cancelled = Signal(int)


class _Runnable(QRunnable):
    def __init__(self, job_id: int, fn: JobFn, token: CancelToken, signals: _Signals) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self._id, self._fn, self._token, self._signals = job_id, fn, token, signals

    def run(self) -> None:  # worker thread
        sig, job_id = self._signals, self._id
        try:
            if self._token.cancelled:
                sig.cancelled.emit(job_id)
                return
            result = self._fn(lambda p: sig.progress.emit(job_id, p), self._token)
            if self._token.cancelled:
                sig.cancelled.emit(job_id)
            else:
                sig.done.emit(job_id, result)
        except Cancelled:
            sig.cancelled.emit(job_id)
        except CaRDesktopError as exc:
            sig.failed.emit(job_id, JobError(str(exc), True, type(exc).__name__))
        except MemoryError:
            sig.failed.emit(job_id, JobError("Out of memory: try a smaller image or fewer concepts.", True,
                                             "MemoryError"))
        except Exception as exc:  # a bug: report it, keep the window alive
            log.exception("worker job %d failed", job_id)
            sig.failed.emit(job_id, JobError(f"{type(exc).__name__}: {exc}", False, type(exc).__name__,
                                             traceback.format_exc()))


class JobRunner(QObject):
    """Submits jobs to serial worker lanes and forwards only current results to the GUI."""

    started = Signal(object)                 # JobInfo
    progress = Signal(object, object)        # JobInfo, progress payload (engine Progress or tuple)
    finished = Signal(object, object)        # JobInfo, result
    failed = Signal(object, object)          # JobInfo, JobError
    cancelled = Signal(object)               # JobInfo
    busyChanged = Signal(bool)

    LANES = ("engine", "sam", "io", "query")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pools: dict[str, QThreadPool] = {}
        for lane in self.LANES:
            pool = QThreadPool(self)
            pool.setMaxThreadCount(1)
            pool.setExpiryTimeout(-1)
            self._pools[lane] = pool
        self._ids = itertools.count(1)
        self._generations: dict[str, int] = {}
        self._jobs: dict[int, JobInfo] = {}
        self._signals = _Signals()   # lives on the GUI thread: worker emits are queued here
        self._signals.progress.connect(self._on_progress)
        self._signals.done.connect(self._on_done)
        self._signals.failed.connect(self._on_failed)
        self._signals.cancelled.connect(self._on_cancelled)
        self.dropped = 0             # stale results dropped (tests read it)

    # ----- submitting
    def submit(self, kind: str, fn: JobFn, *, lane: str = "engine", context: Any = None, label: str = "",
               supersede: bool = True) -> JobInfo:
        """Queue ``fn`` on ``lane``; with ``supersede`` the previous job of this kind is cancelled."""
        generation = self._generations.get(kind, 0) + 1
        self._generations[kind] = generation
        if supersede:
            self.cancel(kind, keep_generation=True)
        job = JobInfo(next(self._ids), kind, generation, lane, CancelToken(), context, label)
        was_busy = self.busy()
        self._jobs[job.id] = job
        self._pools[lane].start(_Runnable(job.id, fn, job.token, self._signals))
        self.started.emit(job)
        if not was_busy:
            self.busyChanged.emit(True)
        return job

    def is_current(self, job: JobInfo) -> bool:
        return self._generations.get(job.kind, 0) == job.generation and not job.token.cancelled

    def invalidate(self, kind: str) -> None:
        """Make any running job of ``kind`` stale (its result will be dropped) and cancel it."""
        self._generations[kind] = self._generations.get(kind, 0) + 1
        self.cancel(kind, keep_generation=True)

    def cancel(self, kind: str | None = None, keep_generation: bool = False) -> int:
        """Ask running jobs (of one kind, or all) to stop; returns how many were asked."""
        n = 0
        for job in list(self._jobs.values()):
            if kind is None or job.kind == kind:
                if not job.token.cancelled:
                    job.token.cancel()
                    n += 1
        return n

    def running(self, kind: str | None = None) -> list[JobInfo]:
        return [j for j in self._jobs.values() if kind is None or j.kind == kind]

    def busy(self, lane: str | None = None) -> bool:
        return any(lane is None or j.lane == lane for j in self._jobs.values())

    def wait_idle(self, timeout_ms: int = 5000) -> bool:
        """Block until every lane is empty (used at shutdown; the GUI is not expected to repaint)."""
        ok = True
        for pool in self._pools.values():
            ok = pool.waitForDone(timeout_ms) and ok
        return ok

    def shutdown(self, timeout_ms: int = 3000) -> bool:
        self.cancel()
        for pool in self._pools.values():
            pool.clear()
        return self.wait_idle(timeout_ms)

    # ----- arriving from the workers (GUI thread)
    def _take(self, job_id: int) -> JobInfo | None:
        job = self._jobs.pop(job_id, None)
        if not self._jobs:
            self.busyChanged.emit(False)
        return job

    @Slot(int, object)
    def _on_progress(self, job_id: int, payload: Any) -> None:
        job = self._jobs.get(job_id)
        if job is not None and self.is_current(job):
            self.progress.emit(job, payload)

    @Slot(int, object)
    def _on_done(self, job_id: int, result: Any) -> None:
        job = self._take(job_id)
        if job is None:
            return
        if not self.is_current(job):
            self.dropped += 1
            log.debug("dropped stale %s result (generation %d)", job.kind, job.generation)
            self.cancelled.emit(job)
            return
        self.finished.emit(job, result)

    @Slot(int, object)
    def _on_failed(self, job_id: int, error: JobError) -> None:
        job = self._take(job_id)
        if job is None:
            return
        if not self.is_current(job):
            self.dropped += 1
            self.cancelled.emit(job)
            return
        self.failed.emit(job, error)

    @Slot(int)
    def _on_cancelled(self, job_id: int) -> None:
        job = self._take(job_id)
        if job is not None:
            self.cancelled.emit(job)
