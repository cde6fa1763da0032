"""Reading image files into the one pixel format the engine works on, and hashing them for caches.

Every image the engine sees is a C-contiguous uint8 (H, W, 3) RGB array in the orientation a viewer
displays (EXIF orientation applied), so masks computed on it line up with what the annotator sees.
This module owns that conversion (greyscale, palette, transparency, CMYK, 16-bit, multi-frame files)
and ``content_hash``, the cache key other modules use for per-image results (embeddings, proposals).
Which files are images, their header-only size and the pixel limit checked before decoding live in
``car_desktop.imagefiles`` (plain, shared with the annotation layer).
Every failure a user can cause becomes an ``ImageLoadError`` whose message names the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from ..imagefiles import ImageTooLargeError, exif_orientation, open_checked, too_big_message
from .errors import ImageLoadError

log = logging.getLogger(__name__)

_WHITE = 255.0


def load_image(path: str | os.PathLike[str], data: bytes | None = None) -> np.ndarray:
    """Load an image file as a C-contiguous uint8 (H, W, 3) RGB array, as a viewer would show it.
    ``data``: the file's bytes, already read (an object store's image); ``path`` then only names it.

    - EXIF orientation is applied, so (H, W) is the displayed shape and masks follow the display.
    - Greyscale and bilevel images are replicated to three channels; palette images are expanded.
    - Transparency (RGBA, LA, PA, palette or colour-key transparency) is composited on **white**:
      the engine has no alpha channel, and white is what most viewers show behind a transparent logo.
    - 16-bit images are scaled to 8 bits over the full range (v * 255 / 65535, rounded), not clipped.
    - CMYK (and YCbCr, etc.) are converted to RGB.
    - Multi-frame files (GIF, TIFF, APNG, ...) give their first frame.

    Raises ImageLoadError (message naming the file) for a missing file, a directory, a pipe, an
    empty file, a file that is not an image, a corrupt or truncated image, and ImageTooLargeError
    for one above the pixel limit (``car_desktop.imagefiles.max_pixels()``), before decoding it.
    """
    p = Path(path) if data is None else str(path)  # a URI stays a URI in messages
    try:
        with open_checked(path, data) as im:
            if _is_16bit_colour(im):
                arr = _load_16bit_colour_cv2(p, exif_orientation(im), data)
                if arr is not None:
                    return arr
            im.seek(0)
            im = _exif_transpose(p, im)
            return _to_rgb8(p, im)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(too_big_message(p)) from exc
    except MemoryError as exc:
        raise ImageLoadError(f"{p}: not enough memory to decode this image.") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as exc:
        # PIL reports truncated or corrupt data with a variety of exception types, depending on the
        # plugin; all of them mean the same thing to the user.
        raise ImageLoadError(f"{p}: the image is corrupt or truncated and cannot be decoded ({exc}).") from exc


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """An in-memory array as C-contiguous uint8 (H, W, 3) RGB: grey and RGBA are accepted and converted.

    Arrays of other dtypes or shapes are a caller's mistake and raise ImageLoadError.
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageLoadError(f"Expected an RGB image of shape (H, W, 3), got an array of shape {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageLoadError("The image is empty (zero pixels).")
    if arr.dtype != np.uint8:
        raise ImageLoadError(f"Expected 8-bit pixels (uint8), got {arr.dtype}.")
    return np.ascontiguousarray(arr)


def content_hash(image: np.ndarray) -> str:
    """A short hex key identifying an array's shape, dtype and pixel bytes (blake2b, 128 bits).

    Two arrays with equal pixels hash equal whatever their memory layout, so callers can use it as a
    cache key for anything computed from the pixels (embeddings, proposals).
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((image.shape, image.dtype.str)).encode())
    h.update(np.ascontiguousarray(image).data.cast("B"))
    return h.hexdigest()


# --- helpers -----------------------------------------------------------------------------------


def _exif_transpose(p: Path | str, im: Image.Image) -> Image.Image:
    try:
        out = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError):
        raise  # pixel data errors and memory: reported by the caller
    except Exception:
        log.warning("Ignoring malformed EXIF orientation in %s", p, exc_info=True)
        return im
    return out if out is not None else im


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Numpy equivalent of PIL's exif_transpose for an (H, W, ...) array."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, k=-1)
    if orientation == 7:
        return arr.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(arr, k=1)
    return arr


def _is_16bit_colour(im: Image.Image) -> bool:
    """True for 16-bit-per-channel colour files, which PIL silently narrows to 8 bits by truncation."""
    tile = getattr(im, "tile", None)  # files only (ImageFile)
    if im.mode not in ("RGB", "RGBA") or not tile:
        return False
    args = tile[0].args if hasattr(tile[0], "args") else tile[0][3]
    rawmode = args[0] if isinstance(args, tuple) and args else args
    return isinstance(rawmode, str) and ";16" in rawmode


def _load_16bit_colour_cv2(p: Path | str, orientation: int, data: bytes | None = None) -> np.ndarray | None:
    """Decode a 16-bit colour file (or its bytes) with OpenCV (which keeps all 16 bits); None if it cannot."""
    # np.fromfile + imdecode rather than cv2.imread: imread cannot open non-ASCII paths on Windows.
    buf = np.fromfile(p, dtype=np.uint8) if data is None else np.frombuffer(data, dtype=np.uint8)
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        log.debug("OpenCV could not decode %s as 16-bit colour; using PIL's 8-bit reading", p)
        return None
    rgb = arr[..., [2, 1, 0]].astype(np.float64) / 65535.0
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float64) / 65535.0
        rgb = rgb * alpha + (1.0 - alpha)
    out = np.rint(rgb * 255.0).astype(np.uint8)
    return np.ascontiguousarray(_apply_orientation(out, orientation))


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map an integer or float single-channel array onto 0-255 without clipping its range away."""
    if arr.dtype == np.uint8:
        return arr
    lo: float
    hi: float
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 65535:
            # 16-bit data: full-range scaling, so 65535 is white and 32768 is mid-grey.
            return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        log.warning("Integer image with range [%d, %d] outside 16 bits; stretching to 0-255", lo, hi)
    else:
        finite = arr[np.isfinite(arr)]
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 0.0
        if lo >= 0.0 and hi <= 1.0:
            return np.rint(np.nan_to_num(arr, nan=0.0) * 255.0).astype(np.uint8)
        log.warning("Float image with range [%g, %g]; stretching to 0-255", lo, hi)
    span = (hi - lo) or 1
    scaled = (np.nan_to_num(arr.astype(np.float64), nan=lo) - lo) * (255.0 / span)
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + _WHITE * (1.0 - alpha)
    return np.rint(rgb).astype(np.uint8)


def _to_rgb8(p: Path | str, im: Image.Image) -> np.ndarray:
    mode = im.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    if mode.startswith("I") or mode == "F":
        # Deep greyscale: PIL's convert("L") clips at 255 instead of scaling, so scale ourselves.
        grey = _scale_to_uint8(np.asarray(im))
        out = np.repeat(grey[..., None], 3, axis=2)
    elif has_alpha:
        out = _composite_on_white(np.asarray(im.convert("RGBA")))
    elif mode == "RGB":
        out = np.asarray(im)
    else:
        # L, 1, P, CMYK, YCbCr, LAB, HSV ...: PIL knows the colour maths.
        try:
            out = np.asarray(im.convert("RGB"))
        except ValueError as exc:
            raise ImageLoadError(f"{p}: unsupported colour mode {mode!r}.") from exc
    if out.ndim != 3 or out.shape[2] != 3 or out.dtype != np.uint8:
        raise ImageLoadError(f"{p}: unsupported pixel layout {out.shape} {out.dtype} (mode {mode!r}).")
    # np.asarray of a PIL image may be read-only and views into PIL memory: hand out our own copy.
    return np.array(out, dtype=np.uint8, order="C", copy=True)
