"""Benchmark of ``batch --ray`` against the local batch, and of the driver's write rate (SAM off, CPU).

On one folder of N distinct images (bench_batch's crops of the test photos) and the real ViT-B-16 +
ViT-L-14 architectures with random weights (seeded alike in every process: random weights decide how many
steps the CaR loop runs), it measures, all in one run:

1. the local batch (``run_autolabel``, models loaded beforehand), before and after the Ray runs (the load
   of a shared machine changes): images/min after the first image, wall and engine seconds per image;
2. ``run_autolabel_ray`` on a local Ray with 1 and with 2 workers: the same, plus the start-up (Ray,
   actors, model loading) until the first answer. Every pipeline, local or worker, uses one CPU thread
   (a worker of 1 CPU): 1 worker is the local batch moved onto Ray, 2 workers scale it out, and no
   thread pool waits for a core another pool holds (on a busy 2-core machine that distorts everything);
3. the per-image overhead Ray adds: the wall time per image outside the engine, Ray against local; and
   a Ray run with a stub pipeline that answers at once with realistic masks (reading, scheduling, the
   actor call, RLE, transport, the driver's save), in ms per image;
4. the driver's write rate: images/s it saves from worker answers (JSON -> masks -> one transaction
   each), at the benchmark's size and at 1920x1080 - the ceiling of any cluster fed by one driver.

It ends with the arithmetic of how many workers of a given speed one driver can feed.

Usage: .venv/bin/python benchmarks/bench_ray_batch.py [--images 12] [--size 512x384] [--writes 300] [--tiny]
Random weights make the loop's removals arbitrary; the figures are about cost, not quality.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_batch import CONCEPTS, write_folder

from car_desktop import autolabel, autolabel_ray
from car_desktop.annotations import Project
from car_desktop.autolabel import (
    AutoLabelJob,
    add_folder,
    plan_autolabel,
    run_autolabel,
    save_car_result,
)
from car_desktop.autolabel_ray import RayOptions, run_autolabel_ray
from car_desktop.compact_result import compact_result, expand_result
from car_desktop.engine.concepts import Concept
from car_desktop.engine.config import preset
from car_desktop.engine.pipeline import CaRPipeline
from car_desktop.engine.results import CaRResult, ConceptResult, ConceptStatus


def blob_result(height: int, width: int, n_concepts: int = 4, seed: int = 0) -> CaRResult:
    """A CaR-like result: all concepts but the last kept, each an ellipse or two (one with a hole)."""
    rng = np.random.default_rng(seed)
    concepts = []
    for i in range(n_concepts):
        mask = np.zeros((height, width), np.uint8)
        kept = i < n_concepts - 1
        for _ in range(1 + i % 2 if kept else 0):
            centre = (int(rng.integers(width // 5, 4 * width // 5)), int(rng.integers(height // 5, 4 * height // 5)))
            axes = (int(rng.integers(width // 12, width // 4)), int(rng.integers(height // 12, height // 4)))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        if i == 0:
            cv2.circle(mask, (width // 2, height // 2), max(2, width // 40), 0, -1)
        status = ConceptStatus.KEPT if kept else ConceptStatus.REMOVED
        concepts.append(ConceptResult(i, Concept((f"c{i}",)), mask.astype(bool), 0.5 + 0.1 * i if kept else 0.0,
                                      status, removed_at_step=None if kept else 1,
                                      removed_score=None if kept else 0.1))
    return CaRResult(concepts, [], np.zeros((height, width), np.int32), (height, width), timings={"stub": 0.0})


class StubPipeline:
    """Answers at once with ``blob_result`` at the image's size: what is left is Ray's and the driver's cost."""

    test_models = False

    def __init__(self, config, *, test_models: bool = False) -> None:
        self.cache: dict[tuple[int, int], CaRResult] = {}

    def load_models(self) -> None:
        pass

    def run(self, image, concepts, **kwargs) -> CaRResult:
        size = image.shape[:2]
        if size not in self.cache:
            self.cache[size] = blob_result(*size, n_concepts=len(concepts))
        return self.cache[size]


def seeded_pipeline(config, *, test_models: bool = False) -> CaRPipeline:
    """A pipeline whose random weights are the same in every process (the worker loads the models right
    after building it): random weights decide how many steps the CaR loop runs, so every run must share them."""
    torch.manual_seed(0)
    return CaRPipeline(config, test_models=test_models)


@dataclass
class Run:
    """One timed run: per finished image, when it was saved and the engine seconds it took."""

    start: float
    saved_at: list[float] = field(default_factory=list)
    engine_s: list[float] = field(default_factory=list)
    worker_extra_s: list[float] = field(default_factory=list)  # Ray workers: decode + RLE encode

    @property
    def steady_wall(self) -> float:
        """Seconds per image between the first and the last saved image (start-up left out)."""
        return (self.saved_at[-1] - self.saved_at[0]) / (len(self.saved_at) - 1)

    @property
    def steady_engine(self) -> float:
        """Mean engine seconds of the images after the first (the first also encodes the concepts' texts)."""
        return float(np.mean(self.engine_s[1:]))

    @property
    def steady_extra(self) -> float:
        return float(np.mean(self.worker_extra_s[1:])) if self.worker_extra_s else 0.0


def timed_run(run, folder: Path, project_path: Path, job_args: dict) -> Run:
    """``run(project, job)`` on a new project of ``folder``, timing each image's save (both batches save
    through ``save_car_result``, which is wrapped here to read each result's timings)."""
    timing = Run(0.0)
    real = autolabel.save_car_result

    def timed_save(project, image_id, rel, result, *args):
        extra = {"decode", "encode"}
        timing.engine_s.append(sum(v for k, v in result.timings.items() if k not in extra))
        if extra & set(result.timings):
            timing.worker_extra_s.append(sum(result.timings.get(k, 0.0) for k in extra))
        out = real(project, image_id, rel, result, *args)
        timing.saved_at.append(time.perf_counter())
        return out

    autolabel.save_car_result = autolabel_ray.save_car_result = timed_save
    try:
        with Project.create(project_path, folder) as project:
            ids, failures = add_folder(project, folder)
            assert not failures, failures
            timing.start = time.perf_counter()
            report = run(project, AutoLabelJob(image_ids=ids, **job_args))
    finally:
        autolabel.save_car_result = autolabel_ray.save_car_result = real
    assert report.done == len(ids) and not report.failed, report.failed
    return timing


def run_local(config, folder: Path, project_path: Path, job_args: dict) -> Run:
    """The local batch, models loaded beforehand (and freed after)."""
    pipeline = seeded_pipeline(config, test_models=job_args["test_models"])
    pipeline.load_models()
    timing = timed_run(lambda p, j, pl=pipeline: run_autolabel(pl, p, j), folder, project_path, job_args)
    del pipeline
    gc.collect()
    return timing


def write_rate(tmp: Path, size: tuple[int, int], n: int) -> tuple[float, float, int]:
    """(images/s, ms per image, answer bytes) of the driver's side: parse a worker answer, decode its
    masks, save the image in one transaction - n images of ``size`` (WxH) in a fresh project."""
    width, height = size
    folder = tmp / f"write-{width}x{height}"
    folder.mkdir()
    config = preset("objects", sam_mode="off")
    answers = [json.dumps({"status": "done", "result": compact_result(blob_result(height, width, seed=s))})
               for s in range(8)]
    with Project.create(tmp / f"write-{width}x{height}.cardb", folder) as project:
        ids = [project.add_image_entry(f"img{i:05d}.jpg", width, height).id for i in range(n)]
        job = AutoLabelJob("a, b, c, d", config, image_ids=ids)
        key, report, todo = plan_autolabel(project, job, False)
        owner = project.new_claim_owner()
        start = time.perf_counter()
        for i, image_id in enumerate(todo):
            result = expand_result(json.loads(answers[i % len(answers)])["result"])
            save_car_result(project, image_id, f"img{i:05d}.jpg", result, key, report, owner)
        elapsed = time.perf_counter() - start
    return n / elapsed, 1000 * elapsed / n, int(np.mean([len(a) for a in answers]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--size", default="512x384", help="image size WxH")
    ap.add_argument("--writes", type=int, default=300, help="images saved in the write-rate measurement")
    ap.add_argument("--stub-images", type=int, default=200, help="images of the stub (overhead) Ray run")
    ap.add_argument("--tiny", action="store_true", help="the tiny test models (a quick check of this script)")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    cpus = os.cpu_count() or 2
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the local pipeline, as a Ray worker of 1 CPU
    config = preset("objects", proposal_pretrained=None, classifier_pretrained=None, sam_mode="off",
                    device="cpu", crf_in_subprocess=False)
    job_args = {"concepts": CONCEPTS, "config": config, "test_models": args.tiny}
    import ray

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "images"
        folder.mkdir()
        write_folder(folder, args.images, size)
        print(f"{args.images} images {size[0]}x{size[1]}, ViT-B-16 + ViT-L-14 (random weights), SAM off, "
              f"{cpus} CPUs, 1 thread per pipeline, concepts: {CONCEPTS}")

        # 1. and 2., local runs before and after the Ray runs: this machine's load changes between runs.
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)
        try:
            local: list[Run] = []
            rays: dict[int, Run] = {}
            for step in ("local", 1, 2, "local"):
                if step == "local":
                    local.append(run_local(config, folder, tmp / f"local{len(local)}.cardb", job_args))
                    r = local[-1]
                    print(f"local batch:      {60 / r.steady_wall:6.2f} images/min after the first image; "
                          f"{r.steady_wall:.2f} s of wall time per image, {r.steady_engine:.2f} s in the engine")
                    continue
                workers = int(step)
                opts = RayOptions(workers=workers, cpus_per_worker=1)
                r = rays[workers] = timed_run(
                    lambda p, j, o=opts: run_autolabel_ray(p, j, o, pipeline_factory=seeded_pipeline),
                    folder, tmp / f"ray{workers}.cardb", job_args)
                print(f"--ray, {workers} worker{'s' if workers > 1 else ' '}: {60 / r.steady_wall:6.2f} images/min "
                      f"after the first answer (start-up to it {r.saved_at[0] - r.start:.1f} s); "
                      f"{r.steady_wall:.2f} s of wall time per image, {r.steady_engine:.2f} s in the engine "
                      f"+ {r.steady_extra:.3f} s decode and RLE on the worker, per worker")
            local_wall = float(np.mean([r.steady_wall for r in local]))
            local_gap = float(np.mean([r.steady_wall - r.steady_engine for r in local]))
            print(f"ratios to the mean local rate ({60 / local_wall:.2f} images/min; runs "
                  f"{60 / local[0].steady_wall:.2f} and {60 / local[1].steady_wall:.2f}): "
                  f"1 worker {local_wall / rays[1].steady_wall:.2f}x, "
                  f"2 workers {local_wall / rays[2].steady_wall:.2f}x")
            ray_gap = rays[1].steady_wall - rays[1].steady_engine
            print(f"time per image outside the engine: local {local_gap:.2f} s, --ray with 1 worker {ray_gap:.2f} s "
                  f"(difference {ray_gap - local_gap:+.2f} s, {(ray_gap - local_gap) / local_wall:+.1%} of an image: "
                  "at this scale, noise; the stub run below isolates Ray's own cost)")

            # 3. Ray's own cost per image: a stub pipeline that answers at once.
            stub_folder = tmp / "stub"
            stub_folder.mkdir()
            write_folder(stub_folder, args.stub_images, size)
            stub_opts = RayOptions(workers=1, cpus_per_worker=1)
            r = timed_run(lambda p, j: run_autolabel_ray(p, j, stub_opts, pipeline_factory=StubPipeline),
                          stub_folder, tmp / "stub.cardb", job_args)
            print(f"Ray overhead:     {1000 * r.steady_wall:6.1f} ms per image with a stub pipeline "
                  f"({args.stub_images} images, 1 worker; read, schedule, call, RLE, transport, save): "
                  f"{r.steady_wall / local_wall:.2%} of the local batch's {local_wall:.1f} s per image")
        finally:
            ray.shutdown()

        # 4. the driver's write rate
        print("driver write rate (parse answer + decode masks + one transaction per image, 3 masks each):")
        writes = {}
        for wsize in (size, (1920, 1080)):
            per_s, ms, nbytes = write_rate(tmp, wsize, args.writes)
            writes[wsize] = per_s
            print(f"  {wsize[0]}x{wsize[1]}: {per_s:7.1f} images/s ({ms:.2f} ms per image; "
                  f"answer {nbytes / 1024:.1f} kB)")

    worker_per_s = 1 / rays[1].steady_wall
    ceiling = min(writes.values())
    print(f"\nsizing: one driver saves at most {ceiling:.0f} images/s (1920x1080 answers), so it keeps up with "
          f"N workers of r images/s each while N * r < {ceiling:.0f}: at this machine's CPU worker rate "
          f"({worker_per_s:.3f} images/s) N = {ceiling / worker_per_s:.0f}; at 1, 2 and 5 images/s per GPU "
          f"worker N = {ceiling / 1:.0f}, {ceiling / 2:.0f} and {ceiling / 5:.0f}.")


if __name__ == "__main__":
    main()
