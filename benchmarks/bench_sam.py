"""Benchmark of SAM refinement: the cost of one image embedding against prompted decodes.

SAM vit_b with random weights (``sam_model_registry['vit_b'](checkpoint=None)``) on the CPU by default.
Measures, on one 512x384 photo:

* ``set_image`` once (the image encoder, always at 1024 on the long side);
* prompted refinement of several CaR-like masks with the cached embedding (per mask: prompt derivation,
  one multimask decode, IoU matching);
* single clicks (one positive point, then point + previous low-res mask) with the cached embedding;

and reports the ratio click-time / set_image-time (target: a click at least 50x cheaper), plus the
encoder/decoder pass counts, which prove that the embedding was computed once. On a CPU it then
encodes the same photo with the image encoder under bfloat16 autocast (``--precision bf16``, what
``precision=auto`` picks where bf16 is native and faster) and reports the time ratio, the embedding's
cosine to fp32 and the IoU of the refined masks against fp32 (``--no-bf16`` skips it).

Usage: .venv/bin/python benchmarks/bench_sam.py [--model vit_b] [--device cpu] [--clicks 20]
Random weights make the masks meaningless; the figures are about cost only.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from car_desktop.engine.results import PassCounter
from car_desktop.engine.sam_interactive import SamSession
from car_desktop.engine.sam_models import load_sam
from car_desktop.engine.sam_refine import refine_prompted

log = logging.getLogger("bench_sam")


def load_photo(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if bgr is None:
        log.info("(no photo at %s: using a synthetic image)", path)
        rng = np.random.default_rng(0)
        img = cv2.GaussianBlur(rng.integers(0, 255, (384, 512, 3), dtype=np.uint8), (0, 0), 6)
        return np.ascontiguousarray(img)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(cv2.resize(rgb, (512, 384), interpolation=cv2.INTER_AREA))


def car_like_masks(h: int, w: int) -> list[np.ndarray]:
    """Five coarse masks: ellipses, a two-component mask and a bar."""
    masks = []
    for cx, cy, ax, ay in [(130, 150, 80, 100), (380, 200, 90, 60), (256, 300, 150, 50)]:
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, (cx, cy), (ax, ay), 0, 0, 360, 1, -1)
        masks.append(m.astype(bool))
    masks.append(masks[0] | masks[1])
    bar = np.zeros((h, w), bool)
    bar[40:70, 20:490] = True
    masks.append(bar)
    return masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "tiny"])
    ap.add_argument("--checkpoint", type=Path, default=None, help="a SAM .pth (default: random weights)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--image", type=Path, default=ROOT / "tests" / "data" / "astronaut.jpg")
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 encoder comparison")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    t0 = time.perf_counter()
    handle = load_sam(args.model, args.checkpoint, args.device)
    load_s = time.perf_counter() - t0
    image = load_photo(args.image)
    h, w = image.shape[:2]
    counter = PassCounter()
    session = SamSession(handle, counter)
    log.info("SAM %s on %s (%d torch threads), image %dx%d; model built in %.1f s",
             args.model, handle.device, torch.get_num_threads(), w, h, load_s)

    if handle.device.type == "cuda":  # CUDA context, kernel selection: warm up on another image
        SamSession(handle).set_image(np.ascontiguousarray(image[::-1]))
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    session.set_image(image)
    if handle.device.type == "cuda":
        torch.cuda.synchronize()
    set_image_s = time.perf_counter() - t0

    # Warm-up decode (first-call allocations), not counted.
    session.predict([(w / 2, h / 2)], [1])

    masks = car_like_masks(h, w)
    t0 = time.perf_counter()
    outcomes = refine_prompted(session, image, masks, phi_iou=0.7)
    refine_s = (time.perf_counter() - t0) / len(masks)

    rng = np.random.default_rng(0)
    click_times: list[float] = []
    previous = None
    for i in range(args.clicks):
        pt = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
        t0 = time.perf_counter()
        if previous is None or i % 2 == 0:
            previous = session.predict([pt], [1])
        else:  # a correction: positive + negative point with the previous mask as input
            previous = session.predict([pt, (w - pt[0], h - pt[1])], [1, 0],
                                       mask_input=previous.low_res_logits, multimask=False)
        click_times.append(time.perf_counter() - t0)
    click_s = statistics.median(click_times)

    # The same image again (e.g. a second refinement run): served from the cache.
    t0 = time.perf_counter()
    session.set_image(image.copy())
    cached_set_s = time.perf_counter() - t0

    figures = {
        "model": args.model, "device": str(handle.device), "threads": torch.get_num_threads(),
        "image": [w, h], "set_image_s": set_image_s, "cached_set_image_s": cached_set_s,
        "refine_per_mask_s": refine_s, "masks": len(masks),
        "accepted": sum(o.accepted for o in outcomes),
        "click_median_s": click_s, "click_min_s": min(click_times), "click_max_s": max(click_times),
        "clicks": len(click_times),
        "click_over_set_image": click_s / set_image_s,
        "set_image_over_click": set_image_s / click_s,
        "refine_over_set_image": refine_s / set_image_s,
        "passes": counter.snapshot(),
    }
    log.info("set_image (encoder, once):         %8.3f s", set_image_s)
    log.info("set_image again (cached):          %8.4f s", cached_set_s)
    log.info("prompted refinement, per mask:     %8.3f s  (%d masks, %d accepted)",
             refine_s, len(masks), figures["accepted"])
    log.info("click decode, median of %d:        %8.3f s  (min %.3f, max %.3f)",
             len(click_times), click_s, min(click_times), max(click_times))
    log.info("ratio click / set_image:           %8.4f  (a click is %.0fx cheaper; target >= 50x: %s)",
             figures["click_over_set_image"], figures["set_image_over_click"],
             "met" if figures["set_image_over_click"] >= 50 else "NOT met")
    log.info("ratio refine-per-mask / set_image: %8.4f", figures["refine_over_set_image"])
    log.info("passes: encoder %d, decoder %d", counter.sam_image_encodes, counter.sam_decodes)
    if handle.device.type == "cpu" and not args.no_bf16:
        figures["bf16"] = compare_bf16(args, image, session, masks, outcomes, set_image_s)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float))


def compare_bf16(args, image, session32, masks, outcomes32, set_image_s: float) -> dict:
    """The same photo through a bf16-autocast encoder: time, embedding cosine, refined-mask IoU."""
    handle = load_sam(args.model, args.checkpoint, args.device, precision="bf16")
    handle.model.load_state_dict(session32.handle.model.state_dict())  # the same (random) weights
    session = SamSession(handle)
    session.set_image(np.ascontiguousarray(image[::-1]))  # first-call kernel set-up, not counted
    t0 = time.perf_counter()
    session.set_image(image)
    bf16_s = time.perf_counter() - t0
    f32 = session32._current.features.flatten()
    f16 = session._current.features.flatten()
    cosine = float(torch.nn.functional.cosine_similarity(f32, f16, dim=0))
    outcomes = refine_prompted(session, image, masks, phi_iou=0.7)
    ious = [float((a.mask & b.mask).sum() / max((a.mask | b.mask).sum(), 1))
            for a, b in zip(outcomes32, outcomes) if a.mask.any() or b.mask.any()]
    log.info("set_image in bf16 (autocast):      %8.3f s  (%.2fx faster than fp32), embedding cosine %.5f, "
             "refined masks IoU vs fp32: min %.3f", bf16_s, set_image_s / bf16_s, cosine, min(ious, default=1.0))
    return {"set_image_s": bf16_s, "speedup": set_image_s / bf16_s, "cosine": cosine,
            "min_mask_iou": min(ious, default=1.0)}


if __name__ == "__main__":
    main()
