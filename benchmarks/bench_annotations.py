"""Benchmark of the annotation store and COCO exchange: build a project of N images x M masks
(synthetic 1024x768), export it to COCO (RLE and auto), import it back; at two sizes, so the ratio
shows whether export time grows linearly with the number of annotations. Prints times, peak RSS and
the ratios. Not part of the tests.

    .venv/bin/python benchmarks/bench_annotations.py [--images 10000] [--small 2000] [--masks 10]
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from car_desktop.annotations import Project, Provenance, export_coco, import_coco
from car_desktop.annotations.car_results import CarMask, replace_car_masks

W, H = 1024, 768
log = logging.getLogger("bench_annotations")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def mask_pool(n: int, seed: int = 0) -> list[np.ndarray]:
    """Varied masks: ellipses, some with a hole, some in several parts, some touching the border."""
    rng = np.random.default_rng(seed)
    pool = []
    for i in range(n):
        m = np.zeros((H, W), np.uint8)
        parts = 1 + (i % 7 == 0) * int(rng.integers(1, 6))
        for _ in range(parts):
            cv2.ellipse(m, (int(rng.integers(0, W)), int(rng.integers(0, H))),
                        (int(rng.integers(10, 200)), int(rng.integers(10, 150))), float(rng.uniform(0, 180)),
                        0, 360, 1, -1)
        if i % 5 == 0:  # a hole
            ys, xs = np.nonzero(m)
            if len(ys):
                cy, cx = int(ys.mean()), int(xs.mean())
                cv2.circle(m, (cx, cy), 5, 0, -1)
        pool.append(m.astype(bool))
    return pool


def run_size(n_images: int, n_masks: int, pool: list[np.ndarray], workdir: Path) -> dict[str, float]:
    rng = np.random.default_rng(n_images)
    path = workdir / f"bench_{n_images}.cardb"
    res: dict[str, float] = {}
    t = time.perf_counter()
    with Project.create(path, workdir) as p:
        for k in range(n_masks):
            p.get_or_create_category(f"concept {k}")
        for start in range(0, n_images, 500):
            with p.batch():
                for i in range(start, min(n_images, start + 500)):
                    im = p.add_image_entry(f"dir{i // 1000:03d}/img{i:06d}.jpg", W, H, f"hash{i}")
                    picks = rng.integers(0, len(pool), n_masks)
                    masks = [CarMask(pool[j], float(rng.random()), Provenance(concept=f"concept {k}"))
                             for k, j in enumerate(picks)]
                    replace_car_masks(p, im.id, masks)
        res["annotations"] = p.count_annotations()
        res["create_s"] = time.perf_counter() - t
        res["rss_after_create_mb"] = peak_rss_mb()

        ids = [im.id for im in p.list_images()[:: max(1, n_images // 200)]]
        t = time.perf_counter()
        for i in ids:
            p.list_annotations(i)
        res["list_ms"] = (time.perf_counter() - t) / len(ids) * 1e3
        ann = p.list_annotations(ids[-1])[0]
        m = p.get_mask(ann.id)
        t = time.perf_counter()
        for _ in range(20):
            p.update_mask(ann.id, m)
        res["save_edit_ms"] = (time.perf_counter() - t) / 20 * 1e3

        for fmt in ("rle", "auto"):
            out = workdir / f"bench_{n_images}_{fmt}.json"
            t = time.perf_counter()
            rep = export_coco(p, out, fmt=fmt)
            res[f"export_{fmt}_s"] = time.perf_counter() - t
            res[f"export_{fmt}_mb"] = out.stat().st_size / 1e6
            res[f"export_{fmt}_polygons"] = rep.polygons
            res[f"rss_after_export_{fmt}_mb"] = peak_rss_mb()
    with Project.create(workdir / f"bench_{n_images}_import.cardb", workdir) as q:
        t = time.perf_counter()
        rep = import_coco(q, workdir / f"bench_{n_images}_auto.json", workdir)
        res["import_s"] = time.perf_counter() - t
        res["imported"] = rep.annotations_added
        res["rss_after_import_mb"] = peak_rss_mb()
    res["project_mb"] = path.stat().st_size / 1e6
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--small", type=int, default=2_000, help="the smaller size, for the linearity ratio")
    ap.add_argument("--masks", type=int, default=10)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pool = mask_pool(300)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.small, args.images):
            results[n] = r = run_size(n, args.masks, pool, Path(tmp))
            print(f"\n{n} images x {args.masks} masks ({int(r['annotations'])} annotations, {W}x{H}):")
            for k, v in r.items():
                print(f"  {k:28s} {v:12.3f}" if isinstance(v, float) else f"  {k:28s} {v:12d}")
    a, b = results[args.small], results[args.images]
    scale = b["annotations"] / a["annotations"]
    print(f"\nlinearity (time ratio / annotation ratio {scale:.2f}; 1.0 = linear):")
    for key in ("create_s", "export_rle_s", "export_auto_s", "import_s"):
        print(f"  {key:28s} {b[key] / a[key] / scale:8.2f}")
    print(f"peak RSS of the whole run: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
