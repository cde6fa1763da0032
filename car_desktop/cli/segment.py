"""``car-desktop segment IMAGE --concepts "..."``: run CaR on one image and write the results.

Writes a colour label PNG, one mask PNG per concept and a JSON summary (scores, statuses, trace,
timings, pass counts) into ``--out``, and prints a table of the concepts with their status.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..engine.results import CaRResult, Progress
from ..errors import CaRDesktopError
from ..fileio import atomic_write_text, dumps_strict
from ..safepaths import OutputGuard
from .engine_options import add_engine_options, config_from_args, wants_test_models


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment typed concepts in one image")
    p.add_argument("image", type=Path)
    p.add_argument("--concepts", required=True, help='comma-separated; "|" joins synonyms: "cat, dog | puppy, sky"')
    p.add_argument("--out", type=Path, default=Path("car_out"), help="output folder (created)")
    add_engine_options(p)
    p.set_defaults(handler=run_segment)


def palette(n: int) -> np.ndarray:
    """Distinct colours for label values 0..n (0 is black background), VOC-style bit interleaving."""
    colours = np.zeros((n + 1, 3), np.uint8)
    for i in range(1, n + 1):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours[i] = (r, g, b)
    return colours


def write_outputs(result: CaRResult, image_path: Path, out: Path) -> None:
    from PIL import Image

    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CaRDesktopError(f"Cannot write to the output folder {out}: {exc.strerror or exc}.") from exc
    stem = image_path.stem
    colours = palette(len(result.concepts))
    names = {c.index: "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in c.name)[:60] for c in result.concepts}
    guard = OutputGuard(inputs=lambda: [image_path])  # never write over the input (e.g. through a symlink)
    for name in [f"{stem}_labels.png", f"{stem}_summary.json",
                 *(f"{stem}_{i:02d}_{safe}.png" for i, safe in names.items())]:
        guard.check_file(out / name)
    Image.fromarray(colours[result.label_map]).save(out / f"{stem}_labels.png")
    for c in result.concepts:
        Image.fromarray((c.mask * 255).astype(np.uint8)).save(out / f"{stem}_{c.index:02d}_{names[c.index]}.png")
    summary = result.summary()
    summary["image"] = str(image_path)
    atomic_write_text(out / f"{stem}_summary.json", dumps_strict(summary, indent=2))


def format_table(result: CaRResult) -> str:
    rows = [("#", "concept", "status", "score", "pixels")]
    for c in result.concepts:
        rows.append((str(c.index), c.name, c.status_text, f"{c.score:.3f}", str(int(c.mask.sum()))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_segment(args: argparse.Namespace) -> int:
    from ..engine.image_io import load_image
    from ..engine.pipeline import CaRPipeline

    config = config_from_args(args)
    image = load_image(args.image)  # fails fast, before any model loads
    test_models = wants_test_models(args)
    if test_models:
        print("WARNING: test models (tiny, random weights): the masks mean nothing.", file=sys.stderr)

    def progress(p: Progress) -> None:
        step = f" step {p.step}" if p.step else ""
        print(f"\r{p.stage}{step} {p.message}".ljust(50), end="", file=sys.stderr, flush=True)

    pipeline = CaRPipeline(config, test_models=test_models)
    result = pipeline.run(image, args.concepts, progress=progress)
    print(file=sys.stderr)
    write_outputs(result, args.image, args.out)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(format_table(result))
    print(f"\nwrote {args.out}/  ({', '.join(f'{k} {v:.2f}s' for k, v in result.timings.items())})")
    return 0
