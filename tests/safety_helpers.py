"""Shared by the tests of issue 13 (files the tool must never destroy, bounded inputs): hostile files
(a real decompression bomb, a truncated JPEG, small good images) and byte-for-byte snapshots of a
folder, to check that a refused or failed operation changed nothing."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def tree_bytes(*roots: Path) -> dict[str, bytes]:
    """{path: bytes} of every file under the roots (a single file counts as a root too), including
    SQLite's -wal/-shm files if any: a new stray file shows up as a new key."""
    out: dict[str, bytes] = {}
    for root in roots:
        root = Path(root)
        if root.is_file():
            out[str(root)] = root.read_bytes()
            for suffix in ("-wal", "-shm", "-journal"):
                side = root.with_name(root.name + suffix)
                if side.exists():
                    out[str(side)] = side.read_bytes()
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                p = Path(dirpath) / name
                if p.is_file():
                    out[str(p)] = p.read_bytes()
    return out


def good_image(i: int, size: tuple[int, int] = (64, 80)) -> np.ndarray:
    """A small RGB image, different for every i: a background colour and a rectangle."""
    rng = np.random.default_rng(500 + i)
    img = np.empty((*size, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    y, x = rng.integers(0, size[0] - 20), rng.integers(0, size[1] - 20)
    img[y:y + 20, x:x + 20] = rng.integers(0, 256, 3)
    return img


def write_good_images(folder: Path, n: int, prefix: str = "good") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{prefix}{i:02d}.png"
        Image.fromarray(good_image(i)).save(p)
        paths.append(p)
    return paths


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A real, valid PNG of width x height black pixels (1 bit each) that compresses to ~100 KB:
    the decompression bomb of the issue (30000 x 30000 = 900 megapixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    body = io.BytesIO()
    block = row * 1000
    for _ in range(height // 1000):
        body.write(comp.compress(block))
    body.write(comp.compress(row * (height % 1000)))
    body.write(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body.getvalue()) + chunk(b"IEND", b"")


def truncated_jpeg(path: Path, seed: int = 7) -> None:
    """A JPEG whose header is intact but whose pixel data stops early (the last 300 bytes are gone):
    it can be added to a project, and fails only when it is decoded."""
    buf = io.BytesIO()
    Image.fromarray(good_image(seed, (96, 128))).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    path.write_bytes(data[:-300])


def create_and_use(args: tuple[str, str, int]) -> str:
    """Run in a separate process: open or create the project, add the image and one category of
    its own. Returns "ok" or the error, for the concurrent-creation test."""
    from car_desktop.annotations import Project

    project_path, images, i = args
    try:
        project, _ = Project.open_or_create(project_path, images)
        with project:
            project.add_images(Path(images) / "a.png")
            project.get_or_create_category(f"concept {i}")
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return f"{type(exc).__name__}: {exc}"
