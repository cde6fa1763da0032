"""Labelling a clip: CaR on key frames, SAM 2 carrying each object between them, all stored in the
project. The loop shared by ``car-desktop video`` and the window.

``add_clip(project, path)`` opens a clip file or frame folder under the project's image folder
(``engine.video_io``: clear messages for damaged, truncated, empty or oversized files) and adds it
with its frames (``annotations.video_store``), or finds it again (a file that changed since is
refused: its labels belong to the old content).

``run_video(pipeline, project, video_id, job)`` picks the key frames (every N frames, and/or at scene
cuts: ``engine.keyframes``), runs CaR on each one and stores it (``video_masks.store_key_result``),
then ``propagate``s. A key frame already labelled with the same run key (concepts, settings, key frame
choice, models: ``video_run_key``) is skipped, and propagation redoes only the runs whose key mask or
model changed, so a stopped run resumes where it stopped. Frames a person marked reviewed are not
relabelled; masks a person edited are never replaced.

``propagate(project, video_id, handle, source)`` plans the runs from the stored key frames and edits
(``engine.propagation.plan_runs``), runs those not done yet with SAM 2 and stores every frame as it
comes (``video_masks.store_propagated``); ``from_frame`` with ``categories`` restricts it to the runs
that start at a frame a person edited ("re-propagate this object from here"). Masks carried from a
frame that is no longer a key frame of their object are removed. Everything a call changes goes into
one ``Journal``, which ``video_masks.undo`` reverts as one step.

Progress goes to a callback (``VideoProgress``); ``stop`` ends the loop after the current key frame or
run, ``cancel`` at the next frame. No Qt; torch only inside the engine calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .annotations import video_masks, video_store
from .annotations.car_results import REMOVED_SETTING
from .annotations.errors import ProjectError
from .annotations.provenance import ORIGIN_VIDEO, Provenance
from .annotations.store import Project
from .autolabel import Pipeline, run_key
from .cancel import CancelToken
from .engine.concepts import ConceptList
from .engine.config import CaRConfig
from .engine.errors import Cancelled, ImageLoadError
from .errors import CaRDesktopError

if TYPE_CHECKING:
    from .engine.sam2_models import Sam2Handle
    from .engine.video_io import FrameSource, VideoInfo

log = logging.getLogger(__name__)

_FINGERPRINT_BYTES = 1 << 20


@dataclass(frozen=True)
class VideoJob:
    """What to do with a clip: CaR with ``concepts`` and ``config`` on key frames every ``every`` frames
    (0: only the first frame) and/or at scene cuts, then SAM 2 ``sam2_model`` between them."""

    concepts: ConceptList
    config: CaRConfig
    every: int = 30
    scene_cuts: bool = False
    cut_threshold: float = 0.5
    sam2_model: str = "tiny"
    test_models: bool | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "concepts", ConceptList.parse(self.concepts))
        if self.every < 0:
            raise CaRDesktopError(f"--every must be 0 or more frames, not {self.every}")
        if not 0.0 < self.cut_threshold < 1.0:
            raise CaRDesktopError(f"the scene-cut threshold must be between 0 and 1, not {self.cut_threshold}")


@dataclass(frozen=True)
class VideoProgress:
    """A snapshot: ``stage`` is "scene cuts", "key frames", "propagation" or "done"; ``done`` of ``total``
    units of that stage; ``frame`` the frame just finished (None when not about one frame)."""

    stage: str
    done: int
    total: int
    frame: int | None = None
    message: str = ""

    def __str__(self) -> str:
        unit = "key frames" if self.stage == "key frames" else "frames"
        return f"{self.stage}: {self.done}/{self.total} {unit}" if self.stage != "done" else "done"


@dataclass
class VideoReport:
    """What ``run_video`` / ``propagate`` did."""

    video_id: int
    key_frames: list[int] = field(default_factory=list)
    keys_labelled: int = 0
    keys_skipped: int = 0
    runs_done: int = 0
    runs_skipped: int = 0
    frames_stored: int = 0
    stale_removed: int = 0
    stopped: bool = False
    failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    journal: video_masks.Journal | None = None


ProgressFn = Callable[[VideoProgress], None]


# ------------------------------------------------------------------------------------------ clips
def fingerprint(path: Path) -> str:
    """A cheap fingerprint of a clip (size and its first and last MiB) or a frame folder (names and
    sizes): a clip replaced by other content is noticed without hashing gigabytes."""
    digest = hashlib.sha256()
    if path.is_dir():
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if entry.is_file():
                digest.update(f"{entry.name}\0{entry.stat().st_size}\n".encode("utf-8", "surrogateescape"))
        return "dir:" + digest.hexdigest()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(_FINGERPRINT_BYTES))
        if size > _FINGERPRINT_BYTES:
            fh.seek(max(_FINGERPRINT_BYTES, size - _FINGERPRINT_BYTES))
            digest.update(fh.read(_FINGERPRINT_BYTES))
    return "file:" + digest.hexdigest()


def clip_rel_path(project: Project, path: Path) -> str:
    root = project.image_root.resolve()
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        raise ProjectError(f"{path} is not inside the project's image folder {root}; use a project beside the clip "
                           "(or another --project)") from None


def add_clip(project: Project, path: str | os.PathLike) -> tuple[video_store.VideoRecord, VideoInfo]:
    """Open ``path`` (a clip file or a frame folder) and add it to the project (see the module docstring)."""
    from .engine.video_io import probe_video

    p = Path(path)
    info = probe_video(p)
    rel = clip_rel_path(project, p)
    record = video_store.add_video(project, rel, kind=info.kind, frame_count=info.frame_count, width=info.width,
                                   height=info.height, fps=info.fps, variable_rate=info.variable_rate,
                                   fingerprint=fingerprint(p))
    return record, info


def open_clip(project: Project, video_id: int) -> FrameSource:
    """The clip's frames, checked against what the project knows of it (size, count, fingerprint)."""
    from .engine.video_io import open_video

    record = video_store.get_video(project, video_id)
    path = project.image_root / record.rel_path
    source = open_video(path)
    info = source.info
    same = (info.frame_count, info.width, info.height) == (record.frame_count, record.width, record.height)
    if not same or (record.fingerprint and fingerprint(path) != record.fingerprint):
        source.close()
        raise ProjectError(f"{record.rel_path} changed since it was added to this project: its labels belong to the "
                           "old file. Remove the clip from the project first (car-desktop video --replace)")
    return source


def extract_frames(project: Project, video_id: int, out_dir: str | os.PathLike, *, fmt: str = "jpg",
                   force: bool = False, progress: Callable[[int, int], None] | None = None,
                   cancel: CancelToken | None = None) -> dict[int, str]:
    """Write every frame of a clip as ``out_dir/<clip name>/<frame>.<fmt>`` (jpg or png); returns the
    frames' image ids -> their paths relative to ``out_dir`` (the ``file_name`` of an export beside
    it). The folder passes the project's output guard; each file is written atomically."""
    import cv2

    from .fileio import atomic_write

    if fmt not in ("jpg", "png"):
        raise CaRDesktopError(f"frames are extracted as jpg or png, not {fmt!r}")
    guard = project.output_guard(force)
    out = guard.check_dir(out_dir, "frame folder")
    record = video_store.get_video(project, video_id)
    sub = Path(record.rel_path).name.replace(".", "_")
    (out / sub).mkdir(parents=True, exist_ok=True)
    ids = video_store.frame_ids(project, video_id)
    names: dict[int, str] = {}
    digits = max(6, len(str(record.frame_count - 1)))
    with open_clip(project, video_id) as source:
        for index, image in source.frames():
            if cancel is not None:
                cancel.check()
            rel = f"{sub}/{index:0{digits}d}.{fmt}"
            target = guard.check_file(out / rel, "extracted frame")
            ok, data = cv2.imencode(f".{fmt}", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            if not ok:
                raise CaRDesktopError(f"frame {index} of {record.rel_path} could not be encoded as {fmt}")
            blob = data.tobytes()

            def write(fh: IO[bytes], blob: bytes = blob) -> None:
                fh.write(blob)

            atomic_write(target, write)
            names[ids[index]] = rel
            if progress is not None:
                progress(index + 1, record.frame_count)
    return names


# -------------------------------------------------------------------------------------- key frames
def video_run_key(job: VideoJob, *, test_models: bool) -> str:
    """The auto-label run key of the concepts and settings, plus the key frame choice and SAM 2 model."""
    base = run_key(job.concepts, job.config, test_models=test_models)
    extra = json.dumps({"every": job.every, "scene_cuts": job.scene_cuts, "cut": job.cut_threshold,
                        "sam2": job.sam2_model}, sort_keys=True)
    return hashlib.sha256(f"{base}|{extra}".encode()).hexdigest()[:24]


def choose_key_frames(source: FrameSource, job: VideoJob, progress: ProgressFn | None = None,
                      cancel: CancelToken | None = None) -> list[int]:
    from .engine.keyframes import every_n, scene_cuts

    keys = set(every_n(source.info.frame_count, job.every))
    if job.scene_cuts:
        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(VideoProgress("scene cuts", done, total))

        keys |= set(scene_cuts(source, job.cut_threshold, progress=report, cancel=cancel))
    return sorted(keys)


def _forget_stale_keys(project: Project, video_id: int, keep: set[int], key: str,
                       journal: video_masks.Journal) -> None:
    """Key frames of earlier runs with other concepts or settings that this run does not use: their
    unedited CaR masks and removed lists go (frames a person touched keep their masks)."""
    for frame, old_key in video_store.key_frames(project, video_id).items():
        if frame in keep or old_key is None or old_key == key:
            continue
        image_id = video_store.frame_image_id(project, video_id, frame)
        with project.batch():
            gone = [a.id for a in project.list_annotations(image_id) if a.source == "car" and not a.edited]
            journal.removed += video_masks.copy_rows(project, gone)
            for ann_id in gone:
                project.delete_annotation(ann_id)
            journal.keys.append(video_masks.KeyBefore(frame, old_key, True, project.get_setting(
                f"{REMOVED_SETTING}{image_id}")))
            project.set_setting(f"{REMOVED_SETTING}{image_id}", None)
            video_store.remove_key_frame(project, video_id, frame)


def run_video(pipeline: Pipeline, project: Project, video_id: int, job: VideoJob, *,
              sam2: Sam2Handle | None = None, progress: ProgressFn | None = None,
              cancel: CancelToken | None = None, stop: CancelToken | None = None) -> VideoReport:
    """Label a clip of the project (see the module docstring). ``sam2`` defaults to ``job.sam2_model``
    (the test model when the pipeline uses the test models). Raises CaRDesktopError for what would fail
    every frame (weights, a changed clip, a closed project)."""
    start = time.monotonic()
    report = VideoReport(video_id)
    test_models = bool(pipeline.test_models if job.test_models is None else job.test_models)
    key = video_run_key(job, test_models=test_models)
    journal = video_masks.Journal(video_id, "video run", records=video_store.run_records(project, video_id))
    report.journal = journal
    with open_clip(project, video_id) as source:
        report.warnings += list(source.info.warnings)
        try:
            keys = choose_key_frames(source, job, progress, cancel)
        except Cancelled:
            report.stopped = True
            return _finish(report, start, progress)
        report.key_frames = keys
        _forget_stale_keys(project, video_id, set(keys), key, journal)
        done_keys = video_store.key_frames(project, video_id)
        for n, frame in enumerate(keys):
            if _stopping(stop, cancel):
                report.stopped = True
                return _finish(report, start, progress)
            image_id = video_store.frame_image_id(project, video_id, frame)
            if (done_keys.get(frame) == key and not job.overwrite) or project.get_image(image_id).status == "reviewed":
                report.keys_skipped += 1
            else:
                try:
                    result = pipeline.run(source.read(frame), job.concepts, config=job.config, cancel=cancel)
                except (Cancelled, KeyboardInterrupt):
                    report.stopped = True
                    return _finish(report, start, progress)
                except ImageLoadError as exc:
                    report.failed.append(f"frame {frame}: {exc}")
                    continue
                video_masks.store_key_result(project, video_id, frame, result, run_key=key, journal=journal)
                report.keys_labelled += 1
            if progress is not None:
                progress(VideoProgress("key frames", n + 1, len(keys), frame))
        if sam2 is None:
            from .engine.sam2_models import TEST_MODEL, load_sam2

            sam2 = load_sam2(TEST_MODEL if test_models else job.sam2_model, job.config.device, cancel=cancel)
        propagate(project, video_id, sam2, source, progress=progress, cancel=cancel, stop=stop, report=report)
    return _finish(report, start, progress)


def _stopping(stop: CancelToken | None, cancel: CancelToken | None) -> bool:
    return bool((stop is not None and stop.cancelled) or (cancel is not None and cancel.cancelled))


def _finish(report: VideoReport, start: float, progress: ProgressFn | None) -> VideoReport:
    report.elapsed = time.monotonic() - start
    if progress is not None:
        progress(VideoProgress("done", 1, 1))
    return report


# -------------------------------------------------------------------------------------- propagation
def plan_keys(keys: dict[int, video_store.ObjectKeys]) -> dict[int, dict[int, str]]:
    """The stored key frames of each object in the form ``engine.propagation`` plans with."""
    from .engine.propagation import ABSENT, EDITED, PRESENT

    out: dict[int, dict[int, str]] = {}
    for obj, k in keys.items():
        marks = dict.fromkeys(k.absent, ABSENT)
        marks.update(dict.fromkeys(k.present, PRESENT))
        marks.update(dict.fromkeys(k.edited, EDITED))   # a person's mask outranks CaR's verdict
        out[obj] = marks
    return out


def propagate(project: Project, video_id: int, handle: Sam2Handle, source: FrameSource, *,
              categories: Sequence[int] | None = None, from_frame: int | None = None,
              progress: ProgressFn | None = None, cancel: CancelToken | None = None,
              stop: CancelToken | None = None, report: VideoReport | None = None) -> VideoReport:
    """Carry every object (or ``categories``) from its key frames through the clip with SAM 2; with
    ``from_frame``, only the runs that start there and go forward. See the module docstring."""
    from .engine.propagation import Propagator, plan_runs

    report = report or VideoReport(video_id)
    if report.journal is None:
        report.journal = video_masks.Journal(video_id, "propagation",
                                             records=video_store.run_records(project, video_id))
    journal = report.journal
    record = video_store.get_video(project, video_id)
    keys = video_store.object_keys(project, video_id)
    if categories is not None:
        keys = {c: k for c, k in keys.items() if c in set(categories)}
    marks = plan_keys(keys)
    runs = plan_runs(record.frame_count, marks)
    if from_frame is not None:
        runs = [r for r in runs if r.key == from_frame and r.step > 0]
    else:
        report.stale_removed += _remove_stale(project, video_id, record.frame_count, marks, journal)
    todo = []
    for run in runs:
        wanted = {}
        for obj in run.obj_ids:
            seed = video_store.seed_mask(project, video_id, obj, run.key)
            if seed is None:
                continue
            token = video_store.seed_token(seed, handle.key)
            done = video_store.run_done(project, video_id, obj, run.key, run.step)
            last = run.frames_of(obj)[-1]
            if done is None or done[0] != token or (done[1] - last) * run.step < 0:
                wanted[obj] = (seed, token)
        if wanted:
            todo.append((run, wanted))
        else:
            report.runs_skipped += 1
    total = sum(len(run) for run, _ in todo)
    finished = 0
    propagator = Propagator(handle, source)
    concepts = {c.id: c.label for c in project.list_categories()}
    for run, wanted in todo:
        if _stopping(stop, cancel):
            report.stopped = True
            break
        provenance = {obj: Provenance(concept=concepts.get(obj, ""), models={"sam2": handle.title}, from_frame=run.key,
                                      test_models=handle.is_test, origin=ORIGIN_VIDEO) for obj in wanted}
        spans = {obj: run.frames_of(obj) for obj in wanted}
        try:
            for frame in propagator.run(run, {obj: seed for obj, (seed, _) in wanted.items()}, cancel):
                mine = [obj for obj in wanted if frame.frame in spans[obj]]
                video_masks.store_propagated(project, video_id, frame.frame, {o: frame.masks[o] for o in mine},
                                             frame.scores, provenance, journal)
                finished += 1
                report.frames_stored += 1
                if progress is not None:
                    progress(VideoProgress("propagation", finished, total, frame.frame))
        except Cancelled:
            report.stopped = True
            break
        for obj, (_, token) in wanted.items():
            video_store.set_run_done(project, video_id, obj, run.key, run.step, token, spans[obj][-1])
        report.runs_done += 1
    return report


def _remove_stale(project: Project, video_id: int, frame_count: int, marks: dict[int, dict[int, str]],
                  journal: video_masks.Journal) -> int:
    """Delete the unedited propagated masks that the plan no longer gives their frame (carried from a
    frame that is no longer the frame's key for that object)."""
    from .engine.propagation import assign_frames

    assigned = {obj: assign_frames(frame_count, m) for obj, m in marks.items()}
    rows = project.query(
        "SELECT a.id, a.category_id, i.frame_index, a.provenance FROM annotations a JOIN images i ON i.id = a.image_id "
        "WHERE i.video_id = ? AND a.edited = 0 AND a.source = 'sam'", (video_id,))
    stale = []
    for ann_id, category_id, frame, prov in rows:
        source = assigned.get(int(category_id), {}).get(int(frame))
        p = Provenance.from_json(prov)
        if p.from_frame is not None and (source is None or source[0] != p.from_frame):
            stale.append(int(ann_id))
    if stale:
        with project.batch():
            journal.removed += video_masks.copy_rows(project, stale)
            for ann_id in stale:
                project.delete_annotation(ann_id)
    return len(stale)
