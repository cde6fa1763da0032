"""Image files on disk: which files are images, finding them in a folder, their size from the header,
and the one limit on how large an image may be.

The limit (``max_pixels()``, width x height as stored in the file) is set here and nowhere else: 250
megapixels unless the environment variable ``CAR_DESKTOP_MAX_PIXELS`` or ``set_max_pixels`` (the
command line's ``--max-pixels``) says otherwise. Every reader checks it from the header before any
pixel is decoded, so a decompression bomb (a tiny PNG that claims 30000 x 30000 pixels) is one
refused file with a clear reason (``ImageTooLargeError``), never a crash. PIL's own bomb guard is
kept in step as a backstop: its limit is set to ours (it raises only above twice that) and its
warning is silenced, since the refusal above it is ours.

Sizes are ``ImageSize(width, height)`` named tuples, as displayed (EXIF orientation applied); the
engine's arrays are (height, width), so callers unpack by name. Pure Python + PIL: no torch, no Qt.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .engine.errors import ImageLoadError
from .fileio import regular_file

if TYPE_CHECKING:
    from PIL import Image as PILImage

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

#: 250 MP of RGB is 750 MB of pixels before any model runs; beyond that a desktop machine is more
#: likely to swap than to finish.
DEFAULT_MAX_PIXELS = 250_000_000
MAX_PIXELS_ENV = "CAR_DESKTOP_MAX_PIXELS"

_override: int | None = None
_pil_lock = threading.Lock()
_ORIENTATION_TAG = 0x0112


class ImageTooLargeError(ImageLoadError):
    """The image has more pixels than ``max_pixels()`` (a decompression bomb, or just too big)."""


class ImageSize(NamedTuple):
    width: int
    height: int


def parse_pixel_count(text: str | int) -> int:
    """'250000000', '250M', '250MP', '1.5G' or an int -> a positive pixel count (ValueError if not)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)[pP]?\s*", str(text))
        if m is None:
            raise ValueError(f"{text!r} is not a pixel count (e.g. 250000000, 250M or 1G)")
        value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    if not 1 <= value <= 1e12:
        raise ValueError(f"a pixel limit must be between 1 and 10^12, not {text!r}")
    return int(value)


def max_pixels() -> int:
    """The largest width x height any image may have: the override, the environment, or the default."""
    if _override is not None:
        return _override
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if env:
        try:
            return parse_pixel_count(env)
        except ValueError:
            log.warning("ignoring %s=%r: not a pixel count", MAX_PIXELS_ENV, env)
    return DEFAULT_MAX_PIXELS


def set_max_pixels(limit: int | None) -> None:
    """Set the limit for this process (None: back to the environment or the default)."""
    global _override
    _override = None if limit is None else parse_pixel_count(limit)
    _sync_pil()


def _sync_pil() -> None:
    from PIL import Image

    with _pil_lock:
        Image.MAX_IMAGE_PIXELS = max_pixels()


def _pil():
    from PIL import Image

    if max_pixels() != Image.MAX_IMAGE_PIXELS:
        _sync_pil()
    return Image


warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit",
                        category=Warning, module=r"PIL\.")


def too_big_message(path: str | os.PathLike[str], size: tuple[int, int] | None = None,
                    pixels: int | None = None) -> str:
    limit = max_pixels()
    if size is not None:
        dims = f" ({size[0]}x{size[1]} = {size[0] * size[1] / 1e6:,.0f} megapixels)"
    elif pixels is not None:
        dims = f" ({pixels / 1e6:,.0f} megapixels)"
    else:
        dims = ""
    return (f"{path}: the image is too large{dims}; the limit is {limit / 1e6:,.0f} megapixels "
            f"(raise it with --max-pixels or {MAX_PIXELS_ENV} if this image is wanted). "
            "Downscale it or split it into tiles first.")


def max_file_bytes() -> int:
    """The largest image file read from an object store, from the pixel limit: 8 bytes a pixel (16-bit
    RGBA, uncompressed) plus 16 MiB of metadata. Checked before the file is read."""
    return max_pixels() * 8 + 16 * 2**20


def too_many_bytes_message(where: str, size: int, limit: int | None = None) -> str:
    def amount(n: int) -> str:
        return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n:,} bytes"

    limit = max_file_bytes() if limit is None else limit
    return (f"{where}: the file is too large ({amount(size)}; at most {amount(limit)} are read for the limit of "
            f"{max_pixels() / 1e6:,.0f} megapixels, which --max-pixels or {MAX_PIXELS_ENV} raises).")


def check_pixels(path: str | os.PathLike[str], width: int, height: int) -> None:
    """ImageLoadError for a size with no pixels, ImageTooLargeError above the limit."""
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"{path}: the image has no pixels ({width}x{height}).")
    if width * height > max_pixels():
        raise ImageTooLargeError(too_big_message(path, (width, height)))


def check_file(path: Path, what: str = "an image file") -> None:
    """ImageLoadError unless ``path`` is a readable, non-empty regular file (a FIFO is never opened).
    ``what`` names the kind of file expected in the message ("a video file")."""
    st, problem = regular_file(path)
    if st is None and problem == "does not exist":
        raise ImageLoadError(f"{path}: no such file.")
    if st is None or problem:
        raise ImageLoadError(f"{path} {problem}, not {what}.")
    if st.st_size == 0:
        raise ImageLoadError(f"{path}: the file is empty (0 bytes).")
    if not os.access(path, os.R_OK):
        raise ImageLoadError(f"{path}: permission denied; the file cannot be read.")


def _bomb_pixels(exc: BaseException) -> int | None:
    m = re.search(r"\((\d+) pixels\)", str(exc))
    return int(m.group(1)) if m else None


@contextmanager
def open_checked(path: str | os.PathLike[str], data: bytes | None = None) -> Iterator[PILImage.Image]:
    """``with open_checked(p) as im``: a PIL image whose header passed ``check_file`` and the pixel
    limit. Only the header has been read. Header errors become ImageLoadError naming the file.
    ``data``: the file's bytes, already read (from an object store); ``path`` then only names it."""
    p = Path(path)
    label = str(path) if data is not None else p  # a URI stays a URI in messages
    if data is None:
        check_file(p)
    elif not data:
        raise ImageLoadError(f"{path}: the file is empty (0 bytes).")
    Image = _pil()
    try:
        im = Image.open(p if data is None else io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(too_big_message(label, pixels=_bomb_pixels(exc))) from None
    except Exception as exc:
        from PIL import UnidentifiedImageError

        if isinstance(exc, UnidentifiedImageError):
            raise ImageLoadError(f"{label}: not an image file, or an image format this app cannot read.") from exc
        if isinstance(exc, MemoryError):
            raise ImageLoadError(f"{label}: not enough memory to read this image.") from exc
        raise ImageLoadError(f"{label}: the image header is corrupt and cannot be read ({exc}).") from exc
    with im:
        check_pixels(label, *im.size)
        yield im


def exif_orientation(im: PILImage.Image, header_only: bool = False) -> int:
    """EXIF orientation (1-8) of an open image; 1 when absent or unreadable. ``header_only``: for a
    PNG only an eXIf chunk before the pixel data is looked at (the PNG spec puts it there)."""
    from PIL import Image

    try:
        if header_only and im.format == "PNG":
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = im.getexif()
        value = int(exif.get(_ORIENTATION_TAG, 1))
    except Exception:
        log.debug("Unreadable EXIF orientation in %s", getattr(im, "filename", "?"), exc_info=True)
        return 1
    return value if 1 <= value <= 8 else 1


def image_size(path: str | os.PathLike[str], data: bytes | None = None) -> ImageSize:
    """The image's size as displayed (EXIF rotation applied), from the header only (of ``data``,
    the file's bytes, when given).

    Raises ImageLoadError (ImageTooLargeError above the pixel limit) with a message naming the file.
    """
    with open_checked(path, data) as im:
        w, h = im.size
        orientation = exif_orientation(im, header_only=True)
    # Orientations 5-8 include a quarter turn: the displayed image is transposed.
    return ImageSize(h, w) if orientation in (5, 6, 7, 8) else ImageSize(w, h)


def is_image_name(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


@dataclass
class FolderScan:
    """Image files found under a folder (sorted), and the sub-folders that could not be read."""

    files: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def scan_folder(folder: str | os.PathLike[str], recursive: bool = True) -> FolderScan:
    """Regular files with an image extension under ``folder`` (recursively by default), sorted.

    Symlinked files are listed under their own name; symlinked folders are not entered (they may
    point outside the folder, or in a loop). Pipes, sockets and devices are never listed.
    """
    root = Path(folder)
    scan = FolderScan()

    def failed(exc: OSError) -> None:
        scan.unreadable.append((Path(exc.filename or root), exc.strerror or str(exc)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=failed, followlinks=False):
        dirnames.sort()
        if not recursive:
            dirnames.clear()
        base = Path(dirpath)
        for name in filenames:
            p = base / name
            if is_image_name(p) and p.is_file():
                scan.files.append(p)
    scan.files.sort()
    return scan
