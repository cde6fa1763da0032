"""Headless command line: ``car-desktop [SUBCOMMAND] ...``.

With no sub-command it opens the desktop window. Each sub-command lives in its own module that
exposes ``register(subparsers)``; the handler returns an exit code. User errors (``CaRDesktopError``)
are printed as one clear line and give exit code 2; Ctrl+C gives 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..engine.errors import CaRDesktopError

#: Modules under car_desktop.cli that register sub-commands, in help order.
COMMAND_MODULES = ("segment", "models", "project", "batch", "eval", "eval_dataset", "tune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="car-desktop",
        description="Segment any typed concept with CLIP as RNN + SAM; label, correct and export COCO.",
    )
    parser.add_argument("--version", action="version", version=f"car-desktop {__version__}")
    parser.add_argument("--test-models", action="store_true",
                        help="use tiny random-weight models (for tests and demos: masks are meaningless)")
    parser.add_argument("--self-test", action="store_true",
                        help="check this installation: open the window offscreen with the test models, "
                             "segment a built-in image, exit 0 if it worked")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # a command module not written yet
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        module.register(sub)
    return parser


def _gui_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> list[str] | None:
    """The GUI's own arguments (an image, folder or project to open) when no sub-command is named."""
    commands = set()
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        commands.update(getattr(action, "choices", {}) or {})
    positional = [a for a in argv if not a.startswith("-")]
    if positional and positional[0] not in commands:
        return positional
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    gui_paths = _gui_arguments(parser, argv)
    if gui_paths is not None:
        argv = [a for a in argv if a not in gui_paths]
    args, rest = parser.parse_known_args(argv)
    if gui_paths:
        rest = [*rest, *gui_paths]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.self_test:
        from ..selftest import run_self_test  # Qt and torch are imported only here

        return run_self_test()
    if args.command is None:
        from ..app import launch_gui  # Qt is imported only when the window is wanted

        return launch_gui(test_models=args.test_models, argv=rest)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    try:
        return int(args.handler(args) or 0)
    except CaRDesktopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
