"""Background work: every model call runs on a worker thread, never on the GUI thread.

``JobRunner`` owns a few serial lanes (a one-thread ``QThreadPool`` each: "engine" for model loading
and CaR runs, "sam" for embeddings and clicks, "io" for images, downloads, exports and imports, "query"
for read-only project queries such as the review queue, so a slow query never delays opening an image).
A job is a plain function ``fn(progress, cancel) -> result``; whoever submits it passes its own typed
callbacks (``on_done(result)``, ``on_failed(JobError)``, ``on_cancelled()``, ``on_progress(payload)``),
which run on the GUI thread for that job only, so no listener can receive another job's result.

Each submission of a *kind* ("car", "sam_click", ...) gets a new generation number; submitting again
supersedes (and cancels) the previous job of that kind, and a result, progress report or error whose
generation is no longer current is dropped on arrival (reported to ``on_cancelled``), so a stale CaR
result never lands on the next image. The runner's own signals (``started``, ``progress``, ``ended``)
are for displays such as the status bar, and carry no results.
"""

from __future__ import annotations

import itertools
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from ..cancel import CancelToken
from ..errors import Cancelled, CaRDesktopError

log = logging.getLogger(__name__)

T = TypeVar("T")
ProgressFn = Callable[[Any], None]
JobFn = Callable[[ProgressFn, CancelToken], T]


@dataclass
class JobInfo:
    """What the GUI knows about a submitted job."""

    id: int
    kind: str
    generation: int
    lane: str
    token: CancelToken
    label: str = ""
    quiet: bool = False            # too short to deserve the status bar (SAM clicks)
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class JobError:
    """A failure reported by a worker: user errors carry their own message, bugs a traceback."""

    message: str
    user_error: bool
    exception_type: str
    details: str = ""


@dataclass
class _Callbacks(Generic[T]):
    on_done: Callable[[T], None] | None = None
    on_failed: Callable[[JobError], None] | None = None
    on_cancelled: Callable[[], None] | None = None
    on_progress: Callable[[Any], None] | None = None


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
    """Submits jobs to serial worker lanes and hands only current results to their submitters."""

    started = Signal(object)                 # JobInfo
    progress = Signal(object, object)        # JobInfo, progress payload (for displays)
    ended = Signal(object, str)              # JobInfo, "done" | "failed" | "cancelled"
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
        self._jobs: dict[int, tuple[JobInfo, _Callbacks[Any]]] = {}
        self._signals = _Signals()   # lives on the GUI thread: worker emits are queued here
        self._signals.progress.connect(self._on_progress)
        self._signals.done.connect(self._on_done)
        self._signals.failed.connect(self._on_failed)
        self._signals.cancelled.connect(self._on_cancelled)
        self.dropped = 0             # stale results dropped (tests read it)

    # ----- submitting
    def submit(self, kind: str, fn: JobFn[T], *, lane: str = "engine", label: str = "", quiet: bool = False,
               on_done: Callable[[T], None] | None = None, on_failed: Callable[[JobError], None] | None = None,
               on_cancelled: Callable[[], None] | None = None,
               on_progress: Callable[[Any], None] | None = None) -> JobInfo:
        """Queue ``fn`` on ``lane``; the previous job of this kind is cancelled and its result dropped."""
        self.invalidate(kind)
        job = JobInfo(next(self._ids), kind, self._generations[kind], lane, CancelToken(), label, quiet)
        was_busy = self.busy()
        self._jobs[job.id] = (job, _Callbacks(on_done, on_failed, on_cancelled, on_progress))
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
        self.cancel(kind)

    def cancel(self, kind: str | None = None) -> int:
        """Ask running jobs (of one kind, or all) to stop; returns how many were asked."""
        n = 0
        for job, _cb in list(self._jobs.values()):
            if (kind is None or job.kind == kind) and not job.token.cancelled:
                job.token.cancel()
                n += 1
        return n

    def running(self, kind: str | None = None) -> list[JobInfo]:
        return [j for j, _cb in self._jobs.values() if kind is None or j.kind == kind]

    def busy(self, lane: str | None = None) -> bool:
        return any(lane is None or j.lane == lane for j, _cb in self._jobs.values())

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
    def _take(self, job_id: int) -> tuple[JobInfo, _Callbacks[Any]] | None:
        entry = self._jobs.pop(job_id, None)
        if not self._jobs:
            self.busyChanged.emit(False)
        return entry

    def _current(self, job_id: int) -> tuple[JobInfo, _Callbacks[Any]] | None:
        """The finished job and its callbacks, or None when it is stale (then reported as cancelled)."""
        entry = self._take(job_id)
        if entry is None:
            return None
        job, cb = entry
        if self.is_current(job):
            return entry
        self.dropped += 1
        log.debug("dropped stale %s result (generation %d)", job.kind, job.generation)
        self.ended.emit(job, "cancelled")
        if cb.on_cancelled is not None:
            cb.on_cancelled()
        return None

    @Slot(int, object)
    def _on_progress(self, job_id: int, payload: Any) -> None:
        entry = self._jobs.get(job_id)
        if entry is not None and self.is_current(entry[0]):
            job, cb = entry
            if cb.on_progress is not None:
                cb.on_progress(payload)
            self.progress.emit(job, payload)

    def _deliver(self, job_id: int, how: str, pick: Callable[[_Callbacks[Any]], Callable[[Any], None] | None],
                 value: Any) -> None:
        entry = self._current(job_id)
        if entry is not None:
            job, cb = entry
            self.ended.emit(job, how)
            callback = pick(cb)
            if callback is not None:
                callback(value)

    @Slot(int, object)
    def _on_done(self, job_id: int, result: Any) -> None:
        self._deliver(job_id, "done", lambda cb: cb.on_done, result)

    @Slot(int, object)
    def _on_failed(self, job_id: int, error: JobError) -> None:
        self._deliver(job_id, "failed", lambda cb: cb.on_failed, error)

    @Slot(int)
    def _on_cancelled(self, job_id: int) -> None:
        entry = self._take(job_id)
        if entry is not None:
            job, cb = entry
            self.ended.emit(job, "cancelled")
            if cb.on_cancelled is not None:
                cb.on_cancelled()
