"""``batch --ray``: auto-label a project's images on a Ray cluster, with the local batch's rules.

The driver (this process) plans the run with the local batch's resume rule (``run_job``: reviewed and
edited images are protected, images with this run key, or with ``skip_failed`` failed and unchanged,
are skipped), claims the images to do in the project (so another run on it leaves them alone), builds a
Ray Dataset of the files still to do with ``ray.data.read_binary_files`` (a local folder is read on the
driver's own node, so the worker machines need no access to it; an ``s3://`` / ``gs://`` folder is read
anywhere through its pyarrow file system, the workers getting this process's ``STORAGE_ENV`` variables),
and ``map_batches`` a fixed pool of ``CaRWorker`` actors (one CaR pipeline each; ``workers`` actors of
``gpus_per_worker`` GPUs and ``cpus_per_worker`` CPUs). Answers
stream back in the order they finish; the driver writes each image in one transaction with the local
batch's ``save_car_result``, so the project has exactly one writer; a failure goes to the project's
failure list as in the local batch.

Faults: Ray Data creates its actors with unlimited restarts and task retries, so an actor that dies is
replaced and its images are labelled again; the driver ignores a second answer for an image it already
handled, so nothing is written twice. Killing the driver loses only the images in flight (each saved
image is committed): the next run's plan skips them. ``stop`` ends the run once the answers already
received, and the next one to arrive, are saved (work still on the workers is dropped); ``cancel`` ends
it at once. Ray itself is optional (``pip install 'car-desktop[ray]'``) and is
imported only when a run starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .annotations import Project
from .autolabel import (
    AutoLabelJob,
    AutoLabelReport,
    ProgressClock,
    ProgressFn,
    claim_for_run,
    count_outcome,
    count_skip,
    run_job,
    save_car_result,
    short_reason,
    size_changed,
)
from .compact_result import expand_result
from .engine.cancel import CancelToken
from .engine.errors import CaRDesktopError
from .imagefiles import max_file_bytes, too_many_bytes_message
from .imagesource import STORAGE_ENV, RemoteImages
from .ray_worker import CaRWorker, PipelineFactory

log = logging.getLogger(__name__)

INSTALL_HINT = ("Ray is not installed. Install it with:  pip install 'car-desktop[ray]'  "
                "(or: pip install 'ray[data]>=2.40,<3'), on this machine and on every machine of the cluster.")
#: Environment variables passed on to the workers when set here: where the weights are (a shared weights
#: folder), and whether downloads are allowed.
FORWARDED_ENV = ("CAR_DESKTOP_CACHE", "CAR_DESKTOP_CONFIG", "CAR_DESKTOP_NO_DOWNLOAD", "HF_HOME",
                 "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_ENDPOINT")
_ADDRESS = re.compile(r"^(auto|local|ray://[^\s/]+:\d+|[^\s/:]+:\d+)$")
#: Answers the driver may hold before Ray Data is slowed down (each is a few kB of RLE).
_QUEUE_SIZE = 64


class RayUnavailableError(CaRDesktopError):
    """``--ray`` was asked for but Ray (with Ray Data) is not installed."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run. ``address``: "local" starts a Ray instance on this machine, "auto" joins
    the cluster this machine belongs to, "ray://host:port" or "host:port" a given one. ``workers``: the
    size of the actor pool (None: one per GPU of the cluster, or 1 without GPUs). ``gpus_per_worker``
    (fractions share a GPU; None: 1 when the cluster has a GPU, else 0) and ``cpus_per_worker`` are each
    actor's Ray resources."""

    address: str = "local"
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    verbose: bool = False

    def __post_init__(self) -> None:
        if not _ADDRESS.match(self.address):
            raise CaRDesktopError(f"--ray {self.address!r} is not a Ray address: give none (a local Ray), "
                                  "'auto' (the cluster of this machine), ray://HOST:PORT or HOST:PORT")
        if self.workers is not None and self.workers < 1:
            raise CaRDesktopError(f"--workers must be at least 1 (got {self.workers})")
        if self.gpus_per_worker is not None and not 0 <= self.gpus_per_worker <= 64:
            raise CaRDesktopError(f"--gpus-per-worker must be between 0 and 64 (got {self.gpus_per_worker})")
        if not 0 < self.cpus_per_worker <= 1024:
            raise CaRDesktopError(f"--cpus-per-worker must be above 0 (got {self.cpus_per_worker})")


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or RayUnavailableError saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayUnavailableError(INSTALL_HINT) from None
    return ray


@contextmanager
def connected(ray: Any, options: RayOptions) -> Iterator[None]:
    """Ray connected as ``options.address`` says for the block; shut down after it only if started here.
    A Ray already initialised in this process (by a caller or a test) is used as it is."""
    if ray.is_initialized():
        yield
        return
    level = logging.INFO if options.verbose else logging.ERROR
    kwargs: dict[str, Any] = {"address": options.address, "logging_level": level, "log_to_driver": options.verbose}
    if options.address == "local":
        kwargs["include_dashboard"] = False
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise CaRDesktopError(f"cannot connect to the Ray cluster at {options.address}: {exc}") from None
    try:
        yield
    finally:
        ray.shutdown()


def pool_shape(resources: dict[str, float], options: RayOptions) -> tuple[int, float, float]:
    """(workers, GPUs per worker, CPUs per worker) for a cluster with these total resources. Raises
    CaRDesktopError when not even one worker fits."""
    total_gpus, total_cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    gpus = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if total_gpus >= 1 else 0.0)
    cpus = options.cpus_per_worker
    if gpus > total_gpus or cpus > total_cpus:
        raise CaRDesktopError(f"one worker needs {gpus:g} GPU and {cpus:g} CPU, but the Ray cluster has "
                              f"{total_gpus:g} GPU and {total_cpus:g} CPU in all; lower --gpus-per-worker "
                              "or --cpus-per-worker")
    workers = options.workers or (max(1, int(total_gpus // gpus)) if gpus else 1)
    if workers * gpus > total_gpus or workers * cpus > total_cpus:
        log.warning("%d workers need %g GPU and %g CPU; the cluster has %g and %g now: the others start "
                    "when resources free up or the cluster grows", workers, workers * gpus, workers * cpus,
                    total_gpus, total_cpus)
    return workers, gpus, cpus


def build_dataset(ray: Any, files: list[str], options: RayOptions, worker_args: dict[str, Any],
                  filesystem: Any = None) -> Any:
    """The lazy Ray Dataset: the files' bytes mapped by a pool of CaRWorker actors. Local files are read
    on this node; with ``filesystem`` (a pyarrow S3 / GCS file system, ``files`` its paths) anywhere in
    the cluster, with the storage credentials of this process's environment (``STORAGE_ENV``)."""
    workers, gpus, cpus = pool_shape(ray.cluster_resources(), options)
    workers = min(workers, len(files))  # an actor with no image would only load models
    names = FORWARDED_ENV + (STORAGE_ENV if filesystem is not None else ())
    env = {k: os.environ[k] for k in names if k in os.environ}
    runtime_env = {"env_vars": env} if env else None
    if filesystem is None:
        where: dict[str, Any] = {"label_selector": {"ray.io/node-id": ray.get_runtime_context().get_node_id()}}
    else:
        where = {"filesystem": filesystem, "runtime_env": runtime_env}
    # One file per block, so a block is one image of work: answers stream image by image and a retry
    # after a worker died redoes one image. Reads take no CPU slot (they would compete with the actors
    # for the driver node's CPUs) and are capped to a few per worker.
    ds = ray.data.read_binary_files(
        files, include_paths=True, ignore_missing_paths=True, override_num_blocks=len(files), num_cpus=0,
        concurrency=2 * workers + 2, **where)
    return ds.map_batches(
        CaRWorker, batch_size=1, batch_format="numpy", fn_constructor_kwargs=worker_args,
        compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=gpus, num_cpus=cpus,
        runtime_env=runtime_env)


@contextmanager
def _quiet_ray_data(ray: Any, verbose: bool) -> Iterator[None]:
    """Ray Data's own progress bars and log lines off: the driver draws the batch's progress bar."""
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.enable_auto_log_stats)
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    if not verbose:
        ctx.enable_progress_bars = ctx.print_on_execution_start = ctx.enable_auto_log_stats = False
        data_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.enable_auto_log_stats = saved
        data_log.setLevel(level)


class _Answers:
    """Consumes the dataset in a thread, so the driver can answer stop and cancel while workers run.

    ``get`` returns (path, payload), None on timeout or at the end (then ``finished`` is True), or raises
    what the dataset raised. ``close`` makes the thread stop after its current answer, which closes the
    dataset's iterator and so ends its tasks and actors; ``abandon`` also drops whatever it still reads.
    """

    _END = object()

    def __init__(self, dataset: Any) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=_QUEUE_SIZE)
        self._closing = threading.Event()
        self._abandoned = threading.Event()
        self.finished = False
        self._thread = threading.Thread(target=self._read, args=(dataset,), name="ray-answers", daemon=True)
        self._thread.start()

    def _read(self, dataset: Any) -> None:
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for path, payload in zip(batch["path"], batch["payload"]):
                    self._put((str(path), str(payload)))
                if self._closing.is_set():
                    break
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the driver thread, which raises it
            self._put(exc)

    def _put(self, item: object) -> None:
        while not self._abandoned.is_set():
            try:
                self._q.put(item, timeout=0.25)
                return
            except queue.Full:
                continue

    def get(self, timeout: float) -> tuple[str, str] | None:
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is self._END:
            self.finished = True
            return None
        if isinstance(item, BaseException):
            self.finished = True
            raise item
        return item

    def close(self) -> None:
        self._closing.set()

    def abandon(self) -> None:
        self._closing.set()
        self._abandoned.set()

    def join(self) -> None:
        self._thread.join()


def run_autolabel_ray(project: Project, job: AutoLabelJob, options: RayOptions, *,
                      progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                      stop: CancelToken | None = None,
                      pipeline_factory: PipelineFactory | None = None) -> AutoLabelReport:
    """Auto-label ``job`` into ``project`` on Ray; same report, progress events and errors as
    ``run_autolabel`` (no "image started" events: the driver only sees images finish)."""
    ray = require_ray()

    def loop(todo: list[int], key: str, report: AutoLabelReport, clock: ProgressClock, emit: Callable[..., None],
             owner: str) -> None:
        # Workers get the job without its image list: they are handed images, not ids.
        worker_args = {"job": dataclasses.replace(job, image_ids=None), "test_models": bool(job.test_models),
                       "pipeline_factory": pipeline_factory}
        with connected(ray, options), _quiet_ray_data(ray, options.verbose):
            _drive(ray, project, job, todo, key, report, clock, emit, owner, options, worker_args, cancel, stop)

    return run_job(project, job, bool(job.test_models), loop, progress)


def _drive(ray: Any, project: Project, job: AutoLabelJob, todo: list[int], key: str, report: AutoLabelReport,
           clock: ProgressClock, emit: Callable[..., None], owner: str, options: RayOptions,
           worker_args: dict[str, Any],
           cancel: CancelToken | None, stop: CancelToken | None) -> None:
    records = {image_id: project.get_image(image_id) for image_id in todo}
    mine = _claim_all(project, todo, owner, key, job.overwrite, report, clock)
    source = project.image_source()
    handled: set[int] = set()
    if isinstance(source, RemoteImages):
        by_rel = {records[i].rel_path: i for i in mine}
        present, too_big = _remote_files(source, list(by_rel))
        for rel, why in too_big.items():  # refused before any worker reads them
            handled.add(by_rel[rel])
            count_outcome(project, why, rel, by_rel[rel], key, owner, report, clock, emit)

        def image_of(path: str) -> int | None:
            return by_rel.get(source.rel_of(path) or "")
        filesystem = source.filesystem
    else:
        by_file = {os.path.normpath(os.path.join(source.root, records[i].rel_path)): i for i in mine}
        # Ray's reader refuses a list of missing files only; one that vanishes later it drops (listed below).
        present = [f for f in by_file if os.path.isfile(f)]

        def image_of(path: str) -> int | None:
            return by_file.get(os.path.normpath(path))
        filesystem = None
    answers = _Answers(build_dataset(ray, present, options, worker_args, filesystem)) if present else None
    clean = False
    try:
        while answers is not None and not answers.finished:
            if cancel is not None and cancel.cancelled:
                report.stopped = True
                return
            if stop is not None and stop.cancelled and not report.stopped:
                report.stopped = True
                answers.close()
            try:
                answer = answers.get(timeout=0.25)
            except Exception as exc:  # noqa: BLE001 - Ray's own errors: the cluster, not one image
                raise CaRDesktopError(f"the Ray run failed: {type(exc).__name__}: {exc}. Every image saved so "
                                      "far is kept; run the same command again to resume.") from None
            if answer is None:
                continue
            image_id = image_of(answer[0])
            if image_id is None or image_id in handled:
                log.debug("ignoring a second answer for %s", answer[0])
                continue
            handled.add(image_id)
            rel = records[image_id].rel_path
            failure = _store(project, image_id, rel, json.loads(answer[1]), key, report, owner)
            count_outcome(project, failure, rel, image_id, key, owner, report, clock, emit)
        clean = True
    finally:
        if answers is not None and clean:
            answers.close()
            answers.join()
        elif answers is not None:  # cancelled or failed: do not wait for the workers' current images
            answers.abandon()
    if not report.stopped:
        for image_id in mine:
            if image_id not in handled:
                count_outcome(project, "the file could not be read (missing?)", records[image_id].rel_path,
                              image_id, key, owner, report, clock, emit)


def _remote_files(source: RemoteImages, rels: list[str]) -> tuple[list[str], dict[str, str]]:
    """(the file-system paths of the files that are there and within the size limit, {rel: why} for
    those over it): from one listing of the root (a thousand files a request, not one request a file),
    so the limit is checked before any byte is read."""
    limit = max_file_bytes()
    sizes = source.sizes()
    present, too_big = [], {}
    for rel in rels:
        size = sizes.get(rel)
        if size is None:
            continue  # gone: counted as unreadable once the run ends
        if size > limit:
            too_big[rel] = short_reason(too_many_bytes_message(source.location(rel), size, limit), rel)
        else:
            present.append(source.path_of(rel))
    return present, too_big


def _claim_all(project: Project, todo: list[int], owner: str, key: str, overwrite: bool, report: AutoLabelReport,
               clock: ProgressClock) -> list[int]:
    """Claim the images to do for this run before any is sent out (the local batch claims each just
    before decoding it); those another run holds, or finished meanwhile, are skipped. A few hundred
    claims per transaction."""
    mine: list[int] = []
    for start in range(0, len(todo), 500):
        with project.batch():
            for image_id in todo[start:start + 500]:
                skip = claim_for_run(project, image_id, owner, key, overwrite)
                if skip is None:
                    mine.append(image_id)
                else:
                    count_skip(report, skip)
                    clock.todo -= 1
    return mine


def _store(project: Project, image_id: int, rel: str, answer: dict[str, Any], key: str, report: AutoLabelReport,
           owner: str) -> str | None:
    """Save one worker answer as the local batch would; None when saved, else ``_SKIPPED`` or the reason."""
    if answer["status"] == "fatal":
        raise CaRDesktopError(answer["error"])
    if answer["status"] != "done":
        return str(answer["error"])
    # The size is checked before the masks are decoded: it is what sizes their memory.
    reason = size_changed(tuple(answer["result"]["image_size"]), project.get_image(image_id))
    if reason is not None:
        return reason
    return save_car_result(project, image_id, rel, expand_result(answer["result"]), key, report, owner)
