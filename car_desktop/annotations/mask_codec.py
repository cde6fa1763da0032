"""Mask <-> compressed RLE (pycocotools), plus the measures stored beside each mask.

A mask is stored twice, both small: the full-image COCO RLE (export-ready, no decoding needed to
write RLE COCO) and the RLE of its bounding-box crop (so reading one mask, or tracing its polygon,
costs in proportion to the object, not the image). Area and bbox come from pycocotools; the count of
connected parts and of holes is measured once here so exports can choose polygon or RLE without decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .errors import MaskError


@dataclass(frozen=True)
class EncodedMask:
    height: int
    width: int
    rle: bytes                         # full-image COCO compressed counts (column-major)
    crop_rle: bytes                    # compressed counts of the bbox crop
    bbox: tuple[int, int, int, int]    # x, y, w, h (pycocotools toBbox)
    area: int
    parts: int
    holes: int


def as_bool_mask(mask: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Validate and convert to a 2-D bool array; raise MaskError on a wrong shape."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise MaskError(f"a mask must be 2-D (height x width), got shape {m.shape}")
    if shape is not None and m.shape != tuple(shape):
        raise MaskError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is {shape[1]}x{shape[0]}")
    return m if m.dtype == bool else m != 0


def fortran_u8(mask: np.ndarray) -> np.ndarray:
    """A Fortran-ordered uint8 copy of a bool mask, as pycocotools wants it. cv2.transpose is
    several times faster than np.asfortranarray on large masks."""
    m = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)
    if m.shape[0] == 0 or m.shape[1] == 0:
        return np.asfortranarray(m)
    return cv2.transpose(m).T


def _rle_counts(mask: np.ndarray) -> bytes:
    return mask_utils.encode(fortran_u8(mask))["counts"]


def topology(crop: np.ndarray) -> tuple[int, int]:
    """(parts, holes) of a bool mask, 8-connected parts (as traced by OpenCV)."""
    if not crop.any():
        return 0, 0
    _, hierarchy = cv2.findContours(crop.view(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    h = hierarchy[0]
    parts = int((h[:, 3] < 0).sum())
    return parts, int(len(h) - parts)


def encode(mask: np.ndarray) -> EncodedMask:
    """Encode a 2-D mask (any dtype, non-zero = inside)."""
    m = np.ascontiguousarray(as_bool_mask(mask))
    height, width = m.shape
    rle = mask_utils.encode(fortran_u8(m))
    return _finish(m, height, width, rle)


def _finish(m: np.ndarray, height: int, width: int, rle: dict) -> EncodedMask:
    area = int(mask_utils.area(rle))
    if area == 0:
        return EncodedMask(height, width, rle["counts"], b"", (0, 0, 0, 0), 0, 0, 0)
    x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(rle))
    # Copy only the crop (``m`` may be a Fortran-ordered uint8 decode of the whole image).
    crop = np.ascontiguousarray(m[y:y + h, x:x + w], dtype=bool)
    parts, holes = topology(crop)
    return EncodedMask(height, width, rle["counts"], _rle_counts(crop), (x, y, w, h), area, parts, holes)


def encode_rle(rle: dict) -> EncodedMask:
    """Encode from a COCO compressed RLE {'size': [h, w], 'counts': bytes|str} (import path: the
    full-image RLE is kept as it is; the crop's RLE is cut from its runs without decoding the whole
    image, and only the crop is decoded, for the topology)."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    area = int(mask_utils.area(rle))
    if area == 0:
        return EncodedMask(height, width, rle["counts"], b"", (0, 0, 0, 0), 0, 0, 0)
    x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(rle))
    runs = rle_counts(rle["counts"])
    if int(runs.sum()) != height * width:
        raise ValueError(f"RLE counts add up to {int(runs.sum())} pixels, not {height}x{width}")
    crop_rle = _crop_counts(runs, height, (x, y, w, h))
    parts, holes = topology(decode_crop(crop_rle, (x, y, w, h)))
    return EncodedMask(height, width, rle["counts"], crop_rle, (x, y, w, h), area, parts, holes)


def rle_counts(counts: bytes) -> np.ndarray:
    """The run lengths (int64) of a compressed COCO RLE string, decoded with numpy (the inverse of
    pycocotools' rleToString: 5 bits a character, a continuation bit, sign extension, and each count
    after the third stored as the difference to the count two before)."""
    c = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if not len(c):
        return c
    last = (c & 0x20) == 0                           # the last character of each count
    if not last[-1] or c.min() < 0 or c.max() > 63:
        raise ValueError("malformed compressed RLE counts")
    ends = np.flatnonzero(last) + 1
    starts = np.concatenate(([0], ends[:-1]))
    k = np.arange(len(c)) - np.repeat(starts, ends - starts)  # index of the character in its count
    if k.max() > 11:  # 60 bits: no real count needs more
        raise ValueError("malformed compressed RLE counts")
    x = np.add.reduceat((c & 0x1f) << (5 * k), starts)
    negative = (c[ends - 1] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * (k[ends - 1][negative] + 1))
    x[1::2] = np.cumsum(x[1::2])
    x[2::2] = np.cumsum(x[2::2])
    if (x < 0).any():
        raise ValueError("malformed compressed RLE counts")
    return x


def _crop_counts(runs: np.ndarray, height: int, bbox: tuple[int, int, int, int]) -> bytes:
    """Compressed counts of the bbox crop of a column-major RLE, from its run lengths. Every
    foreground pixel lies inside the bbox, so each foreground run's first pixel and the pixel after
    its last map into the crop; runs that meet in the crop (the background between them lay
    outside it, or was an empty run) are joined."""
    x, y, w, h = bbox
    bounds = np.cumsum(runs)
    fg_start, fg_end = bounds[0:-1:2], bounds[1::2]   # run j (odd) covers [bounds[j-1], bounds[j])
    keep = fg_end > fg_start
    fg_start, last = fg_start[keep], fg_end[keep] - 1
    flips = np.empty(2 * len(fg_start), np.int64)
    flips[0::2] = (fg_start // height - x) * h + fg_start % height - y
    flips[1::2] = (last // height - x) * h + last % height - y + 1
    join = np.flatnonzero(flips[2::2] == flips[1:-1:2])  # a run starting where the previous ended
    if len(join):
        drop = np.zeros(len(flips), bool)
        drop[2 * join + 1] = True
        drop[2 * join + 2] = True
        flips = flips[~drop]
    if flips[-1] != w * h:                             # no trailing empty run, as pycocotools writes it
        flips = np.append(flips, w * h)
    crop_counts = np.diff(flips, prepend=0)
    return mask_utils.frPyObjects({"size": [h, w], "counts": crop_counts.tolist()}, h, w)["counts"]


def decode_crop(crop_rle: bytes, bbox: tuple[int, int, int, int]) -> np.ndarray:
    """The bbox crop as a C-contiguous bool array of shape (h, w)."""
    _, _, w, h = bbox
    if w == 0 or h == 0:
        return np.zeros((h, w), bool)
    crop = mask_utils.decode({"size": [h, w], "counts": crop_rle})  # column-major uint8 of 0/1
    return _c_order_bool(crop)


def _c_order_bool(m: np.ndarray) -> np.ndarray:
    """A C-contiguous bool copy of a Fortran-ordered uint8 0/1 decode (cv2.transpose of its
    C-ordered transpose is several times faster than np.ascontiguousarray)."""
    if m.size == 0 or not m.T.flags.c_contiguous:
        return np.ascontiguousarray(m, dtype=bool)
    return cv2.transpose(m.T).view(bool)


def decode(height: int, width: int, crop_rle: bytes, bbox: tuple[int, int, int, int]) -> np.ndarray:
    """The full mask as a C-contiguous bool array of shape (height, width)."""
    out = np.zeros((height, width), bool)
    x, y, w, h = bbox
    if w and h:
        out[y:y + h, x:x + w] = decode_crop(crop_rle, bbox)
    return out


def decode_full_rle(height: int, width: int, counts: bytes | str) -> np.ndarray:
    """Decode a full-image COCO compressed RLE to a C-contiguous bool array."""
    return _c_order_bool(mask_utils.decode({"size": [height, width], "counts": counts}))
