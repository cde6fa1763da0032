"""Benchmark of folder auto-labelling: the real ViT-B-16 + ViT-L-14 architectures (random weights), SAM off.

Writes N distinct images (crops, flips and colour shifts of the test photos, 512x384 by default) to a
temporary folder, creates a project and runs ``car_desktop.autolabel.run_autolabel`` over it, as
``car-desktop batch`` does. Prints images per minute (models loaded beforehand, so the rate is the
steady-state one), the fraction of the loop's wall time spent in each engine stage (summed
CaRResult.timings) and outside the engine (waiting for the decoder, storing masks), the text encodes
after the first image against after the last (the concept list is encoded once for the folder), and
the peak and current RSS at two checkpoints, with the growth between them (memory must stay flat).

Usage: .venv/bin/python benchmarks/bench_batch.py [--images 50] [--checkpoints 10,50] [--device cpu]
Random weights make the loop's removals arbitrary; the figures are about cost, not quality.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from car_desktop.annotations import Project
from car_desktop.autolabel import AutoLabelJob, add_folder, run_autolabel
from car_desktop.engine.config import preset
from car_desktop.engine.image_io import load_image
from car_desktop.engine.pipeline import CaRPipeline

CONCEPTS = "person, flag, cat, cup"
PHOTOS = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def write_folder(folder: Path, n: int, size: tuple[int, int]) -> None:
    """n distinct images: random crops of the test photos, flipped and tinted, resized to ``size``."""
    rng = np.random.default_rng(0)
    photos = [load_image(ROOT / "tests" / "data" / name) for name in PHOTOS]
    for i in range(n):
        src = photos[i % len(photos)]
        h, w = src.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = src[y:y + ch, x:x + cw].astype(np.float32) * rng.uniform(0.8, 1.2, 3)
        if i % 2:
            crop = crop[:, ::-1]
        img = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize(size, Image.BICUBIC)
        img.save(folder / f"img{i:04d}.jpg", quality=92)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--checkpoints", default="10,50", help="image counts at which RSS is sampled")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default="512x384", help="image size WxH")
    ap.add_argument("--concepts", default=CONCEPTS)
    ap.add_argument("--no-crf-subprocess", action="store_true", help="run the CRF in this process (as the CLI does)")
    ap.add_argument("--tiny", action="store_true",
                    help="the tiny test models instead of ViT-B-16 + ViT-L-14: fast, for long memory runs (200+)")
    args = ap.parse_args()
    checkpoints = sorted({min(int(c), args.images) for c in args.checkpoints.split(",")})
    size = tuple(int(v) for v in args.size.lower().split("x"))
    torch.manual_seed(0)

    config = preset("objects", proposal_pretrained=None, classifier_pretrained=None, sam_mode="off",
                    device=args.device, crf_in_subprocess=not args.no_crf_subprocess)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        write_folder(folder, args.images, size)
        pipeline = CaRPipeline(config, test_models=args.tiny)
        t0 = time.perf_counter()
        pipeline.load_models()
        load_s = time.perf_counter() - t0
        rss_after_load = current_rss_mb()
        print(f"device {pipeline.device}, torch threads {torch.get_num_threads()}, {args.images} images "
              f"{size[0]}x{size[1]}, concepts: {args.concepts}")
        models = "tiny test models" if args.tiny else "ViT-B-16 + ViT-L-14, random weights"
        print(f"models ({models}) loaded in {load_s:.1f} s; RSS {rss_after_load:.0f} MB")

        samples: dict[int, tuple[float, float]] = {}
        encodes: list[int] = []
        rss: list[float] = []
        times: list[float] = []

        def progress(p) -> None:
            if p.event not in ("image done", "image failed"):
                return
            times.append(time.perf_counter())
            encodes.append(pipeline.counter.text_encodes)
            rss.append(current_rss_mb())
            if p.processed in checkpoints:
                samples[p.processed] = (peak_rss_mb(), current_rss_mb())
            if args.tiny and p.processed % 10:
                return
            print(f"  {p.processed:3d}/{p.todo}  {p.rate_per_min or 0:5.1f} img/min  "
                  f"RSS {rss[-1]:6.0f} MB  {p.current}", flush=True)

        with Project.create(Path(tmp) / "bench.cardb", folder) as project:
            ids, failures = add_folder(project, folder)
            assert not failures, failures
            job = AutoLabelJob(args.concepts, config, image_ids=ids)
            start = time.perf_counter()
            report = run_autolabel(pipeline, project, job, progress=progress)
            wall = time.perf_counter() - start
            annotations = project.count_annotations()

    n = report.done + len(report.failed)
    print(f"\n== {report.done} images labelled, {len(report.failed)} failed, {annotations} masks stored")
    print(f"rate: {60 * n / wall:.2f} images/min over the run ({wall:.0f} s)", end="")
    if len(times) > 2:
        steady = (len(times) - 1) / (times[-1] - times[0]) * 60
        print(f"; {steady:.2f} images/min after the first image")
    else:
        print()
    print("\n== time per stage (fraction of the loop's wall time)")
    engine = sum(report.stage_seconds.values())
    for stage, sec in sorted(report.stage_seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<12} {sec / wall:6.1%}   ({sec / max(n, 1):.2f} s/image)")
    print(f"  {'outside engine':<12} {(wall - engine) / wall:6.1%}   (decode wait, mask encoding, database)")
    print(f"\n== text encodes: {encodes[0] if encodes else 0} after image 1, {encodes[-1] if encodes else 0} "
          f"after image {n} (cache reused across the folder)")
    print("\n== memory (RSS)")
    for count in checkpoints:
        if count in samples:
            peak, cur = samples[count]
            print(f"  after image {count:3d}: peak {peak:7.0f} MB, current {cur:7.0f} MB")
    if len(samples) >= 2:
        (a, (pa, ca)), (b, (pb, cb)) = sorted(samples.items())[0], sorted(samples.items())[-1]
        print(f"  growth image {a} -> {b}: current {cb - ca:+.0f} MB ({(cb - ca) / ca:+.1%}), "
              f"peak {pb - pa:+.0f} MB")
    if len(rss) >= 10:
        # Current RSS wobbles by tens of MB from image to image; the least-squares slope over the second
        # half of the run is the growth that would accumulate over a long folder.
        half = np.arange(len(rss) // 2, len(rss))
        slope = np.polyfit(half + 1, np.asarray(rss)[half], 1)[0]
        print(f"  current RSS over images {half[0] + 1}-{len(rss)}: min {min(rss[half[0]:]):.0f}, "
              f"max {max(rss[half[0]:]):.0f} MB; trend {100 * slope:+.1f} MB per 100 images")


if __name__ == "__main__":
    main()
