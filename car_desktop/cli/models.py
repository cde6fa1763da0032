"""``car-desktop models ...``: see, fetch, check and choose model weights from the terminal.

Sub-commands: ``list`` (status table), ``download NAME`` (progress bar on stderr; Ctrl+C keeps the
partial file so the next run resumes), ``verify [NAME...]`` (full SHA-256), ``path [NAME]`` (the cache
folder, or one model's file), ``use NAME FILE`` / ``use NAME --clear`` (point a model at a local file;
the file must be a checkpoint of that model's kind: a SAM checkpoint for a SAM model, CLIP weights
for a CLIP model).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..engine.model_facts import facts_text, model_facts
from ..engine.model_manager import SAM_TYPE_TO_NAME, ModelManager, ModelStatus
from .progress import ProgressBar


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list, download, verify and choose model weights",
                                   description=__doc__.replace("``", "'"),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="status of every known model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("download", help="download a model into the cache (resumes a partial download)")
    p.add_argument("names", nargs="+", metavar="NAME", help="model name from 'models list' (or vit_b, vit_l, ...)")
    p.add_argument("--force", action="store_true", help="download again even when present")
    p.set_defaults(handler=cmd_download)

    p = sub.add_parser("verify", help="check the full SHA-256 of present models")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to check (default: every present one)")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("path", help="print the cache folder, or the file used for one model")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.set_defaults(handler=cmd_path)

    p = sub.add_parser("use", help="use a local weights file for a model (or --clear to go back)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", nargs="?", metavar="FILE")
    p.add_argument("--clear", action="store_true", help="forget the local file; use the cache again")
    p.set_defaults(handler=cmd_use)


def _manager() -> ModelManager:
    return ModelManager()


def _name(mgr: ModelManager, name: str) -> str:
    if name in mgr.names():
        return name
    if name in SAM_TYPE_TO_NAME:
        return SAM_TYPE_TO_NAME[name]
    if ":" in name:  # open_clip MODEL:TAG
        model, tag = name.split(":", 1)
        return mgr.clip_name(model, tag)
    mgr.spec(name)  # raises the "unknown model" error with the known names
    return name


def _row(st: ModelStatus, size: str) -> list[str]:
    state = st.state + (" (verified)" if st.verified else "")
    note = st.detail
    if st.optional:
        note = ("optional; " + note) if note else "optional"
    return [st.name, state, size, str(st.path), note]


def cmd_list(args: argparse.Namespace) -> int:
    mgr = _manager()
    statuses = mgr.list()
    facts = {f.name: f for f in model_facts(mgr)}
    if args.json:
        print(json.dumps([
            {"name": s.name, "state": s.state, "verified": s.verified, "path": str(s.path), "size": s.size,
             "expected_size": s.expected_size, "source": s.source, "detail": s.detail, "title": s.title,
             **facts[s.name].to_dict()}
            for s in statuses
        ], indent=2))
        return 0
    rows = [["NAME", "STATUS", "SIZE", "PATH", "NOTE"]] + [_row(s, facts[s.name].size) for s in statuses]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + ("  " + r[4] if r[4] else ""))
    print(f"\nCache folder: {mgr.models_dir}")
    print("\nTo download by hand, put each file in its folder:\n" + facts_text(list(facts.values())))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    mgr = _manager()
    for raw in args.names:
        name = _name(mgr, raw)
        bar = ProgressBar(name, unit="bytes")
        try:
            path = mgr.download(name, progress=bar, force=args.force)
        finally:
            bar.close()
        print(f"{name}: {path}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    mgr = _manager()
    names = [_name(mgr, n) for n in args.names] or [s.name for s in mgr.list() if s.state != "missing"]
    bad = 0
    for name in names:
        bar = ProgressBar(f"hashing {name}", unit="bytes")
        try:
            st = mgr.verify(name, progress=bar)
        finally:
            bar.close()
        ok = st.state == "present"
        bad += not ok
        print(f"{name}: {st.state}{' (verified)' if st.verified else ''} {st.detail} - {st.path}")
    if not names:
        print("No model weights on this computer yet; see 'car-desktop models list'.")
    return 1 if bad else 0


def cmd_path(args: argparse.Namespace) -> int:
    mgr = _manager()
    if args.name:
        print(mgr.path_for(_name(mgr, args.name)))
    else:
        print(mgr.models_dir)
    return 0


def cmd_use(args: argparse.Namespace) -> int:
    mgr = _manager()
    name = _name(mgr, args.name)
    if args.clear:
        mgr.set_local_file(name, None)
        print(f"{name}: back to the cache ({mgr.path_for(name)})")
        return 0
    if not args.file:
        print("error: give a FILE, or --clear", file=sys.stderr)
        return 2
    mgr.set_local_file(name, args.file)
    st = mgr.status(name)
    print(f"{name}: {st.state} - {st.path} ({st.detail})")
    return 0 if st.state == "present" else 1
