"""Writing files so that a crash never leaves half of one: the one atomic-write helper, and strict JSON.

``atomic_write(path, write)`` writes through a temporary file beside ``path`` (a random name created
with O_EXCL), flushes and fsyncs it, and renames it over ``path``; on any error the temporary file is
removed and ``path`` is left as it was. The new file gets ordinary permissions: those of the file it
replaces, or 0666 minus the umask for a new file (the kernel applies the umask at creation), never the
0600 of ``tempfile.mkstemp``. ``commit_file(tmp, path)`` is the same final step for a file written
elsewhere (a finished download). ``regular_file(path)`` says, without opening it, whether a path is a
file that can be read (a FIFO would block a reader forever). ``to_strict_json`` / ``dumps_strict`` keep
``Infinity`` and ``NaN`` out of every JSON we write (they are not JSON, and most readers refuse them).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: not every file system lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_file(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Rename the finished ``tmp`` over ``path`` (same folder) and make the rename durable. A file
    being replaced gives its permission bits to the new one."""
    tmp, path = Path(tmp), Path(path)
    with contextlib.suppress(OSError):
        old = os.stat(path)
        if stat.S_ISREG(old.st_mode):
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
    os.replace(tmp, path)
    _fsync_dir(path.parent if str(path.parent) else Path("."))


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """``with atomic_open(p, "w") as fh: ...`` writes ``p`` all at once when the block ends without
    an error, and leaves ``p`` untouched otherwise. ``mode`` is "wb" or "w" (UTF-8 text)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open mode must be 'wb' or 'w', not {mode!r}")
    path = Path(path)
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        fh: IO[Any] = (os.fdopen(fd, "wb") if mode == "wb"
                       else os.fdopen(fd, "w", encoding="utf-8", newline="\n"))
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        commit_file(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], Any], mode: str = "wb") -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it over ``path``."""
    with atomic_open(path, mode) as fh:
        write(fh)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text), "w")


def regular_file(path: str | os.PathLike[str]) -> tuple[os.stat_result | None, str | None]:
    """(stat, None) when ``path`` is a regular file; otherwise (stat or None, why not, in words):
    "does not exist", "is a folder", "is not a regular file (a pipe, socket or device)" or the
    system's error. Never opens the path, so a FIFO cannot make the caller wait."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None, "does not exist"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return st, "is a folder"
    if not stat.S_ISREG(st.st_mode):
        return st, "is not a regular file (a pipe, socket or device)"
    return st, None


def to_strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (inf, -inf, nan) replaced by None, recursively through
    dicts, lists and tuples (tuples become lists). Other values are returned as they are."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: to_strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_strict_json(v) for v in value]
    return value


def dumps_strict(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes Infinity or NaN (they become null) and keeps non-ASCII text."""
    kwargs.setdefault("ensure_ascii", False)
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:  # a non-finite float somewhere: clean it, then it must pass
        return json.dumps(to_strict_json(value), allow_nan=False, **kwargs)


def finite_or_none(value: Any) -> float | None:
    """A finite float from a number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        f = float(value)
    except (OverflowError, ValueError):
        return None
    return f if math.isfinite(f) else None
