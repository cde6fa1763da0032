"""Benchmark of start-up: seconds from spawning ``python main.py --test-models`` to the window's first
paint, against seconds to run ``python -c "import torch"`` (what start-up cost when the GUI imported
torch). Prints both (median of ``--repeat`` runs) and their ratio. Not part of the tests.

    .venv/bin/python benchmarks/bench_startup.py [--repeat 3]

The window prints ``first_paint <unix time>`` and quits when ``CAR_DESKTOP_EXIT_AFTER_FIRST_PAINT``
is set (``car_desktop.app``). Runs offscreen unless ``QT_QPA_PLATFORM`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_paint_seconds(env: dict[str, str]) -> float:
    start = time.time()
    out = subprocess.run([sys.executable, str(ROOT / "main.py"), "--test-models"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    for line in out.stdout.splitlines():
        if line.startswith("first_paint "):
            return float(line.split()[1]) - start
    raise RuntimeError(f"no first paint reported (exit {out.returncode}):\n{out.stdout}\n{out.stderr[-2000:]}")


def import_torch_seconds(env: dict[str, str]) -> float:
    start = time.time()
    subprocess.run([sys.executable, "-c", "import torch"], env=env, check=True, timeout=120)
    return time.time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, CAR_DESKTOP_EXIT_AFTER_FIRST_PAINT="1", HF_HUB_OFFLINE="1",
                   PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=home)   # fresh settings: no project re-opened
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        paint = [first_paint_seconds(env) for _ in range(args.repeat)]
        torch = [import_torch_seconds(env) for _ in range(args.repeat)]
    p, t = statistics.median(paint), statistics.median(torch)
    print(f"first paint ({sys.executable} main.py --test-models): {p:.2f} s  (runs: "
          f"{', '.join(f'{x:.2f}' for x in paint)})")
    print(f"python -c 'import torch':                         {t:.2f} s  (runs: "
          f"{', '.join(f'{x:.2f}' for x in torch)})")
    print(f"ratio first paint / import torch: {p / t:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
