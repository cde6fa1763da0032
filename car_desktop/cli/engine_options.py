"""The engine options shared by the commands that run CaR (``segment``, ``batch``) and the config they make."""

from __future__ import annotations

import argparse

from ..engine.config import PRECISION_CHOICES, PRESETS, SAM_MODES, CaRConfig, preset


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """--preset, --released, --sam, --sam-model, --no-crf, --device, --precision, --eta/--theta/--lam
    and --test-models."""
    p.add_argument("--preset", choices=list(PRESETS), default="objects")
    p.add_argument("--sam", choices=SAM_MODES, default="prompted", help="SAM refinement mode")
    p.add_argument("--sam-model", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "vit_t"])
    p.add_argument("--no-crf", action="store_true", help="skip the dense CRF")
    p.add_argument("--released", action="store_true",
                   help="behave exactly as the authors' released CaR code (every named deviation switched "
                        "back; see docs/engine.md)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                   help="auto: fp16 on CUDA, bf16 on CPUs where it is faster, else fp32")
    for name in ("eta", "theta", "lam"):
        p.add_argument(f"--{name}", type=float, default=None, help=f"override the preset's {name}")
    # SUPPRESS: the same flag given before the sub-command must not be reset to False here.
    p.add_argument("--test-models", action="store_true", default=argparse.SUPPRESS,
                   help="tiny random-weight models (masks are meaningless)")


def config_from_args(args: argparse.Namespace, **fixed) -> CaRConfig:
    """The preset named by the options, with the thresholds the user overrode."""
    overrides = {k: getattr(args, k) for k in ("eta", "theta", "lam") if getattr(args, k) is not None}
    return preset(args.preset, released=bool(getattr(args, "released", False)), sam_mode=args.sam,
                  sam_model=args.sam_model, use_crf=not args.no_crf, device=args.device,
                  precision=getattr(args, "precision", "auto"), **overrides, **fixed)


def wants_test_models(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "test_models", False))
