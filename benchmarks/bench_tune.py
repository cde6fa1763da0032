"""Benchmark of ``tune``'s reuse: the cached sweep against a naive sweep (one CaRPipeline.run per setting).

Same images, same settings, same pipeline (so the naive sweep already enjoys the pipeline's own per-image
feature cache and text-embedding cache: the ratio is what the sweep's own caches add on top). Prints the
wall time of both, their ratio, the engine's pass counts for each, and checks that both give the same
label maps. Defaults: the tiny test models, 2 images, 9 thetas x 3 etas; ``--real-architectures`` uses
ViT-B/16 + ViT-L/14 with random weights (minutes on a CPU).

Usage: .venv/bin/python benchmarks/bench_tune.py [--real-architectures] [--images N] [--size 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from car_desktop.engine.concepts import parse_concepts
from car_desktop.engine.config import preset
from car_desktop.engine.pipeline import CaRPipeline
from car_desktop.engine.tuning import PipelineStages
from car_desktop.evaluation import metrics
from car_desktop.evaluation.tuning import TuneImage, grid, sweep

CONCEPTS = "cat, dog, person, sky, grass, car"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real-architectures", action="store_true")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    test_models = not args.real_architectures
    config = preset("objects", sam_mode="off", crf_in_subprocess=False)
    if args.real_architectures:
        config = config.replace(proposal_pretrained=None, classifier_pretrained=None)
    base = np.array(Image.open(ROOT / "tests" / "data" / "chelsea.jpg").convert("RGB"))
    images = [np.array(Image.fromarray(np.roll(base, 37 * k, axis=1)).resize((args.size, args.size * 3 // 4)))
              for k in range(args.images)]
    settings = grid([round(0.1 * t, 1) for t in range(1, 10)], [0.3, 0.4, 0.5])
    concepts = parse_concepts(CONCEPTS)
    pipeline = CaRPipeline(config, test_models=test_models)
    pipeline.run(images[0], CONCEPTS)   # load the models outside both timings

    before = pipeline.counter.snapshot()
    t0 = time.perf_counter()
    naive_maps = [[pipeline.run(im, CONCEPTS, config=config.replace(theta=s.theta, eta=s.eta)).label_map
                   for s in settings] for im in images]
    naive_s = time.perf_counter() - t0
    naive_passes = pipeline.counter.since(before)

    gts = [naive_maps[k][0] for k in range(len(images))]   # any GT will do: we compare the predictions
    before = pipeline.counter.snapshot()
    t0 = time.perf_counter()
    result = sweep([TuneImage(f"im{k}", lambda k=k: (gts[k], PipelineStages(pipeline, config, images[k], concepts)))
                    for k in range(len(images))], len(concepts), settings)
    sweep_s = time.perf_counter() - t0
    sweep_passes = pipeline.counter.since(before)

    # Same predictions: each setting's confusion against image k's first-setting map equals the naive one.
    n = len(concepts) + 1
    for j, s in enumerate(result.scores):
        naive_conf = sum(metrics.confusion_matrix(gts[k], naive_maps[k][j], n) for k in range(len(images)))
        assert np.array_equal(naive_conf, s.confusion), f"setting {s.setting.label} differs"

    print(f"{len(images)} images x {len(settings)} settings, {len(concepts)} concepts, "
          f"{'ViT-B/16 + ViT-L/14 random weights' if args.real_architectures else 'tiny test models'}")
    print(f"naive sweep (CaRPipeline.run per setting): {naive_s:7.2f} s   passes {naive_passes}")
    print(f"cached sweep (car-desktop tune):           {sweep_s:7.2f} s   passes {sweep_passes}")
    print(f"ratio naive / cached: {naive_s / sweep_s:.1f}x; identical label maps for every setting: yes")


if __name__ == "__main__":
    main()
