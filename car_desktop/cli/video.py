"""``car-desktop video``: label a clip headless, CaR on key frames and SAM 2 between them, into a project.

A thin terminal front end over ``car_desktop.videolabel``: options, the shared progress bar, Ctrl+C
(the first stops after the current key frame or run with everything saved, the second at once), the
summary and the exports (COCO with one image per frame and track ids, YouTube-VIS, optionally with
the frames extracted). Every output path is checked before any frame is labelled. A second run with
the same concepts and settings skips what is done: it resumes a stopped run. Exit codes as for every
command (0 done, 1 some key frames failed, 2 nothing done, 3 a bug, 130 stopped).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..annotations import video_store
from ..annotations.video_export import export_video_coco
from ..annotations.ytvis import export_ytvis
from ..cancel import CancelToken
from ..engine.concepts import ConceptList
from ..engine.errors import CaRDesktopError
from .batch import add_concept_options, open_or_create, read_concepts
from .engine_options import add_engine_options, config_from_args, wants_test_models
from .interrupt import InterruptHandler
from .progress import ProgressBar, format_duration

EXIT_OK, EXIT_FAILED, EXIT_STOPPED = 0, 1, 130
EXIT_CODES = ("exit codes: 0 done; 1 done, but some key frames failed (listed); 2 nothing done (bad option, "
              "concepts, clip, project, output path or missing weights); 3 internal error (a bug: please report "
              "it); 130 stopped by Ctrl+C (everything finished is saved: run the same command again to resume)")
SAM2_CHOICES = ("tiny", "small", "base_plus", "large")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "video", help="label a video clip: CaR on key frames, SAM 2 carries the masks between them (resumable)",
        description="Run CaR with one concept list on key frames of CLIP (a video file: mp4, mov, avi, mkv; or a "
                    "folder of numbered frames), then let SAM 2 carry every concept's mask through the clip, and "
                    "save it all in a project. A second run with the same concepts and settings skips the key "
                    "frames and propagation runs already done; masks a person edited are never replaced.",
        epilog=EXIT_CODES)
    p.add_argument("clip", type=Path, metavar="CLIP", help="video file or folder of numbered frames")
    add_concept_options(p, "car | automobile, person")
    p.add_argument("--project", type=Path, required=True, metavar="P",
                   help="project file; created with the clip's folder as its image folder if it does not exist")
    p.add_argument("--every", type=int, default=30, metavar="N",
                   help="a key frame every N frames (default 30; 0: only the first frame)")
    p.add_argument("--scene-cuts", action="store_true", help="also a key frame at every detected scene cut")
    p.add_argument("--cut-threshold", type=float, default=0.5, metavar="T",
                   help="colour-histogram distance (0-1) that counts as a scene cut (default 0.5)")
    p.add_argument("--sam2", choices=SAM2_CHOICES, default="tiny",
                   help="SAM 2.1 model that carries the masks (downloaded once; default tiny)")
    add_engine_options(p)
    p.add_argument("--export", type=Path, metavar="OUT.json",
                   help="COCO JSON with one image per frame (file names CLIP#000123) and a track_id per annotation")
    p.add_argument("--ytvis", type=Path, metavar="OUT.json",
                   help="YouTube-VIS JSON (one object per track, RLE per frame)")
    p.add_argument("--extract-frames", type=Path, metavar="DIR",
                   help="write every frame into DIR/<clip>/ and name those files in the exports instead")
    p.add_argument("--frame-format", choices=("jpg", "png"), default="jpg", help="format of --extract-frames")
    p.add_argument("--force", action="store_true", help="allow outputs inside the image folder")
    p.add_argument("--overwrite", action="store_true", help="run CaR again on key frames already labelled")
    p.add_argument("--replace", action="store_true",
                   help="the clip changed since it was added to the project: forget its old frames and labels")
    p.set_defaults(handler=run_video_command)


def run_video_command(args: argparse.Namespace) -> int:
    from ..videolabel import VideoJob

    if args.every < 0:
        raise CaRDesktopError(f"--every must be 0 or more, not {args.every}")
    if not args.clip.exists():
        raise CaRDesktopError(f"{args.clip} does not exist")
    config = config_from_args(args, crf_in_subprocess=False)
    test_models = wants_test_models(args)
    concepts = ConceptList.parse(read_concepts(args))
    job = VideoJob(concepts, config, every=args.every, scene_cuts=args.scene_cuts, cut_threshold=args.cut_threshold,
                   sam2_model=args.sam2, test_models=test_models, overwrite=args.overwrite)
    if test_models:
        print("WARNING: test models (tiny, random weights, tiny SAM 2): the masks mean nothing.", file=sys.stderr)
    with open_or_create(args.project, args.clip.parent) as project:  # the clip (file or frame folder) is inside
        record, info = _add(project, args)   # first: the guard then knows the clip as an input
        guard = project.output_guard(args.force)
        for path, what in ((args.export, "COCO file"), (args.ytvis, "YouTube-VIS file")):
            if path is not None:  # refused now, not after the labelling
                guard.check_file(path, what)
        if args.extract_frames is not None:
            guard.check_dir(args.extract_frames, "frame folder")
        return _label(args, project, job, test_models, record, info)


def _add(project, args: argparse.Namespace):
    from ..videolabel import add_clip, clip_rel_path

    if args.replace:
        old = video_store.find_video(project, clip_rel_path(project, args.clip))
        if old is not None:
            video_store.remove_video(project, old.id)
    return add_clip(project, args.clip)


def _label(args: argparse.Namespace, project, job, test_models: bool, record, info) -> int:
    from ..engine.pipeline import CaRPipeline
    from ..videolabel import VideoProgress, run_video

    for warning in info.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{record.rel_path}: {record.frame_count} frames, {record.width}x{record.height}"
          + (f", {record.fps:.2f} frames/s" if record.fps else ""), file=sys.stderr)
    bar = ProgressBar(unit="frames")
    stage = {"name": ""}

    def progress(p: VideoProgress) -> None:
        if p.stage == "done":
            bar.close()
            return
        if p.stage != stage["name"]:
            stage["name"] = p.stage
            bar.stage(p.stage, p.total)
        bar.update(p.done, p.total, tail=f"frame {p.frame}" if p.frame is not None else "")

    stop, cancel = CancelToken(), CancelToken()
    start = time.monotonic()
    with InterruptHandler(stop, cancel, bar, item="key frame or run"):
        report = run_video(CaRPipeline(job.config, test_models=test_models), project, record.id, job,
                           progress=progress, cancel=cancel, stop=stop)
    print(f"key frames {len(report.key_frames)}: {report.keys_labelled} labelled, {report.keys_skipped} already done; "
          f"propagation: {report.runs_done} runs ({report.frames_stored} frames), {report.runs_skipped} already done"
          + (f"; {report.stale_removed} outdated masks removed" if report.stale_removed else "")
          + f" in {format_duration(time.monotonic() - start)}")
    for failure in report.failed:
        print(f"  failed: {failure}")
    if report.stopped:
        print("stopped before the end; everything finished is saved. Run the same command again to resume.")
        if args.export or args.ytvis:
            print("not exported: the run was stopped", file=sys.stderr)
        return EXIT_STOPPED
    _export(args, project, record)
    return EXIT_FAILED if report.failed else EXIT_OK


def _export(args: argparse.Namespace, project, record) -> None:
    from ..videolabel import extract_frames

    files = None
    if args.extract_frames is not None:
        bar = ProgressBar("extracting frames", unit="frames")
        files = extract_frames(project, record.id, args.extract_frames, fmt=args.frame_format, force=args.force,
                               progress=bar)
        bar.close()
        print(f"wrote {len(files)} frames under {args.extract_frames}")
    if args.export is not None:
        rep = export_video_coco(project, args.export, [record.id], frame_files=files, fmt="rle", force=args.force)
        print(f"exported {rep.images} frames, {rep.annotations} annotations to {rep.path}")
        for note in rep.notes:
            print(f"note: {note}")
    if args.ytvis is not None:
        names = None if files is None else {record.id: [files[i] for i in video_store.frame_ids(project, record.id)]}
        rep = export_ytvis(project, args.ytvis, [record.id], file_names=names, force=args.force)
        print(f"exported {rep.annotations} tracks over {rep.images} frames to {rep.path}")
