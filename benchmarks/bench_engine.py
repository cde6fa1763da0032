"""Benchmark of the CaR engine, fp32 against bfloat16: real ViT-B-16 + ViT-L-14, random weights, on the CPU.

In one run, for each precision (fp32, then bf16 -- both built from the same seeded random weights):

* a cold run (models loaded, nothing cached: no image features, no text embeddings, no disk cache)
  on the first photo at 512x384 with 8 concepts, SAM off: wall time, time per stage, model passes;
* a warm run on the same photo with one concept more (image features and texts cached);
* one run on each other test photo, for the agreement figures.

Then it prints the two precisions side by side with the cold and warm ratios, and the agreement of
bf16 with fp32 on every photo: surviving sets identical, the largest difference of a classifier score
P at any step, and the smallest final-mask IoU (targets: identical, <= 1e-2, >= 0.98). Finally it
measures, on one photo, what running the Grad-CAM pass and the CLIP-ES refinement in bf16 would
change (they stay fp32 in the engine), and the classifier encoding each image once against once per
template (what the released code does).

Usage: .venv/bin/python benchmarks/bench_engine.py [--device cpu] [--threads N] [--skip-extras]
Run it alone (``flock /tmp/bench.lock ...``): a ViT-L/14 in fp32 takes 1.7 GB and the figures are
times. Random weights make the loop's removals arbitrary; the figures are about cost and agreement.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from car_desktop.engine import cam_refine
from car_desktop.engine.config import preset
from car_desktop.engine.device import Precision, bf16_probe, cpu_has_bf16
from car_desktop.engine.image_io import load_image
from car_desktop.engine.pipeline import CaRPipeline, resize_long_side

CONCEPTS = ["person", "astronaut suit", "flag", "rocket", "dog", "car", "tree", "pizza"]
PHOTOS = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
SEED = 0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def photo(name: str) -> np.ndarray:
    image = load_image(ROOT / "tests" / "data" / name)
    return np.ascontiguousarray(cv2.resize(image, (512, 384), interpolation=cv2.INTER_AREA))


def run_precision(precision: str, device: str, images: dict[str, np.ndarray]) -> dict:
    config = preset("objects", proposal_pretrained=None, classifier_pretrained=None, sam_mode="off",
                    device=device, precision=precision, crf_in_subprocess=False)
    pipe = CaRPipeline(config, text_disk_cache=False)
    torch.manual_seed(SEED)  # the same random weights for both precisions
    t0 = time.perf_counter()
    pipe.load_models()
    load_s = time.perf_counter() - t0
    out: dict = {"load_s": load_s, "results": {}}
    first = PHOTOS[0]
    t0 = time.perf_counter()
    out["cold"] = pipe.run(images[first], CONCEPTS)
    out["cold_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["warm"] = pipe.run(images[first], [*CONCEPTS, "helmet visor"])
    out["warm_s"] = time.perf_counter() - t0
    out["results"][first] = out["cold"]
    for name in PHOTOS[1:]:
        out["results"][name] = pipe.run(images[name], CONCEPTS, keep_soft_maps=False)
    out["pipe"] = pipe
    return out


def agreement(a, b) -> tuple[bool, float, float]:
    """(same surviving sets at every step and at the end, max |dP| over aligned steps, min IoU)."""
    same = [s.surviving for s in a.steps] == [s.surviving for s in b.steps] and \
        [c.status for c in a.concepts] == [c.status for c in b.concepts]
    dp = 0.0
    for sa, sb in zip(a.steps, b.steps):
        for i in set(sa.scores) & set(sb.scores):
            dp = max(dp, abs(sa.scores[i] - sb.scores[i]))
    ious = []
    for ca, cb in zip(a.concepts, b.concepts):
        if ca.mask.any() or cb.mask.any():
            ious.append((ca.mask & cb.mask).sum() / max((ca.mask | cb.mask).sum(), 1))
    return same, dp, float(min(ious)) if ious else 1.0


def stages(result) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())


def passes(result) -> str:
    return ", ".join(f"{k}={v}" for k, v in result.passes.items() if v)


def extras(pipe, image: np.ndarray) -> None:
    """What bf16 would do to the Grad-CAM pass and to the refinement, and encode-once vs per template."""
    gen, clf = next(iter(pipe._generators.values())), next(iter(pipe._classifiers.values()))
    config = pipe.config
    feats = gen.prepare(image)
    texts = CONCEPTS
    background = [config.proposal_template.format(b) for b in config.background_words]
    q = gen.text_encoder.encode(gen.clip, texts)
    bg = gen.text_encoder.encode(gen.clip, background)
    bf16 = Precision(torch.float32, torch.bfloat16, "cpu")
    t0 = time.perf_counter()
    cams32 = gen.grad_cams(feats, q, bg)
    t32 = time.perf_counter() - t0
    t0 = time.perf_counter()
    cams16 = gen.grad_cams(feats, q, bg, precision=bf16)
    t16 = time.perf_counter() - t0
    print(f"\n== Grad-CAM pass in bf16 (engine keeps fp32): {t32:.2f} s fp32, {t16:.2f} s bf16, "
          f"max |dCAM| {np.abs(cams32 - cams16).max():.3f}, "
          f"min IoU of CAM > 0.4: {min(_iou(a > 0.4, b > 0.4) for a, b in zip(cams32, cams16)):.3f}")
    masks = np.stack([cam_refine.box_mask_from_cam(c, config.lam) for c in cams32])
    ref32 = cam_refine.refine_cams(feats.affinity, cams32, masks)
    t0 = time.perf_counter()
    aff16 = cam_refine.refinement_matrix(feats.attn_mean.bfloat16()).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref16 = cam_refine.refine_cams(aff16, cams32, masks)
    t16 = time.perf_counter() - t0
    t0 = time.perf_counter()
    cam_refine.refine_cams(cam_refine.refinement_matrix(feats.attn_mean), cams32, masks)
    t32 = time.perf_counter() - t0
    print(f"== CLIP-ES refinement in bf16 (engine keeps fp32): {t32:.3f} s fp32, {t16:.3f} s bf16, "
          f"max |dmap| {np.abs(ref32 - ref16).max():.3f}, min IoU of map > eta: "
          f"{min(_iou(a > config.eta, b > config.eta) for a, b in zip(ref32, ref16)):.3f}")
    from car_desktop.engine.visual_prompts import apply_visual_prompts

    work = resize_long_side(image, config.work_long_side)
    maps = np.random.default_rng(0).random((2, *work.shape[:2])).astype(np.float32)
    imgs = [apply_visual_prompts(work, m > config.eta, config.prompts, soft_map=m) for m in maps]
    t0 = time.perf_counter()
    clf.score(imgs, texts[:2], config.templates)
    t_once = time.perf_counter() - t0
    t0 = time.perf_counter()
    for tpl in config.templates:  # 15 encodes of each image, as the released code does
        clf.score(imgs, texts[:2], [tpl])
    t_per = time.perf_counter() - t0
    print(f"== classifier ({clf.clip.precision.name}), 2 prompted images: encode once {t_once:.2f} s, "
          f"once per template {t_per:.2f} s, ratio {t_per / t_once:.1f}x")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--skip-extras", action="store_true", help="skip the Grad-CAM/refinement/template extras")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = {name: photo(name) for name in PHOTOS}
    probe = bf16_probe(use_cache=False) if args.device == "cpu" else {}
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"native bf16: {cpu_has_bf16()}, probe: {probe}")
    low = "bf16" if args.device == "cpu" else "fp16"
    runs = {}
    for precision in ("fp32", low):
        t0 = time.perf_counter()
        runs[precision] = run_precision(precision, args.device, images)
        print(f"[{precision}] done in {time.perf_counter() - t0:.1f} s (models loaded in "
              f"{runs[precision]['load_s']:.1f} s), peak RSS {peak_rss_mb():.0f} MB")
        if precision == "fp32":
            del runs[precision]["pipe"]  # free the fp32 models before loading the next ones
    a, b = runs["fp32"], runs[low]
    print(f"\n{'':34}{'fp32':>10}{low:>10}{'ratio':>8}")
    print(f"{'cold run, 8 concepts (s)':34}{a['cold_s']:10.2f}{b['cold_s']:10.2f}{a['cold_s'] / b['cold_s']:8.2f}x")
    print(f"{'warm run, same photo, +1 (s)':34}{a['warm_s']:10.2f}{b['warm_s']:10.2f}{a['warm_s'] / b['warm_s']:8.2f}x")
    for key in ("cold", "warm"):
        for p, r in ((" fp32", a), (f" {low}", b)):
            print(f"  {key}{p}: stages (s) {stages(r[key])}")
            print(f"  {key}{p}: passes {passes(r[key])}; steps "
                  + " -> ".join(str(len(s.surviving)) for s in r[key].steps))
    print(f"\nagreement of {low} with fp32 (targets: same survivors, max |dP| <= 1e-2, min IoU >= 0.98):")
    ok = True
    for name in PHOTOS:
        same, dp, iou = agreement(a["results"][name], b["results"][name])
        ok &= same and dp <= 1e-2 and iou >= 0.98
        print(f"  {name:14} survivors identical: {same}, max |dP| {dp:.2e}, min mask IoU {iou:.4f}")
    print(f"  all within targets: {ok}")
    if not args.skip_extras:
        extras(b["pipe"], images[PHOTOS[0]])
    print(f"\npeak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
