"""Benchmark of the CaR engine: real ViT-B-16 + ViT-L-14 architectures with random weights, on the CPU.

One 512x384 photo, 8 concepts, SAM off. Prints, per stage, the wall time and the number of model
passes (proposal image passes, last-block gradient passes, classifier image passes, text encodes) and
the peak RSS; then a warm second run on the same image adding one concept, reported as a ratio to the
cold run. Finally it measures, on the same prompted images, the classifier encoding each image once
against re-encoding it once per template (what the released code does), as a ratio.

Usage: .venv/bin/python benchmarks/bench_engine.py [--device cpu|cuda] [--image PATH]
Random weights make the loop's removals arbitrary; the figures are about cost, not quality.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from car_desktop.engine.config import preset  # noqa: E402
from car_desktop.engine.image_io import load_image  # noqa: E402
from car_desktop.engine.pipeline import CaRPipeline, resize_long_side  # noqa: E402

CONCEPTS = ["person", "astronaut suit", "flag", "rocket", "dog", "car", "tree", "pizza"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def show(title: str, result, wall: float) -> None:
    print(f"\n== {title}: {wall:.2f} s wall, peak RSS {peak_rss_mb():.0f} MB")
    for stage, t in result.timings.items():
        print(f"  {stage:<12} {t:7.2f} s")
    print("  passes:", ", ".join(f"{k}={v}" for k, v in result.passes.items() if v))
    print("  steps:", " -> ".join(str(len(s.surviving)) for s in result.steps),
          "->", sum(c.status.value != "removed" for c in result.concepts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--image", type=Path, default=ROOT / "tests" / "data" / "astronaut.jpg")
    ap.add_argument("--theta", type=float, default=None, help="override theta (default: preset)")
    args = ap.parse_args()
    torch.manual_seed(0)
    image = load_image(args.image)
    image = np.ascontiguousarray(
        __import__("cv2").resize(image, (512, 384), interpolation=__import__("cv2").INTER_AREA))
    overrides = {"theta": args.theta} if args.theta is not None else {}
    config = preset("objects", proposal_pretrained=None, classifier_pretrained=None, sam_mode="off",
                    device=args.device, **overrides)
    pipe = CaRPipeline(config)
    t0 = time.perf_counter()
    pipe.load_models()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, models loaded in "
          f"{time.perf_counter() - t0:.1f} s (random weights), image {image.shape[1]}x{image.shape[0]}")

    t0 = time.perf_counter()
    cold = pipe.run(image, CONCEPTS)
    cold_wall = time.perf_counter() - t0
    show("cold run, 8 concepts", cold, cold_wall)
    prompted_images = sum(len(s.surviving) for s in cold.steps)
    print(f"  prompted images {prompted_images}; classifier image passes {cold.passes['classifier_image_passes']}"
          f" (released code: {15 * prompted_images})")

    t0 = time.perf_counter()
    warm = pipe.run(image, CONCEPTS + ["helmet visor"])
    warm_wall = time.perf_counter() - t0
    show("warm run, same image, +1 concept", warm, warm_wall)
    print(f"  warm/cold wall ratio: {warm_wall / cold_wall:.2f}")

    # Encode-once against per-template re-encoding, on the prompted images of one step.
    from car_desktop.engine.visual_prompts import apply_visual_prompts

    classifier = next(iter(pipe._classifiers.values()))
    work = resize_long_side(image, config.work_long_side)
    maps = np.random.default_rng(0).random((2, *work.shape[:2])).astype(np.float32)
    imgs = [apply_visual_prompts(work, m > config.eta, config.prompts, soft_map=m) for m in maps]
    texts = CONCEPTS[:2]
    t0 = time.perf_counter()
    once = classifier.score(imgs, texts, config.templates)
    t_once = time.perf_counter() - t0
    t0 = time.perf_counter()
    per_template = sum(classifier.score(imgs, texts, [tpl]) for tpl in config.templates)  # 15 encodes each
    t_per = time.perf_counter() - t0
    print(f"\n== classifier, 2 prompted images: encode once {t_once:.2f} s, once per template "
          f"{t_per:.2f} s, ratio {t_per / t_once:.1f}x")
    del once, per_template
    print(f"\npeak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
