"""Effect of each named deviation from the released CaR code: final masks against ``--released``.

Builds seeded random OpenAI-format weights for the real architectures (ViT-B/16 proposals, ViT-L/14
classifier; fp16-rounded and QuickGELU like OpenAI's files), runs the engine with
``CaRConfig.released()`` on the test photos, then again with one switch at a time turned to the
product's default, and with all of them at the default. For each it prints whether the surviving
concepts are the same, the fraction of CRF labels that changed, and the smallest and mean IoU of the
final masks against the released behaviour (over concepts with a mask in either run).

Cases: chelsea 512x384 with theta 0.6 and 0.1, coffee 600x400 with a synonym group, and coffee with
the objects-and-stuff prompts (blur + grey) for the grey switch. SAM off, fp32, CRF in-process.
Usage: .venv/bin/python benchmarks/bench_released_switches.py [--weights-dir DIR] [--cases a,b]
Switches that cannot act on these inputs (caps above the image size, the step cap, the rectangle
prompt no preset draws) are listed with the reason instead of being run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2
import numpy as np
import open_clip
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from car_desktop.engine.config import RELEASED_SWITCHES, CaRConfig, preset
from car_desktop.engine.image_io import load_image
from car_desktop.engine.pipeline import CaRPipeline

SEEDS = {"ViT-B-16": 3, "ViT-L-14": 4}
CASES = {
    "chelsea-0.6": ("chelsea.jpg", (512, 384), "cat, dog, sky, table", "objects", 0.6),
    "chelsea-0.1": ("chelsea.jpg", (512, 384), "cat, dog, sky, table", "objects", 0.1),
    "coffee": ("coffee.jpg", (600, 400), "coffee cup | mug, saucer, spoon, table", "objects", 0.6),
    "coffee-grey": ("coffee.jpg", (600, 400), "coffee cup | mug, saucer, spoon, table", "objects-and-stuff", 0.3),
}
#: (label, the change from released, cases it can act on or None for all)
SWITCHES = [
    ("drop_asked_background=True", dict(drop_asked_background=True), ("chelsea-0.6", "chelsea-0.1")),
    ("crf_colour='rgb'", dict(crf_colour="rgb"), None),
    ("pos_embed_fp16=False", dict(pos_embed_fp16=False), None),
    ("refine_box_edge_quirk=False", dict(refine_box_edge_quirk=False), None),
    ("logit_scale=100 (fixed)", dict(logit_scale=100.0), None),
    ("crf_label_quirk=False", dict(crf_label_quirk=False), None),
    ("reuse_empty_proposals=False", dict(reuse_empty_proposals=False), None),
    ("gray_correct_luminance=True", dict(gray_correct_luminance=True), ("coffee-grey",)),
]
NOT_RUN = {
    "work_long_side / proposal_long_side": "caps of 1024 / 640 px are above these images' long sides: no effect",
    "max_steps=10": "the loop ends in 2-3 steps here, far below the cap: no effect",
    "rectangle_on_bbox": "no preset draws the rectangle prompt: no effect on the presets",
    "stuff_prompts": "only the scene preset has stuff prompts; not in these cases",
}


def openai_format_weights(folder: Path) -> dict[str, Path]:
    """Seeded random weights as OpenAI-format state dicts (fp16 values, input_resolution key)."""
    paths = {}
    for name, seed in SEEDS.items():
        path = folder / f"{name}-random-openai.pt"
        if not path.is_file():
            torch.manual_seed(seed)
            model = open_clip.create_model(name, pretrained=None, force_quick_gelu=True)
            state = {k: v.detach().half() for k, v in model.state_dict().items()}
            state["input_resolution"] = torch.tensor(224)
            torch.save(state, path)
            del model, state
        paths[name] = path
    return paths


def photo(name: str, size: tuple[int, int]) -> np.ndarray:
    return np.ascontiguousarray(cv2.resize(load_image(ROOT / "tests" / "data" / name), size,
                                           interpolation=cv2.INTER_AREA))


def compare(base, other, base_labels: np.ndarray, other_labels: np.ndarray) -> tuple[bool, float, float, float]:
    same = [c.status for c in base.concepts] == [c.status for c in other.concepts]
    ious = [float((a.mask & b.mask).sum() / max((a.mask | b.mask).sum(), 1))
            for a, b in zip(base.concepts, other.concepts) if a.mask.any() or b.mask.any()]
    changed = float((base_labels != other_labels).mean())
    return same, changed, min(ious, default=1.0), float(np.mean(ious)) if ious else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights-dir", type=Path, default=None, help="where the random weights are kept")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = args.weights_dir or Path(tempfile.mkdtemp(prefix="car-switches-"))
    folder.mkdir(parents=True, exist_ok=True)
    weights = openai_format_weights(folder)
    pipe = CaRPipeline(text_disk_cache=False)
    print(f"weights in {folder}; released switches: {sorted(RELEASED_SWITCHES)}")
    for case in args.cases.split(","):
        fname, size, concepts, preset_name, theta = CASES[case]
        image = photo(fname, size)
        released = preset(preset_name, released=True, theta=theta, sam_mode="off", device="cpu", precision="fp32",
                          crf_in_subprocess=False, proposal_pretrained=str(weights["ViT-B-16"]),
                          classifier_pretrained=str(weights["ViT-L-14"]))
        t0 = time.perf_counter()
        base = pipe.run(image, concepts, config=released)
        print(f"\n== {case} ({preset_name}, theta {theta}): released run {time.perf_counter() - t0:.1f} s; "
              + ", ".join(f"{c.name} {c.status.value} {c.score:.3f}" for c in base.concepts))
        variants = [(label, change) for label, change, only in SWITCHES if only is None or case in only]
        defaults = {k: getattr(CaRConfig(), k) for k in RELEASED_SWITCHES}
        variants.append(("all product defaults", defaults))
        for label, change in variants:
            other = pipe.run(image, concepts, config=released.replace(**change))
            same, changed, worst, mean = compare(base, other, base.label_map, other.label_map)
            print(f"  {label:32} survivors same: {same!s:5}  labels changed {100 * changed:5.2f} %  "
                  f"IoU min {worst:.3f} mean {mean:.3f}")
    print("\nnot run (no effect on these inputs by construction):")
    for label, reason in NOT_RUN.items():
        print(f"  {label}: {reason}")


if __name__ == "__main__":
    main()
