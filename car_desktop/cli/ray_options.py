"""The ``batch`` options that run it on Ray (--ray, --workers, --gpus-per-worker, --cpus-per-worker).

Only the options and their check live here; the run itself is car_desktop.autolabel_ray. Ray is imported
when a run starts, so ``batch --help`` and the local batch work without it.
"""

from __future__ import annotations

import argparse

from ..autolabel_ray import RayOptions, require_ray
from ..engine.errors import CaRDesktopError


def add_ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "Ray (many GPUs or machines; needs: pip install 'car-desktop[ray]')",
        "The same run (concepts, settings, resume, protected images, failures, exit codes) on a pool of Ray "
        "workers, each holding one CaR pipeline; this process reads the images and is the project's only "
        "writer. Put --ray after IMAGES_DIR.")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on Ray: no ADDRESS starts Ray on this machine; 'auto' joins the cluster this "
                        "machine is part of (after 'ray start --address ...'); ray://HOST:PORT a remote one")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="Ray workers (default: one per GPU of the cluster, or 1 without GPUs)")
    g.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                   help="GPUs per worker; fractions share a GPU, e.g. 0.5 (default: 1 if the cluster has GPUs)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C", help="CPUs per worker (default 1)")


def ray_options_from_args(args: argparse.Namespace) -> RayOptions | None:
    """The Ray options of the command line, None without --ray. Raises CaRDesktopError (bad values, or Ray
    not installed: the message says how to install it) before anything is created."""
    if args.ray is None:
        for flag in ("workers", "gpus_per_worker"):
            if getattr(args, flag) is not None:
                raise CaRDesktopError(f"--{flag.replace('_', '-')} needs --ray")
        return None
    options = RayOptions(address=args.ray, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                         cpus_per_worker=args.cpus_per_worker, verbose=bool(getattr(args, "verbose", False)))
    require_ray()
    return options
