"""Benchmark of video propagation: speed and memory of SAM 2 runs, the image encoder, and what a long
clip needs.

Measures, in one run, on synthetic clips (shapes moving over a noisy background, written with PyAV):

1. the tiny test SAM 2 (128-pixel input): propagation frames/s (3 objects, one key frame, one
   forward run over the whole clip) on a short and a 4x longer clip, the process's peak memory
   growth for each (ratio close to 1: memory does not grow with the clip), and the SAM 2 state kept
   at the end of the run with and without dropping the frames the model no longer attends to;
2. the real SAM 2.1 ``tiny`` architecture (random weights, 1024-pixel input): the image encoder per
   frame in float32 and under bfloat16 autocast;
3. the real ``tiny`` architecture on a 1920x1080 clip: propagation seconds per frame, the SAM 2
   state it keeps per frame, the size of the stored masks (RLE) per frame and object, the peak memory;
4. from these, the memory a 10-minute 1080p clip at 30 frames/s would need (frames streamed, SAM 2
   state bounded and on the CPU, masks as RLE in the project file).

Usage: flock /tmp/bench.lock .venv/bin/python benchmarks/bench_video.py [--quick]
Random weights: the masks are meaningless; the figures are about cost. Run it alone (memory figures
are the process's resident set, sampled every 10 ms).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from car_desktop.annotations import mask_codec
from car_desktop.engine import video_io
from car_desktop.engine.propagation import Propagator, Run
from car_desktop.engine.sam2_models import build_sam2, build_test_sam2
from car_desktop.engine.video_io import open_video

MB = 1 << 20


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


class PeakMemory:
    """Peak resident memory above the level at entry, sampled in a thread."""

    def __init__(self) -> None:
        self.base = self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> Self:
        self.base = self.peak = rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def growth(self) -> int:
        return self.peak - self.base


def write_clip(path: Path, frames: int, width: int, height: int) -> list[np.ndarray]:
    """Three squares moving over a fixed noisy background; returns their masks on frame 0."""
    import av

    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    s = max(8, width // 10)
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    seeds = []
    for i in range(frames):
        image = background.copy()
        for k, colour in enumerate(((230, 30, 30), (30, 230, 30), (30, 30, 230))):
            x = (k * width // 3 + 3 * i) % (width - s)
            y = height // 4 + k * height // 6
            image[y:y + s, x:x + s] = colour
            if i == 0:
                mask = np.zeros((height, width), bool)
                mask[y:y + s, x:x + s] = True
                seeds.append(mask)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return seeds


def run_clip(handle, path: Path, seeds: list[np.ndarray], *, forget: bool = True,
             cache_bytes: int = video_io.CACHE_BYTES) -> dict:
    frames = 0
    with open_video(path, cache_bytes=cache_bytes) as source, PeakMemory() as mem:
        propagator = Propagator(handle, source)
        kept = {"bytes": 0}
        original = propagator._forget

        def forget_and_measure(state, idx):
            if forget:
                original(state, idx)
            kept["bytes"] = sum(t.nbytes for per in state["output_dict_per_obj"].values()
                                for out in per["non_cond_frame_outputs"].values()
                                for t in out.values() if isinstance(t, torch.Tensor))

        propagator._forget = forget_and_measure  # type: ignore[method-assign]
        run = Run(0, 1, len(source), tuple((k, len(source)) for k in range(len(seeds))))
        start = time.perf_counter()
        last = None
        for last in propagator.run(run, dict(enumerate(seeds))):  # noqa: B007 - read after the loop
            frames += 1
        seconds = time.perf_counter() - start
    rle = [len(mask_codec.encode(m).rle) for m in (last.masks.values() if last else ())]
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds, "peak": mem.growth,
            "state": kept["bytes"], "rle": float(np.mean(rle)) if rle else 0.0}


def object_rle_bytes(width: int, height: int) -> int:
    """RLE size of a mask shaped like a real object: an ellipse a fifth of the frame wide, ragged edge."""
    import cv2

    rng = np.random.default_rng(1)
    mask = np.zeros((height, width), np.uint8)
    angles = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    radius = 1 + 0.05 * rng.standard_normal(180)
    points = np.stack([width / 2 + width / 10 * radius * np.cos(angles),
                       height / 2 + height / 6 * radius * np.sin(angles)], 1).astype(np.int32)
    cv2.fillPoly(mask, [points], 1)
    return len(mask_codec.encode(mask.astype(bool)).rle)


def encoder_time(handle, repeats: int) -> tuple[float, float]:
    x = torch.randn(1, 3, handle.image_size, handle.image_size)
    model = handle.predictor
    with torch.inference_mode():
        model.forward_image(x)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model.forward_image(x)
        fp32 = (time.perf_counter() - start) / repeats
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.forward_image(x)
            start = time.perf_counter()
            for _ in range(repeats):
                model.forward_image(x)
            bf16 = (time.perf_counter() - start) / repeats
    return fp32, bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter clips and fewer repeats")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    short, real_frames, repeats = (30, 4, 1) if args.quick else (60, 8, 3)
    tmp = Path(tempfile.mkdtemp(prefix="bench_video_"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    # 1. the tiny test SAM 2
    tiny = build_test_sam2("cpu")
    seeds = write_clip(tmp / "short.mp4", short, 320, 240)
    write_clip(tmp / "long.mp4", 4 * short, 320, 240)
    small_cache = 8 * 320 * 240 * 3   # a few frames: what is left growing is the propagation itself
    run_clip(tiny, tmp / "short.mp4", seeds, cache_bytes=small_cache)  # warm-up (imports, allocator)
    a = run_clip(tiny, tmp / "short.mp4", seeds, cache_bytes=small_cache)
    b = run_clip(tiny, tmp / "long.mp4", seeds, cache_bytes=small_cache)
    c = run_clip(tiny, tmp / "long.mp4", seeds, forget=False, cache_bytes=small_cache)
    print("\n1. tiny test SAM 2, 320x240, 3 objects, one forward run from frame 0 (frame cache of 8 frames)")
    print(f"   {a['frames']} frames: {a['fps']:.1f} frames/s, peak memory +{a['peak'] / MB:.1f} MB")
    print(f"   {b['frames']} frames: {b['fps']:.1f} frames/s, peak memory +{b['peak'] / MB:.1f} MB "
          f"({b['frames'] / a['frames']:.0f}x the frames, {(b['peak'] - a['peak']) / MB:+.1f} MB)")
    print(f"   SAM 2 state kept at the end: {b['state'] / MB:.2f} MB with old frames dropped, "
          f"{c['state'] / MB:.2f} MB without ({c['state'] / max(b['state'], 1):.1f}x)")

    # 2. the real tiny architecture's image encoder
    real = build_sam2("tiny", None, "cpu")
    fp32, bf16 = encoder_time(real, repeats)
    print("\n2. SAM 2.1 tiny architecture (random weights), image encoder at 1024x1024")
    print(f"   float32 {fp32:.2f} s/frame, bfloat16 autocast {bf16:.2f} s/frame (ratio {fp32 / bf16:.2f})")

    # 3. the real tiny architecture on a 1080p clip
    seeds = write_clip(tmp / "hd.mp4", real_frames, 1920, 1080)
    hd = run_clip(real, tmp / "hd.mp4", seeds[:2])
    with open_video(tmp / "hd.mp4") as source:
        window = Propagator(real, source).window
    kept_frames = min(hd["frames"], window)
    per_frame_object = hd["state"] / kept_frames / 2
    rle = object_rle_bytes(1920, 1080)
    print(f"\n3. SAM 2.1 tiny architecture, 1920x1080, 2 objects, {hd['frames']} frames")
    per_frame = hd["seconds"] / hd["frames"]
    print(f"   {per_frame:.2f} s/frame (the image encoder is {fp32 / per_frame:.0%} of it)"
          f", peak memory +{hd['peak'] / MB:.0f} MB")
    print(f"   SAM 2 state kept per frame and object {per_frame_object / MB:.2f} MB; a stored mask (RLE) of an "
          f"object-like shape {rle / 1024:.1f} KB (of the random-weight masks, noise: {hd['rle'] / 1024:.0f} KB)")

    # 4. a 10-minute 1080p clip: the measured peak, plus what grows up to its bound on a long clip
    frames, objects = 10 * 60 * 30, 5
    model = sum(p.numel() * p.element_size() for p in real.predictor.parameters())
    frame_bytes = 1920 * 1080 * 3
    parts = {
        f"measured peak growth, {hd['frames']} frames, 2 objects": hd["peak"],
        "model weights (tiny; large is about 6x)": model,
        "frame cache filling to its bound": max(0, video_io.CACHE_BYTES - hd["frames"] * frame_bytes),
        f"SAM 2 state filling its window ({window} frames)": (window - kept_frames) * per_frame_object * 2,
        f"SAM 2 state of {objects - 2} more objects": window * per_frame_object * (objects - 2),
        "frame index (timestamps) and frame ids": frames * 16 * 2,
        "window: undo journals of runs (bounded)": 256 * MB,
    }
    print(f"\n4. estimated memory for a 10-minute 1080p clip ({frames} frames, {objects} objects), beside the "
          "Python/torch runtime:")
    for name, size in parts.items():
        print(f"   {name:52s} {size / MB:8.0f} MB")
    total = sum(parts.values())
    print(f"   {'total (none of it grows with the clip length)':52s} {total / MB:8.0f} MB")
    print(f"   masks in the project file: about {frames * objects * rle / MB:.0f} MB on disk ({frames * objects} RLE "
          "masks of object-like shapes), read one frame at a time")


if __name__ == "__main__":
    main()
