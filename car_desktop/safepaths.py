"""Which paths the tool may read from and write to: file names from untrusted files, and output paths.

``safe_relative_path(name)`` turns a file name read from a file (a COCO ``file_name``, a stored image
path) into a normalised relative POSIX path, or raises ``UnsafePathError`` saying why it is refused:
absolute paths, drive letters, ``..`` that leaves the folder, ``.``, empty names, NUL, newlines and
other control characters, names that are not valid UTF-8 (``printable`` shows them), URLs, and names
longer than the file system allows (255 bytes a component, 4096 in all). Backslashes count as
separators, so a Windows name cannot smuggle a ``..`` through.

``OutputGuard`` is the one check every writer runs before it writes (COCO export, label PNGs, the
batch export, segment's outputs). It refuses, whatever the options: the open project and its
-wal/-shm/-journal, any other ``protected`` file, an input image (or an existing picture file inside
the image folder), an existing file
that is not a regular file (a folder, a FIFO, a device), and, for a folder of outputs, the image
folder itself. It refuses a URL (``s3://...``: outputs are local files), and a path inside the image
folder unless ``force`` is given. Paths are compared
resolved (symlinks and ``./`` followed) and, when the target exists, by device and inode, so a
symlink or a hard link to a protected file is caught as well.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import CaRDesktopError
from .fileio import regular_file
from .imagefiles import IMAGE_EXTENSIONS

#: Longest file name component, and longest path, in bytes (Linux and macOS limits; NTFS is lower
#: in characters but not in UTF-8 bytes for most names).
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(//|[^/\\])")
_DRIVE = re.compile(r"^[A-Za-z]:")
#: An output named like a URL: s3://b/x, or the s3:/b/x that Path() makes of it (a one-letter scheme is a drive).
_OUTPUT_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class UnsafePathError(ValueError):
    """A file name from a file that cannot be used as a relative path inside a folder."""


class OutputRefusedError(CaRDesktopError):
    """An output path would overwrite something the tool must never touch. Nothing was written."""


def printable(text: str) -> str:
    """``text`` as valid UTF-8: characters it cannot encode (the lone surrogates standing for
    undecodable bytes in a file name) are written as ``\\udcff`` escapes, so the name can be stored,
    printed and logged."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_relative_path(name: object) -> str:
    """The normalised relative POSIX form of ``name``; UnsafePathError (with the reason) if it is
    not a plain relative path that stays inside its folder."""
    if not isinstance(name, str):
        raise UnsafePathError(f"the file name is a {type(name).__name__}, not a string")
    if not name.strip():
        raise UnsafePathError("the file name is empty")
    if printable(name) != name:
        raise UnsafePathError(f"the file name {printable(name)[:120]!r} is not valid UTF-8 text; rename the file")
    if _CONTROL.search(name):
        raise UnsafePathError(f"the file name {name[:80]!r} contains a control character (NUL, newline, ...)")
    if _URL.match(name) and not _DRIVE.match(name):
        raise UnsafePathError(f"{name[:120]!r} is a URL, not a file path")
    text = name.replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text):
        raise UnsafePathError(f"{name[:120]!r} is an absolute path; only paths relative to the image folder are used")
    norm = posixpath.normpath(text)
    if norm in (".", "..") or norm.startswith("../"):
        raise UnsafePathError(f"{name[:120]!r} points outside the image folder")
    if len(norm.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise UnsafePathError(f"the file name is longer than {MAX_PATH_BYTES} bytes")
    for part in norm.split("/"):
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise UnsafePathError(f"a part of {name[:60]!r}... is longer than {MAX_NAME_BYTES} bytes, "
                                  "the file system's limit")
    return norm


def is_within(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """True when ``path`` resolves to ``folder`` or somewhere under it (symlinks followed)."""
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, RuntimeError):  # a symlink loop: certainly not a usable path
        return False


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def sqlite_companions(path: str | os.PathLike[str]) -> list[Path]:
    """An SQLite file and the files SQLite keeps beside it."""
    p = Path(path)
    return [p, *(p.with_name(p.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]


def refuse_url(target: str | os.PathLike[str], what: str = "output") -> None:
    """OutputRefusedError for an output path that is a URL (s3://, gs://, http://...): outputs are local
    files only; without this, Path() would quietly make a local folder named "s3:"."""
    m = _OUTPUT_URL.match(os.fspath(target))
    if m is not None:
        url = _OUTPUT_URL.sub(lambda g: f"{g.group(1)}://", os.fspath(target), count=1)
        raise OutputRefusedError(f"refusing to write the {what} to {url}: it is a URL; outputs are written to "
                                 "local files only (copy them to the bucket afterwards); nothing was written")


class OutputGuard:
    """The checks of the module docstring, for one set of protected files and inputs.

    ``inputs`` is a callable returning the input images' paths; it is called at most once, and only
    when a check needs it (a target that exists, or one whose name might be an input).
    """

    def __init__(self, *, project: str | os.PathLike[str] | None = None,
                 protected: Iterable[str | os.PathLike[str]] = (),
                 image_root: str | os.PathLike[str] | None = None,
                 inputs: Callable[[], Iterable[str | os.PathLike[str]]] | None = None,
                 force: bool = False) -> None:
        self.project = Path(project) if project is not None else None
        self.protected = [*(sqlite_companions(project) if project is not None else []), *map(Path, protected)]
        self.image_root = Path(image_root).resolve() if image_root is not None else None
        self.force = force
        self._inputs = inputs
        self._input_paths: set[str] | None = None
        self._input_ids: set[tuple[int, int]] | None = None

    # ---------------------------------------------------------------------------------- inputs
    def _load_inputs(self) -> None:
        if self._input_paths is not None:
            return
        paths = [Path(p) for p in (self._inputs() if self._inputs is not None else ())]
        self._input_paths = {os.path.abspath(p) for p in paths}
        self._input_paths.update(str(Path(p).resolve()) for p in paths if Path(p).is_symlink())
        self._input_ids = {i for i in (_identity(p) for p in paths) if i is not None}

    def _is_input(self, target: Path, resolved: Path, ident: tuple[int, int] | None) -> bool:
        self._load_inputs()
        assert self._input_paths is not None and self._input_ids is not None
        if os.path.abspath(target) in self._input_paths or str(resolved) in self._input_paths:
            return True
        return ident is not None and ident in self._input_ids

    # ---------------------------------------------------------------------------------- checks
    def check_file(self, target: str | os.PathLike[str], what: str = "output") -> Path:
        """Return ``target`` if a file may be written there; OutputRefusedError otherwise."""
        refuse_url(target, what)
        target = Path(target)
        st, problem = regular_file(target)
        if problem is not None and problem != "does not exist":  # nothing there: writing reports the rest
            raise OutputRefusedError(f"refusing to write the {what} to {target}: it {problem}")
        try:
            resolved = target.resolve()
        except (OSError, RuntimeError) as exc:
            raise OutputRefusedError(f"cannot use {target} as the {what}: {exc}") from None
        ident = (st.st_dev, st.st_ino) if st is not None else None
        for p in self.protected:
            same_path = resolved == p.resolve() if p.exists() or p.is_symlink() else resolved == p.absolute()
            if same_path or (ident is not None and ident == _identity(p)):
                raise OutputRefusedError(
                    f"refusing to write the {what} to {target}: it is {self._describe(p)}; nothing was written")
        inside = self.image_root is not None and resolved.is_relative_to(self.image_root)
        if self._is_input(target, resolved, ident) or (
                inside and st is not None and resolved.suffix.lower() in IMAGE_EXTENSIONS):
            raise OutputRefusedError(
                f"refusing to write the {what} to {target}: it is an input image; nothing was written")
        if inside and not self.force:
            raise OutputRefusedError(
                f"refusing to write the {what} to {target}: it is inside the image folder {self.image_root}; "
                "choose another place, or pass --force to write there anyway")
        return target

    def check_dir(self, folder: str | os.PathLike[str], what: str = "output folder") -> Path:
        """Return ``folder`` if outputs may be written into it (the files are checked one by one
        with ``check_file`` as well)."""
        refuse_url(folder, what)
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise OutputRefusedError(f"refusing to use {folder} as the {what}: it is not a folder")
        resolved = folder.resolve()
        if self.image_root is not None:
            if resolved == self.image_root:
                raise OutputRefusedError(
                    f"refusing to write into the image folder {folder} itself: the outputs would sit among "
                    "(and could replace) the images; choose another folder")
            if resolved.is_relative_to(self.image_root) and not self.force:
                raise OutputRefusedError(
                    f"refusing to use {folder} as the {what}: it is inside the image folder {self.image_root}; "
                    "choose another place, or pass --force to write there anyway")
        for p in self.protected:
            if resolved == p.resolve():
                raise OutputRefusedError(f"refusing to use {folder} as the {what}: it is {self._describe(p)}")
        return folder

    def _describe(self, p: Path) -> str:
        if self.project is not None and p == self.project:
            return f"the open project {p}"
        if self.project is not None and p.parent == self.project.parent and p.name.startswith(self.project.name):
            return f"a file SQLite keeps beside the project ({p.name})"
        return f"a protected file ({p})"
