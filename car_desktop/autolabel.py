"""Auto-labelling many images of a project with one concept list: the loop shared by the CLI and the GUI.

``run_autolabel(pipeline, project, job)`` walks the job's images, skips those already labelled with the
same concepts and settings (the *run key*, stored per image in the project's settings in the same
transaction as the masks), skips images a person reviewed or edited, runs CaR on the rest and stores
each image's masks, provenance and 'auto' status as one transaction, so stopping at any moment loses
at most the image in progress. A background thread decodes the next image while the current one runs;
the pipeline keeps its models and its text-embedding cache across the whole folder. A broken image
(unreadable, truncated, over the pixel limit) is listed in the report and kept in the project's
failure list with the file's hash, never raised; with ``skip_failed`` a file that failed before and
has not changed since is skipped instead of failing again. Each image is claimed in the project
before it is labelled, so two runs on one project share the images instead of both labelling all of
them (a claim of a process that died is taken over). Progress goes to a callback (count, rate, time left,
current image, failures); two tokens stop the loop: ``stop`` after the current image, ``cancel`` at
once (the current image's work is discarded). No Qt, no printing: the CLI and the GUI worker format
the progress themselves.

``add_folder`` puts a folder's images into the project (optionally one shard of them, chosen by a
stable hash of the relative path, so several processes can split a folder) and reports the files that
cannot be read (``scan_folder`` also says how many were skipped as failed and unchanged);
``merge_projects`` combines the projects those processes wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from .annotations import ImageRecord, Project
from .annotations.auto_labels import AUTO_LABELS_SETTING
from .annotations.car_results import REMOVED_SETTING, apply_car_result
from .annotations.errors import ProjectError
from .annotations.provenance import ORIGIN_AUTOLABEL
from .cancel import CancelToken
from .engine.concepts import ConceptList
from .engine.config import CaRConfig
from .engine.errors import Cancelled, ImageLoadError
from .errors import CaRDesktopError
from .imagesource import ImageSource

if TYPE_CHECKING:
    from .engine.results import CaRResult

log = logging.getLogger(__name__)

#: Settings key prefix of the per-image run key: ``autolabel.run_key.<image id>`` -> run key string.
RUN_KEY_SETTING = "autolabel.run_key."
#: The per-image settings that travel with an image when projects are merged: its run key, auto-label
#: record and removed-concept list (keyed ``<prefix><image id>``).
IMAGE_SETTINGS = (RUN_KEY_SETTING, AUTO_LABELS_SETTING, REMOVED_SETTING)
#: Settings key of the last auto-label run (concepts, preset, run key): lets the GUI prefill its dialog.
LAST_RUN_SETTING = "autolabel.last_run"
#: Config fields that do not change what is computed, left out of the run key.
_RUN_KEY_IGNORED = frozenset({"device", "crf_in_subprocess"})

#: Why an image was skipped (keys of ``AutoLabelReport.skipped_by_reason``).
SKIP_DONE = "already labelled with these concepts and settings"
SKIP_REVIEWED = "reviewed by a person"
SKIP_EDITED = "has annotations a person made, edited or imported"
SKIP_FAILED = "failed before and unchanged since (--skip-failed)"
SKIP_CLAIMED = "being labelled by another run"


class Failure(NamedTuple):
    """One image that could not be labelled: its path (relative to the image root when known) and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class AutoLabelJob:
    """What to auto-label: ``concepts`` on ``image_ids`` (None: every image of the project) with ``config``.

    ``concepts`` is a ``ConceptList``; typed text or a list of entries ("car | automobile" for
    synonyms) is parsed into one when the job is made, so a typing mistake raises ConceptError here.

    ``overwrite`` also redoes images already labelled with the same run key. ``skip_failed`` skips
    images whose labelling failed before if the file has not changed since (same size and SHA-256).
    Images with status 'reviewed' or with annotations a person made or edited are never touched,
    whatever the options.
    ``test_models`` (part of the run key) says whether the pipeline uses the tiny test models; None
    takes the pipeline's own ``test_models`` attribute.
    """

    concepts: ConceptList
    config: CaRConfig
    image_ids: Sequence[int] | None = None
    overwrite: bool = False
    test_models: bool | None = None
    skip_failed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "concepts", ConceptList.parse(self.concepts))


@dataclass(frozen=True)
class AutoLabelProgress:
    """A snapshot of the run, sent to the progress callback.

    ``event`` is "planned" (after the skip check), "image started", "image done", "image failed" or
    "finished". ``processed`` counts images finished in this run (done + failed), out of ``todo``
    (the images not skipped); ``total`` is every image of the job. ``rate_per_min`` and ``eta_s`` are
    None until an image has finished. ``image_id`` / ``current`` name the image of the event.
    """

    event: str
    total: int
    todo: int
    processed: int
    done: int
    skipped: int
    failed: int
    elapsed_s: float
    rate_per_min: float | None
    eta_s: float | None
    current: str | None = None
    image_id: int | None = None
    failures: tuple[Failure, ...] = ()

    @property
    def fraction(self) -> float:
        return 1.0 if self.todo == 0 else self.processed / self.todo


@dataclass
class AutoLabelReport:
    """What a run did. ``failed`` lists every image that could not be labelled, with the reason."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[Failure] = field(default_factory=list)
    elapsed: float = 0.0
    stopped: bool = False          # stop or cancel requested before every image was processed
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    done_ids: list[int] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed CaRResult.timings
    run_key: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed


ProgressFn = Callable[[AutoLabelProgress], None]


class Pipeline(Protocol):
    """What the loop asks of a CaR pipeline (``engine.pipeline.CaRPipeline``)."""

    @property
    def test_models(self) -> bool: ...
    def run(self, image: np.ndarray, concepts: ConceptList, *, config: CaRConfig | None = ...,
            cancel: CancelToken | None = ...) -> CaRResult: ...


# ---------------------------------------------------------------------------------------- run key
def run_key(concepts: ConceptList, config: CaRConfig, *, test_models: bool = False) -> str:
    """A short stable digest of what decides an image's auto-labels: the concepts (order kept, in the
    user's form), every config field that changes the computation, and whether the test models are used."""
    cfg = {k: v for k, v in config.to_dict().items() if k not in _RUN_KEY_IGNORED}
    # Checked here (the worker): the window sends long concepts unshortened, the CLI shortened; same key.
    labels = ConceptList.parse(concepts).checked().labels
    payload = {"concepts": labels, "config": cfg, "test_models": bool(test_models)}
    text = json.dumps(payload, sort_keys=True, default=list, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def image_run_key(project: Project, image_id: int) -> str | None:
    """The run key the image was last auto-labelled with, or None."""
    return project.get_setting(f"{RUN_KEY_SETTING}{image_id}")


# ---------------------------------------------------------------------------------------- shards
def shard_index(rel_path: str, count: int) -> int:
    """0-based shard of an image: a stable hash of its '/'-separated relative path, modulo ``count``."""
    digest = hashlib.sha256(Path(rel_path).as_posix().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (1-based: '1/3', '2/3', '3/3') -> (i - 1, n). Raises ValueError with a readable message."""
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise ValueError(f"--shard must look like i/n, e.g. 1/4 (got {text!r})") from None
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard i/n needs 1 <= i <= n (got {text!r})")
    return i - 1, n


# ---------------------------------------------------------------------------------------- folder
@dataclass
class FolderScan:
    """What ``scan_folder`` found: the images to work on (ids sorted by relative path), the files
    that could not be added (each with its reason), and how many were skipped because they failed
    before and have not changed (only with ``skip_failed``)."""

    ids: list[int] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    skipped_unchanged: int = 0


def scan_folder(project: Project, folder: str | os.PathLike, shard: tuple[int, int] | None = None, *,
                skip_failed: bool = False) -> FolderScan:
    """Add the image files under ``folder`` (inside the project's image root) to the project.

    With ``shard=(i, n)`` only the files whose ``shard_index(rel_path, n) == i``. Known images are not
    read again; new ones are added 200 per transaction. A file that cannot be added (unreadable,
    empty, not an image, over the pixel limit) is a failure with its reason, kept in the project;
    with ``skip_failed`` such a file is not even tried again while it is unchanged.
    """
    result = FolderScan()

    def select(rel: str) -> bool:
        if shard is not None and shard_index(rel, shard[1]) != shard[0]:
            return False
        if skip_failed and project.find_image(rel) is None and project.failure_unchanged(rel) is not None:
            result.skipped_unchanged += 1
            return False
        return True

    records, failures = project.add_folder(folder, select=select)
    result.ids = [r.id for r in records]
    result.failures = [Failure(f.rel_path, f.reason) for f in failures]
    return result


def add_folder(project: Project, folder: str | os.PathLike,
               shard: tuple[int, int] | None = None) -> tuple[list[int], list[Failure]]:
    """``scan_folder`` without the skip count: (image ids sorted by relative path, failures)."""
    scan = scan_folder(project, folder, shard)
    return scan.ids, scan.failures


# ---------------------------------------------------------------------------------------- the loop
def _protection(project: Project, image_id: int) -> str | None:
    """Why auto-labelling must not touch this image, or None."""
    if project.get_image(image_id).status == "reviewed":
        return SKIP_REVIEWED
    if any(a.edited or a.source != "car" for a in project.list_annotations(image_id)):
        return SKIP_EDITED
    return None


def decode_image(path: Path | str, data: bytes | None = None) -> np.ndarray:
    """The engine's uint8 RGB array of a file (or of its bytes, ``path`` then only naming it): a decoder
    thread's job here, a Ray worker's in ``ray_worker``."""
    from .engine.image_io import load_image
    from .engine.pipeline import as_rgb_uint8

    return as_rgb_uint8(load_image(path, data))


def read_image(source: ImageSource, rel: str) -> np.ndarray:
    """Decode one image of a project's source: a local file directly, a remote one from its bytes."""
    if not source.remote:
        return decode_image(Path(source.location(rel)))
    return decode_image(source.location(rel), source.read_bytes(rel))


class ProgressClock:
    """Counts, rate and time left for progress snapshots."""

    def __init__(self, report: AutoLabelReport, todo: int) -> None:
        self.report = report
        self.todo = todo
        self.start = time.monotonic()
        self.processed = 0

    def snapshot(self, event: str, current: str | None = None, image_id: int | None = None) -> AutoLabelProgress:
        elapsed = time.monotonic() - self.start
        rate = eta = None
        if self.processed and elapsed > 0:
            per_s = self.processed / elapsed
            rate = per_s * 60.0
            eta = (self.todo - self.processed) / per_s
        r = self.report
        return AutoLabelProgress(event, r.total, self.todo, self.processed, r.done, r.skipped, len(r.failed),
                                 elapsed, rate, eta, current, image_id, tuple(r.failed))


def plan_autolabel(project: Project, job: AutoLabelJob,
                   test_models: bool) -> tuple[str, AutoLabelReport, list[int]]:
    """The resume rule, shared by every way of running a job: (run key, a report with the skipped
    images counted, the image ids still to do in job order). An image is skipped when a person reviewed
    or edited it, when (without ``overwrite``) it already has this run key, or (with ``skip_failed``)
    when it failed before and has not changed since."""
    key = run_key(job.concepts, job.config, test_models=test_models)
    report = AutoLabelReport(run_key=key)
    ids = [r.id for r in project.list_images()] if job.image_ids is None else list(dict.fromkeys(job.image_ids))
    report.total = len(ids)
    todo: list[int] = []
    for image_id in ids:
        reason = _protection(project, image_id)
        if reason is None and not job.overwrite and image_run_key(project, image_id) == key:
            reason = SKIP_DONE
        if reason is None and job.skip_failed and project.failure_unchanged(project.get_image(image_id).rel_path):
            reason = SKIP_FAILED
        if reason is None:
            todo.append(image_id)
        else:
            count_skip(report, reason)
    log.info("auto-label %d images: %d to do, %d skipped (%s)", len(ids), len(todo), report.skipped,
             report.skipped_by_reason)
    return key, report, todo


#: A run's image loop, given ``(todo, key, report, clock, emit, owner)``: claims and labels the images to
#: do, and counts each one with ``count_outcome`` (see ``run_job``).
ImageLoop = Callable[[list[int], str, AutoLabelReport, "ProgressClock", Callable[..., None], str], None]


def run_job(project: Project, job: AutoLabelJob, test_models: bool, loop: ImageLoop,
            progress: ProgressFn | None = None) -> AutoLabelReport:
    """The frame shared by every way of running a job (``run_autolabel`` here, ``run_autolabel_ray``):
    plan with the resume rule, emit "planned", record the run (for the GUI's dialog), hand the images to
    do to ``loop`` under a new claim owner, release that owner's claims however the loop ended, then
    emit "finished" and return the report."""
    t0 = time.monotonic()
    key, report, todo = plan_autolabel(project, job, test_models)
    clock = ProgressClock(report, len(todo))

    def emit(event: str, current: str | None = None, image_id: int | None = None) -> None:
        if progress is not None:
            progress(clock.snapshot(event, current, image_id))

    emit("planned")
    if todo:
        project.set_setting(LAST_RUN_SETTING, {"concepts": job.concepts.labels, "preset": job.config.preset,
                                               "sam_mode": job.config.sam_mode, "run_key": key})
        owner = project.new_claim_owner()
        try:
            loop(todo, key, report, clock, emit, owner)
        finally:
            try:
                project.release_claims(owner)
            except ProjectError as exc:  # the project is gone or busy: the claims expire on their own
                log.warning("could not release this run's claims: %s", exc)
    report.elapsed = time.monotonic() - t0
    emit("finished")
    log.info("auto-label finished: %d done, %d skipped, %d failed, %.1f s%s", report.done, report.skipped,
             len(report.failed), report.elapsed, " (stopped)" if report.stopped else "")
    return report


def run_autolabel(
    pipeline: Pipeline,
    project: Project,
    job: AutoLabelJob,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    stop: CancelToken | None = None,
    prefetch: int = 1,
) -> AutoLabelReport:
    """Auto-label ``job`` with ``pipeline`` (a ``CaRPipeline``) into ``project``; see the module docstring.

    ``stop`` ends the run after the current image; ``cancel`` ends it at the engine's next check (the
    current image is left as it was). Either way everything finished is saved and ``report.stopped`` is
    True. Broken images are in ``report.failed``. Raises only for problems that would fail every image
    (no concepts, missing model weights, a closed or unwritable project): ``CaRDesktopError`` subclasses.
    """
    test_models = pipeline.test_models if job.test_models is None else job.test_models

    def loop(todo: list[int], key: str, report: AutoLabelReport, clock: ProgressClock, emit: Callable[..., None],
             owner: str) -> None:
        _loop(pipeline, project, job, todo, key, report, clock, emit, cancel, stop, max(1, prefetch), owner)

    return run_job(project, job, bool(test_models), loop, progress)


def count_skip(report: AutoLabelReport, reason: str) -> None:
    """One more image skipped for ``reason``."""
    report.skipped += 1
    report.skipped_by_reason[reason] = report.skipped_by_reason.get(reason, 0) + 1


def claim_for_run(project: Project, image_id: int, owner: str, key: str, overwrite: bool) -> str | None:
    """Claim the image for this run; None when it is ours to label, else the skip reason."""
    holder = project.claim_image(image_id, owner)
    if holder is not None:
        log.info("auto-label: image %d is being labelled by %s; left to it", image_id, holder)
        return SKIP_CLAIMED
    if not overwrite and image_run_key(project, image_id) == key:  # another run finished it meanwhile
        project.release_claim(image_id, owner)
        return SKIP_DONE
    return None


def _loop(pipeline: Pipeline, project: Project, job: AutoLabelJob, todo: list[int], key: str, report: AutoLabelReport,
          clock: ProgressClock,
          emit: Callable[..., None], cancel: CancelToken | None, stop: CancelToken | None,
          prefetch: int, owner: str) -> None:
    records = {image_id: project.get_image(image_id) for image_id in todo}
    source = project.image_source()
    pending: deque[tuple[int, Future]] = deque()
    queue = iter(todo)
    # One decoder thread, ``prefetch`` images ahead: decoding overlaps the engine, memory stays bounded.
    # An image is claimed before it is decoded; one another run holds is skipped.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="autolabel-decode") as decoder:
        def refill() -> None:
            while len(pending) < prefetch:
                nxt = next(queue, None)
                if nxt is None:
                    return
                skip = claim_for_run(project, nxt, owner, key, job.overwrite)
                if skip is not None:
                    count_skip(report, skip)
                    clock.todo -= 1
                    continue
                pending.append((nxt, decoder.submit(read_image, source, records[nxt].rel_path)))

        try:
            refill()
            while pending:
                if (stop is not None and stop.cancelled) or (cancel is not None and cancel.cancelled):
                    report.stopped = True
                    break
                image_id, future = pending.popleft()
                refill()
                rel = records[image_id].rel_path
                emit("image started", rel, image_id)
                try:
                    failure = _label_one(pipeline, project, job, image_id, rel, future, key, report, cancel, owner)
                except Cancelled:
                    report.stopped = True
                    break
                count_outcome(project, failure, rel, image_id, key, owner, report, clock, emit)
                del future
        finally:
            for _, f in pending:
                f.cancel()
            pending.clear()


def count_outcome(project: Project, failure: str | None, rel: str, image_id: int, key: str, owner: str,
                  report: AutoLabelReport, clock: ProgressClock, emit: Callable[..., None]) -> None:
    """Count one image's outcome and emit its progress event. ``failure``: None when saved, ``_SKIPPED``
    when a person took the image over meanwhile, else the reason, kept in the project's failure list
    and the report (and the image's claim is released)."""
    if failure == _SKIPPED:
        clock.todo -= 1
        return
    clock.processed += 1
    if failure is None:
        emit("image done", rel, image_id)
    else:
        project.record_failure(rel, failure, "label", key)
        project.release_claim(image_id, owner)
        report.failed.append(Failure(rel, failure))
        emit("image failed", rel, image_id)


def _label_one(pipeline: Pipeline, project: Project, job: AutoLabelJob, image_id: int, rel: str, future: Future,
               key: str, report: AutoLabelReport, cancel: CancelToken | None, owner: str) -> str | None:
    """Label one image; returns None on success, ``_SKIPPED`` if a person took it over meanwhile, the
    failure reason otherwise. Raises Cancelled."""
    try:
        image = future.result()
    except Exception as exc:  # noqa: BLE001 - a decoder failure is this image's, not the run's
        return load_failure(exc, rel)
    reason = size_changed(image.shape[:2], project.get_image(image_id))
    if reason is not None:
        return reason
    result = segment_image(pipeline, image, job, cancel, rel)
    del image
    if isinstance(result, str):
        return result
    return save_car_result(project, image_id, rel, result, key, report, owner)


def load_failure(exc: Exception, rel: str) -> str:
    """The failure reason of an image whose decoding raised ``exc``."""
    if isinstance(exc, ImageLoadError):
        log.warning("auto-label: %s", exc)
        return short_reason(str(exc), rel)
    if isinstance(exc, MemoryError):
        return "not enough memory to decode this image"
    log.error("auto-label: decoding %s failed", rel, exc_info=exc)
    return f"cannot be decoded: {type(exc).__name__}: {exc}"


def size_changed(shape: tuple[int, ...], record: ImageRecord) -> str | None:
    """Why a decoded (height, width) cannot be stored on the image record, or None."""
    if tuple(shape) != (record.height, record.width):
        return (f"the file changed since it was added to the project: it is {shape[1]}x{shape[0]}, "
                f"the project has {record.width}x{record.height}")
    return None


def segment_image(pipeline: Pipeline, image: np.ndarray, job: AutoLabelJob, cancel: CancelToken | None,
                  rel: str) -> CaRResult | str:
    """CaR on one decoded image: the result, or the reason this image failed. Raises Cancelled, and
    ``CaRDesktopError`` for problems every image would share (weights, config)."""
    try:
        return pipeline.run(image, job.concepts, config=job.config, cancel=cancel)
    except (Cancelled, KeyboardInterrupt):
        raise Cancelled("Cancelled by the user.") from None
    except ImageLoadError as exc:
        return short_reason(str(exc), rel)
    except MemoryError:
        return "not enough memory to segment this image"
    except Exception as exc:
        if isinstance(exc, CaRDesktopError):
            raise  # weights, config: every image would fail the same way
        log.exception("auto-label: the engine failed on %s", rel)
        return f"engine error: {type(exc).__name__}: {exc}"


def save_car_result(project: Project, image_id: int, rel: str, result: CaRResult, key: str,
                    report: AutoLabelReport, owner: str) -> str | None:
    """Store one image's CaR result with its run key in one transaction (``apply_car_result``), clear its
    failure and release its claim. Returns None when saved, ``_SKIPPED`` (counted as skipped) when a
    person reviewed or edited the image meanwhile - checked inside the transaction."""
    for stage, seconds in result.timings.items():
        report.stage_seconds[stage] = report.stage_seconds.get(stage, 0.0) + seconds
    with project.batch():
        # The protection is checked again inside the transaction: the GUI may have reviewed or edited
        # the image meanwhile.
        applied = apply_car_result(project, image_id, result, origin=ORIGIN_AUTOLABEL, run_key=key,
                                   skip_if=lambda: _protection(project, image_id))
        if applied.skipped is not None:
            reason = applied.skipped
            count_skip(report, reason)
            log.info("auto-label: %s was %s while it ran; left as it is", rel, reason)
            project.release_claim(image_id, owner)
            return _SKIPPED
        project.set_setting(f"{RUN_KEY_SETTING}{image_id}", key)
        project.clear_failure(rel)
        project.release_claim(image_id, owner)
    report.done += 1
    report.done_ids.append(image_id)
    return None


#: ``_label_one``'s answer for an image protected while it ran (counted as skipped, not failed).
_SKIPPED = "\0skipped"


def short_reason(message: str, rel: str) -> str:
    """An ImageLoadError message names the full path; the report lists the relative path already."""
    head, sep, tail = message.partition(": ")
    return tail if sep and (head.endswith(rel) or head.endswith(Path(rel).name)) else message


# ---------------------------------------------------------------------------------------- merge
@dataclass
class MergeReport:
    """What ``merge_projects`` did; ``conflicts`` name each image found in more than one input."""

    images_added: int = 0
    images_updated: int = 0
    annotations_copied: int = 0
    categories_added: int = 0
    conflicts: list[str] = field(default_factory=list)


_STATUS_RANK = {"new": 0, "auto": 1, "reviewed": 2}


def merge_projects(out: Project, sources: Sequence[Project]) -> MergeReport:
    """Copy every image, category and annotation of ``sources`` into ``out``.

    Categories are matched by name (case-insensitive; synonyms are united), images by relative path.
    When an image already has annotations or a non-'new' status in ``out``, the incoming copy wins
    only if its status ranks higher (reviewed > auto > new); otherwise the image is kept as it is.
    Either way the clash is listed in ``conflicts``; so is a content-hash mismatch (two different files
    under one path), and an image that cannot be merged at all (a stored path that leaves the image
    folder, a size over the pixel limit). Each image is one transaction; its run key, auto-label record and
    removed-concept list travel with it (``IMAGE_SETTINGS``).
    """
    rep = MergeReport()
    for src in sources:
        cat_map: dict[int, int] = {}
        for cat in src.list_categories():
            existed = out.find_category(cat.name) is not None
            cat_map[cat.id] = out.get_or_create_category(cat.label).id
            rep.categories_added += not existed
        for rec in src.list_images():
            try:
                _merge_image(out, src, rec, cat_map, rep)
            except ProjectError as exc:  # e.g. a stored path that leaves the image folder: skip that image
                rep.conflicts.append(f"{rec.rel_path[:200]} (from {src.path.name}): not merged: {exc}")
    return rep


def _merge_image(out: Project, src: Project, rec, cat_map: dict[int, int], rep: MergeReport) -> None:
    anns = src.list_annotations(rec.id)
    per_image = [(prefix, src.get_setting(f"{prefix}{rec.id}")) for prefix in IMAGE_SETTINGS]
    existing = out.find_image(rec.rel_path)
    with out.batch():
        if existing is None:
            target = out.add_image_entry(rec.rel_path, rec.width, rec.height, rec.content_hash, rec.status)
            rep.images_added += 1
        else:
            target = existing
            name = f"{rec.rel_path} (from {src.path.name})"
            if rec.content_hash and existing.content_hash and rec.content_hash != existing.content_hash:
                rep.conflicts.append(f"{name}: a different file with the same path is already there; kept the first")
                return
            if (existing.width, existing.height) != (rec.width, rec.height):
                rep.conflicts.append(f"{name}: sizes differ ({existing.width}x{existing.height} against "
                                     f"{rec.width}x{rec.height}); kept the first")
                return
            has_own = out.count_annotations(existing.id) > 0 or existing.status != "new"
            incoming = bool(anns) or rec.status != "new"
            if not incoming:
                return
            if has_own:
                if _STATUS_RANK[rec.status] <= _STATUS_RANK[existing.status]:
                    rep.conflicts.append(f"{name}: already labelled ({existing.status}); kept the first")
                    return
                rep.conflicts.append(f"{name}: replaced the {existing.status} labels with the {rec.status} ones")
                for a in out.list_annotations(existing.id):
                    out.delete_annotation(a.id)
            rep.images_updated += 1
            if rec.status != existing.status:
                out.set_image_status(existing.id, rec.status)
        for a in anns:
            out.add_annotation(target.id, cat_map[a.category_id], src.get_mask(a.id), a.score, a.source,
                               a.provenance, edited=a.edited)
            rep.annotations_copied += 1
        for prefix, value in per_image:
            out.set_setting(f"{prefix}{target.id}", value)
