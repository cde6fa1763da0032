"""Synthetic clips for the video tests: coloured shapes moving across 30 frames, written with PyAV.

``write_clip(path)`` writes the clip (the codec follows the extension: lossless PNG frames in .mov,
FFV1 in .mkv, H.264 in .mp4, MJPEG in .avi) and returns the true mask of every shape on every frame.
The red square leaves the view at frame ``RED_GONE``; the blue bar enters from the left; the green
square stays. Each shape is pure in its own colour channel, so ``FakePipeline(masks="channels")``
with concepts "red, green, blue" finds exactly the shapes (a stand-in CaR whose answers are known).
Also the broken files the reader must refuse: truncated, empty, damaged, variable frame rate.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np

H, W, FRAMES = 96, 128, 30
RED_GONE = 24            # first frame without any red pixel
COLOURS = {"red": (230, 30, 30), "green": (30, 230, 30), "blue": (30, 30, 230)}
_CODECS = {".mov": ("png", "rgb24"), ".mkv": ("ffv1", "yuv444p"), ".mp4": ("libx264", "yuv420p"),
           ".avi": ("mjpeg", "yuvj420p")}


def shape_boxes(i: int) -> dict[str, tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of each shape on frame i (may reach outside the frame)."""
    return {"red": (10, 28, 8 + 5 * i, 28 + 5 * i), "green": (4 + 2 * i, 20 + 2 * i, 110, 126),
            "blue": (70, 88, -30 + 4 * i, -12 + 4 * i)}


def frame_and_masks(i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    image = np.full((H, W, 3), 40, np.uint8)
    masks = {}
    for name, (y0, y1, x0, x1) in shape_boxes(i).items():
        mask = np.zeros((H, W), bool)
        mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
        image[mask] = COLOURS[name]
        masks[name] = mask
    return image, masks


def write_frames(path: Path, frames: list[np.ndarray], fps: int = 30, pts: list[int] | None = None) -> None:
    import av

    codec, pix = _CODECS[path.suffix]
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=1000 if pts is not None else fps)
    stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
    stream.pix_fmt = pix
    if pts is not None:
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
    for i, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        if pts is not None:
            frame.pts, frame.time_base = pts[i], fractions.Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def write_clip(path: Path, frames: int = FRAMES) -> list[dict[str, np.ndarray]]:
    """Write the synthetic clip; returns the true masks per frame."""
    images, truth = zip(*(frame_and_masks(i) for i in range(frames)))
    write_frames(path, list(images))
    return list(truth)


def write_frame_folder(folder: Path, frames: int = FRAMES) -> list[dict[str, np.ndarray]]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    truth = []
    for i in range(frames):
        image, masks = frame_and_masks(i)
        Image.fromarray(image).save(folder / f"frame_{i + 1:04d}.png")
        truth.append(masks)
    return truth


def write_vfr_clip(path: Path) -> None:
    """Ten frames whose spacing varies (33 ms, then 84, then 117...): a variable frame rate."""
    write_frames(path, [frame_and_masks(i)[0] for i in range(10)], pts=[0, 33, 66, 150, 183, 300, 333, 366, 400, 433])


def write_empty_clip(path: Path) -> None:
    """A clip file with a video stream declared but no frame in it."""
    import av

    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()


def truncate(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * keep)])
    return dst
