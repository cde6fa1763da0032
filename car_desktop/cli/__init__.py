"""Headless command line: ``car-desktop [SUBCOMMAND] ...``.

With no argument, or with the path of an existing image, folder or project, it opens the desktop
window; anything else that is not a sub-command is refused ("unknown command 'segmnt' (did you mean
'segment'?)", exit 2), so a typo on a server never tries to open a window. Each sub-command lives in
its own module that exposes ``register(subparsers)``; the handler returns an exit code.

Exit codes (``EXIT_CODES``), the same for every sub-command:
0 done; 1 done, but some items failed (images not labelled, COCO entries not imported, models that
fail verification: each listed); 2 nothing done: a user error (bad option or input, a refused output
path, a missing or busy project, missing weights), printed as one line; 3 internal error: a bug,
"internal error, please report it" and the file the traceback was written to; 130 stopped by Ctrl+C.

``--max-pixels N`` (before or after the sub-command) sets the one image-size limit of
``car_desktop.imagefiles`` for this run. Each distinct warning is printed once.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import difflib
import importlib
import logging
import os
import sys
import traceback
from pathlib import Path

from .. import __version__, imagefiles
from ..errors import CaRDesktopError

#: Modules under car_desktop.cli that register sub-commands, in help order.
COMMAND_MODULES = ("segment", "models", "project", "batch", "video", "eval", "eval_dataset", "tune")

EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = ("exit codes: 0 done; 1 done, but some items failed (each listed); 2 nothing done: a user error "
              "(bad option or input, refused output path, missing or busy project, missing weights); "
              "3 internal error (a bug: please report it with the crash log it names); 130 stopped by Ctrl+C")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="car-desktop",
        description="Segment any typed concept with CLIP as RNN + SAM; label, correct and export COCO. "
                    "With no command (or the path of an image, folder or project) the window opens.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"car-desktop {__version__}")
    parser.add_argument("--test-models", action="store_true",
                        help="use tiny random-weight models (for tests and demos: masks are meaningless)")
    parser.add_argument("--self-test", action="store_true",
                        help="check this installation: open the window offscreen with the test models, "
                             "segment a built-in image, exit 0 if it worked")
    parser.add_argument("--max-pixels", metavar="N",
                        help=f"largest image (width x height) to read, e.g. 250M (default "
                             f"{imagefiles.DEFAULT_MAX_PIXELS / 1e6:.0f}M, or ${imagefiles.MAX_PIXELS_ENV}); "
                             "larger files are refused as failed files, never decoded")
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


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    names: list[str] = []
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        names.extend(getattr(action, "choices", {}) or {})
    return names


def _take_max_pixels(argv: list[str]) -> tuple[list[str], str | None]:
    """Remove ``--max-pixels N`` / ``--max-pixels=N`` from anywhere in argv (it may follow the
    sub-command); returns the rest and the value."""
    rest: list[str] = []
    value = None
    it = iter(argv)
    for arg in it:
        if arg == "--":
            rest.append(arg)
            rest.extend(it)
            break
        if arg == "--max-pixels":
            value = next(it, None)
            if value is None:
                raise CaRDesktopError("--max-pixels needs a value, e.g. --max-pixels 250M")
        elif arg.startswith("--max-pixels="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return rest, value


def _gui_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> list[str] | None:
    """The paths to open in the window when the first positional argument is not a sub-command;
    CaRDesktopError (exit 2) when it is neither a sub-command nor an existing path."""
    commands = _commands(parser)
    positional = [a for a in argv if not a.startswith("-")]
    if not positional or positional[0] in commands:
        return None
    first = positional[0]
    if not Path(first).exists():
        close = difflib.get_close_matches(first, commands, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; commands: {', '.join(commands)}"
        raise CaRDesktopError(f"unknown command '{first}'{hint}. To open a file in the window, give the "
                              "path of an existing image, folder or project")
    return positional


class _OnceFilter(logging.Filter):
    """Let each distinct warning through once (the same concept 50 times is one line, not 98)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[int, str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.levelno, record.name, record.getMessage())
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    once = _OnceFilter()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _OnceFilter) for f in handler.filters):
            handler.addFilter(once)


def _crash_report(exc: BaseException) -> str:
    """Write the traceback to a crash log in the user data folder; returns where, or why not."""
    from .. import paths

    text = "".join(traceback.format_exception(exc))
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        folder = paths.data_dir() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / f"crash-{stamp}-{os.getpid()}.log"
        log_path.write_text(f"car-desktop {__version__}\nargv: {sys.argv!r}\n\n{text}", encoding="utf-8")
        return f"the traceback was written to {log_path}"
    except OSError as err:
        sys.stderr.write(text)
        return f"the traceback is above (it could not be written to a log file: {err})"


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except CaRDesktopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - anything else is a bug: say so, keep the traceback
        where = _crash_report(exc)
        print(f"internal error, please report it: {type(exc).__name__}: {exc}\n{where}", file=sys.stderr)
        return EXIT_INTERNAL


#: Arguments that only open the window (no command, no path): handled without building the parser.
_WINDOW_FLAGS = frozenset({"--test-models", "-v", "--verbose"})


def _main(argv: list[str]) -> int:
    argv, max_pixels = _take_max_pixels(argv)
    if max_pixels is not None:
        try:
            imagefiles.set_max_pixels(imagefiles.parse_pixel_count(max_pixels))
        except ValueError as exc:
            raise CaRDesktopError(f"--max-pixels: {exc}") from None
    if set(argv) <= _WINDOW_FLAGS:
        # Only the window is wanted: skip the parser, whose command modules import the model manager,
        # the download code and more (a quicker first paint).
        _setup_logging(bool({"-v", "--verbose"} & set(argv)))
        from ..annotations import Project
        from ..app import launch_gui

        Project.busy_notice = staticmethod(lambda message: print(message, file=sys.stderr, flush=True))

        return launch_gui(test_models="--test-models" in argv, argv=[])
    parser = build_parser()
    gui_paths = _gui_arguments(parser, argv)
    if gui_paths is not None:
        argv = [a for a in argv if a not in gui_paths]
    args, rest = parser.parse_known_args(argv)
    if gui_paths:
        rest = [*rest, *gui_paths]
    _setup_logging(args.verbose)
    from ..annotations import Project

    Project.busy_notice = staticmethod(lambda message: print(message, file=sys.stderr, flush=True))
    if args.self_test:
        from ..selftest import run_self_test  # Qt and torch are imported only here

        return run_self_test()
    if args.command is None:
        from ..app import launch_gui  # Qt is imported only when the window is wanted

        return launch_gui(test_models=args.test_models, argv=rest)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    return int(args.handler(args) or 0)
