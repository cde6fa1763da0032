"""Auto-labelling many images of a project with one concept list: the loop shared by the CLI and the GUI.

``run_autolabel(pipeline, project, job)`` walks the job's images, skips those already labelled with the
same concepts and settings (the *run key*, stored per image in the project's settings in the same
transaction as the masks), skips images a person reviewed or edited, runs CaR on the rest and stores
each image's masks, provenance and 'auto' status as one transaction, so stopping at any moment loses
at most the image in progress. A background thread decodes the next image while the current one runs;
the pipeline keeps its models and its text-embedding cache across the whole folder. A broken image is
logged and listed in the report, never raised. Progress goes to a callback (count, rate, time left,
current image, failures); two tokens stop the loop: ``stop`` after the current image, ``cancel`` at
once (the current image's work is discarded). No Qt, no printing: the CLI and the GUI worker format
the progress themselves.

``add_folder`` puts a folder's images into the project (optionally one shard of them, chosen by a
stable hash of the relative path, so several processes can split a folder) and reports the files that
cannot be read; ``merge_projects`` combines the projects those processes wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from .annotations import ImageRecord, Project
from .annotations.errors import ProjectError
from .annotations.store import IMAGE_EXTENSIONS
from .engine.cancel import CancelToken
from .engine.concepts import parse_concepts
from .engine.config import CaRConfig
from .engine.errors import Cancelled, ImageLoadError
from .engine.results import CaRResult, ConceptStatus

log = logging.getLogger(__name__)

#: Settings key prefix of the per-image run key: ``autolabel.run_key.<image id>`` -> run key string.
RUN_KEY_SETTING = "autolabel.run_key."
#: Settings key of the last auto-label run (concepts, preset, run key): lets the GUI prefill its dialog.
LAST_RUN_SETTING = "autolabel.last_run"
#: Config fields that do not change what is computed, left out of the run key.
_RUN_KEY_IGNORED = frozenset({"device", "crf_in_subprocess"})

#: Why an image was skipped (keys of ``AutoLabelReport.skipped_by_reason``).
SKIP_DONE = "already labelled with these concepts and settings"
SKIP_REVIEWED = "reviewed by a person"
SKIP_EDITED = "has annotations a person made, edited or imported"


class Failure(NamedTuple):
    """One image that could not be labelled: its path (relative to the image root when known) and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class AutoLabelJob:
    """What to auto-label: ``concepts`` (typed text or a list, "car | automobile" for synonyms) on
    ``image_ids`` (None: every image of the project) with ``config``.

    ``overwrite`` also redoes images already labelled with the same run key. Images with status
    'reviewed' or with annotations a person made or edited are never touched, whatever the options.
    ``test_models`` (part of the run key) says whether the pipeline uses the tiny test models; None
    takes the pipeline's own ``test_models`` attribute.
    """

    concepts: str | Sequence[str]
    config: CaRConfig
    image_ids: Sequence[int] | None = None
    overwrite: bool = False
    test_models: bool | None = None


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


# ---------------------------------------------------------------------------------------- run key
def concept_entries(concepts: str | Sequence[str]) -> list[str]:
    """The parsed concepts as engine entries ("car | automobile"), in the order given. Raises ConceptError."""
    return [" | ".join(c.synonyms) for c in parse_concepts(concepts if isinstance(concepts, str) else list(concepts))]


def run_key(concepts: str | Sequence[str], config: CaRConfig, *, test_models: bool = False) -> str:
    """A short stable digest of what decides an image's auto-labels: the parsed concepts (order kept),
    every config field that changes the computation, and whether the test models are used."""
    cfg = {k: v for k, v in config.to_dict().items() if k not in _RUN_KEY_IGNORED}
    payload = {"concepts": concept_entries(concepts), "config": cfg, "test_models": bool(test_models)}
    text = json.dumps(payload, sort_keys=True, default=list, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


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
def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files (by extension) under ``folder``, recursively, sorted."""
    root = Path(folder)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def add_folder(project: Project, folder: str | os.PathLike,
               shard: tuple[int, int] | None = None) -> tuple[list[int], list[Failure]]:
    """Add the image files under ``folder`` (inside the project's image root) to the project.

    With ``shard=(i, n)`` only the files whose ``shard_index(rel_path, n) == i``. Returns the image ids
    (sorted by relative path) and the files that could not be added (unreadable, empty, not an image),
    each with its reason. Known images are not read again; new ones are added 200 per transaction.
    """
    root = project.image_root.resolve()
    base = Path(folder).resolve()
    try:
        base_rel = base.relative_to(root)
    except ValueError:
        raise ProjectError(f"{folder} is not inside the project's image folder {root}; "
                           f"use a new project for {folder}") from None
    ids: list[int] = []
    failures: list[Failure] = []
    new: list[str] = []
    # Relative paths are built without resolving each file, so symlinked images keep their own name.
    for path in list_image_files(base):
        rel = (base_rel / path.relative_to(base)).as_posix()
        if shard is not None and shard_index(rel, shard[1]) != shard[0]:
            continue
        known = project.find_image(rel)
        if known is not None:
            ids.append(known.id)
        else:
            new.append(rel)
    for start in range(0, len(new), 200):
        chunk = new[start:start + 200]
        try:
            ids.extend(r.id for r in project.add_images(chunk))
            continue
        except ProjectError:
            pass  # one bad file spoils the chunk: add them one at a time to name it
        for rel in chunk:
            try:
                ids.extend(r.id for r in project.add_images([rel]))
            except ProjectError as exc:
                reason = _unreadable_reason(root / rel, exc)
                log.warning("skipping %s: %s", rel, reason)
                failures.append(Failure(rel, reason))
    order = {rec.id: rec.rel_path for rec in (project.get_image(i) for i in set(ids))}
    return sorted(order, key=order.get), failures


def _unreadable_reason(path: Path, exc: Exception) -> str:
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    return f"not a readable image ({str(exc).rpartition(': ')[2]})"


# ---------------------------------------------------------------------------------------- the loop
def _protection(project: Project, image_id: int) -> str | None:
    """Why auto-labelling must not touch this image, or None."""
    if project.get_image(image_id).status == "reviewed":
        return SKIP_REVIEWED
    if any(a.edited or a.source != "car" for a in project.list_annotations(image_id)):
        return SKIP_EDITED
    return None


def _decode(path: Path) -> np.ndarray:
    from .engine.image_io import load_image
    from .engine.pipeline import as_rgb_uint8

    return as_rgb_uint8(load_image(path))


def provenance(result: CaRResult, index: int, config: CaRConfig, key: str) -> dict[str, Any]:
    """What is stored with each auto-label: concept, score, status, models, thresholds, run key."""
    c = result.concepts[index]
    return {
        "concept": c.name, "query_text": c.query_text, "score": float(c.score), "status": c.status.value,
        "sam_accepted": c.sam_accepted, "sam_iou": c.sam_iou, "models": dict(result.model_names),
        "thresholds": {"eta": config.eta, "theta": config.theta, "lam": config.lam,
                       "phi_iou": config.phi_iou, "phi_iom": config.phi_iom},
        "preset": config.preset, "sam_mode": config.sam_mode, "use_crf": config.use_crf,
        "steps": len(result.steps), "test_models": result.test_models, "run_key": key, "origin": "autolabel",
    }


class _Clock:
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
                   test_models: bool) -> tuple[list[str], str, AutoLabelReport, list[int]]:
    """The resume rule, shared by every way of running a job: (concept entries, run key, a report with
    the skipped images counted, the image ids still to do in job order). An image is skipped when a
    person reviewed or edited it, or (without ``overwrite``) when it already has this run key.
    Raises ConceptError before reading anything."""
    entries = concept_entries(job.concepts)
    key = run_key(entries, job.config, test_models=test_models)
    report = AutoLabelReport(run_key=key)
    ids = [r.id for r in project.list_images()] if job.image_ids is None else list(dict.fromkeys(job.image_ids))
    report.total = len(ids)
    todo: list[int] = []
    for image_id in ids:
        reason = _protection(project, image_id)
        if reason is None and not job.overwrite and image_run_key(project, image_id) == key:
            reason = SKIP_DONE
        if reason is None:
            todo.append(image_id)
        else:
            report.skipped += 1
            report.skipped_by_reason[reason] = report.skipped_by_reason.get(reason, 0) + 1
    log.info("auto-label %d images: %d to do, %d skipped (%s)", len(ids), len(todo), report.skipped,
             report.skipped_by_reason)
    return entries, key, report, todo


#: A run's image loop, given ``(todo, entries, categories, key, report, clock, emit)``: labels the images
#: to do, counts each on ``clock`` and emits "image done" / "image failed" (see ``run_job``).
ImageLoop = Callable[[list[int], list[str], dict[str, int], str, AutoLabelReport, _Clock, Callable[..., None]],
                     None]


def run_job(project: Project, job: AutoLabelJob, test_models: bool, loop: ImageLoop,
            progress: ProgressFn | None = None) -> AutoLabelReport:
    """The frame shared by every way of running a job (here, and on Ray): plan with the resume rule,
    emit "planned", record the run (for the GUI's dialog) and create the categories, hand the images
    to do to ``loop``, then emit "finished" and return the report."""
    t0 = time.monotonic()
    entries, key, report, todo = plan_autolabel(project, job, test_models)
    clock = _Clock(report, len(todo))

    def emit(event: str, current: str | None = None, image_id: int | None = None) -> None:
        if progress is not None:
            progress(clock.snapshot(event, current, image_id))

    emit("planned")
    if todo:
        project.set_setting(LAST_RUN_SETTING, {"concepts": entries, "preset": job.config.preset,
                                               "sam_mode": job.config.sam_mode, "run_key": key})
        categories = {e: project.get_or_create_category(e).id for e in entries}
        loop(todo, entries, categories, key, report, clock, emit)
    report.elapsed = time.monotonic() - t0
    emit("finished")
    log.info("auto-label finished: %d done, %d skipped, %d failed, %.1f s%s", report.done, report.skipped,
             len(report.failed), report.elapsed, " (stopped)" if report.stopped else "")
    return report


def run_autolabel(
    pipeline: Any,
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
    test_models = getattr(pipeline, "test_models", False) if job.test_models is None else job.test_models

    def loop(todo, entries, categories, key, report, clock, emit) -> None:
        _loop(pipeline, project, job, todo, entries, categories, key, report, clock, emit, cancel, stop,
              max(1, prefetch))

    return run_job(project, job, bool(test_models), loop, progress)


def _loop(pipeline, project: Project, job: AutoLabelJob, todo: list[int], entries: list[str],
          categories: dict[str, int], key: str, report: AutoLabelReport, clock: _Clock,
          emit: Callable[..., None], cancel: CancelToken | None, stop: CancelToken | None,
          prefetch: int) -> None:
    records = {}
    paths = {}
    for image_id in todo:
        records[image_id] = project.get_image(image_id)
        paths[image_id] = project.image_root / records[image_id].rel_path
    pending: deque[tuple[int, Future]] = deque()
    queue = iter(todo)
    # One decoder thread, ``prefetch`` images ahead: decoding overlaps the engine, memory stays bounded.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="autolabel-decode") as decoder:
        def refill() -> None:
            while len(pending) < prefetch:
                nxt = next(queue, None)
                if nxt is None:
                    return
                pending.append((nxt, decoder.submit(_decode, paths[nxt])))

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
                    failure = _label_one(pipeline, project, job, image_id, rel, future, entries, categories,
                                         key, report, cancel)
                except Cancelled:
                    report.stopped = True
                    break
                count_outcome(failure, rel, image_id, report, clock, emit)
                del future
        finally:
            for _, f in pending:
                f.cancel()
            pending.clear()


def count_outcome(failure: str | None, rel: str, image_id: int, report: AutoLabelReport, clock: _Clock,
                  emit: Callable[..., None]) -> None:
    """Count one image's outcome (None: saved; ``_SKIPPED``: a person took it over; else the failure
    reason, listed in the report) and emit its progress event."""
    if failure == _SKIPPED:
        clock.todo -= 1
        return
    clock.processed += 1
    if failure is None:
        emit("image done", rel, image_id)
    else:
        report.failed.append(Failure(rel, failure))
        emit("image failed", rel, image_id)


def _label_one(pipeline, project: Project, job: AutoLabelJob, image_id: int, rel: str, future: Future,
               entries: list[str], categories: dict[str, int], key: str, report: AutoLabelReport,
               cancel: CancelToken | None) -> str | None:
    """Label one image; returns None on success, ``_SKIPPED`` if a person took it over meanwhile, the
    failure reason otherwise. Raises Cancelled."""
    try:
        image = future.result()
    except (ImageLoadError, MemoryError) as exc:
        return load_failure(exc, rel)
    reason = size_changed(image.shape[:2], project.get_image(image_id))
    if reason is not None:
        return reason
    result = segment_image(pipeline, image, entries, job.config, cancel, rel)
    del image
    if isinstance(result, str):
        return result
    return save_car_result(project, image_id, rel, result, entries, categories, key, job.config, report)


def load_failure(exc: Exception, rel: str) -> str:
    """The failure reason of an image that could not be decoded (ImageLoadError or MemoryError)."""
    if isinstance(exc, MemoryError):
        return "not enough memory to decode this image"
    log.warning("auto-label: %s", exc)
    return _short_reason(str(exc), rel)


def size_changed(shape: tuple[int, ...], record: ImageRecord) -> str | None:
    """Why the decoded (height, width) cannot be stored on the image record, or None."""
    if tuple(shape) != (record.height, record.width):
        return (f"the file changed since it was added to the project: it is {shape[1]}x{shape[0]}, "
                f"the project has {record.width}x{record.height}")
    return None


def segment_image(pipeline, image: np.ndarray, entries: list[str], config: CaRConfig,
                  cancel: CancelToken | None, rel: str) -> CaRResult | str:
    """Run CaR on one decoded image: the result, or the reason this image failed. Raises Cancelled, and
    ``CaRDesktopError`` for problems every image would share (weights, config)."""
    try:
        return pipeline.run(image, entries, config=config, cancel=cancel)
    except (Cancelled, KeyboardInterrupt):
        raise Cancelled("Cancelled by the user.") from None
    except ImageLoadError as exc:
        return _short_reason(str(exc), rel)
    except MemoryError:
        return "not enough memory to segment this image"
    except Exception as exc:  # noqa: BLE001 - one image's engine failure must not end the folder
        from .engine.errors import CaRDesktopError

        if isinstance(exc, CaRDesktopError):
            raise  # weights, config: every image would fail the same way
        log.exception("auto-label: the engine failed on %s", rel)
        return f"engine error: {type(exc).__name__}: {exc}"


def save_car_result(project: Project, image_id: int, rel: str, result: CaRResult, entries: list[str],
                    categories: dict[str, int], key: str, config: CaRConfig, report: AutoLabelReport) -> str | None:
    """Store one image's CaR result (masks, provenance, 'auto' status, run key) in one transaction, unless
    a person reviewed or edited the image meanwhile (checked inside the transaction): then returns
    ``_SKIPPED`` and counts it as skipped. Returns None when saved."""
    for stage, seconds in result.timings.items():
        report.stage_seconds[stage] = report.stage_seconds.get(stage, 0.0) + seconds
    rows = []
    for c in result.concepts:
        if c.status is ConceptStatus.REMOVED:
            continue
        rows.append((categories[entries[c.index]], c.mask, float(c.score),
                     provenance(result, c.index, config, key)))
    with project.batch():
        # Checked again inside the transaction: the GUI may have reviewed or edited it meanwhile.
        reason = _protection(project, image_id)
        if reason is not None:
            report.skipped += 1
            report.skipped_by_reason[reason] = report.skipped_by_reason.get(reason, 0) + 1
            log.info("auto-label: %s was %s while it ran; left as it is", rel, reason)
            return _SKIPPED
        project.replace_car_results(image_id, rows)
        project.set_setting(f"{RUN_KEY_SETTING}{image_id}", key)
    report.done += 1
    report.done_ids.append(image_id)
    return None


#: ``_label_one``'s answer for an image protected while it ran (counted as skipped, not failed).
_SKIPPED = "\0skipped"


def _short_reason(message: str, rel: str) -> str:
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
    under one path). Each image is one transaction, run keys travel with their images.
    """
    rep = MergeReport()
    for src in sources:
        cat_map: dict[int, int] = {}
        for cat in src.list_categories():
            existed = out.find_category(cat.name) is not None
            cat_map[cat.id] = out.get_or_create_category(cat.query_text).id
            rep.categories_added += not existed
        for rec in src.list_images():
            _merge_image(out, src, rec, cat_map, rep)
    return rep


def _merge_image(out: Project, src: Project, rec, cat_map: dict[int, int], rep: MergeReport) -> None:
    anns = src.list_annotations(rec.id)
    src_key = src.get_setting(f"{RUN_KEY_SETTING}{rec.id}")
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
        out.set_setting(f"{RUN_KEY_SETTING}{target.id}", src_key)
