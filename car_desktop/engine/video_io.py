"""Reading a video clip, or a folder of numbered frames, as one sequence of frames decoded on demand.

``open_video(path)`` returns a ``FrameSource``: ``info`` (frame count, size, frame rate, whether the
rate varies), ``read(i)`` (one frame as the engine's uint8 (H, W, 3) RGB array) and ``frames(start,
stop)`` (a run of frames, decoded sequentially, read-only). Nothing is decoded up front and never the whole
clip: a small cache (``CACHE_BYTES``) keeps the last frames read, so stepping back and forth is
cheap and memory stays bounded whatever the clip's length.

Clip files (mp4, mov, avi, mkv) are read with PyAV (FFmpeg). When a clip is opened its packets are
indexed without decoding them: frame ``i`` is the i-th frame in display order (sorted presentation
timestamps), which is exact for variable-frame-rate clips too, and a seek goes straight to the key
frame before it. Opening checks, each with a message naming the file: not a video or damaged, no
video stream, no frames, frames over the pixel limit (``imagefiles.max_pixels``), more than
``MAX_FRAMES`` frames, a truncated file (fewer frames than the header announces, frames ending well
before the announced duration, or a last frame that cannot be decoded). A variable frame rate is
accepted with a warning in ``info.warnings``: frame numbers here count frames, while tools that seek
by time may land on other frames.

A folder of numbered frames (``frame_0001.png`` ...) is one sequence ordered by the last number in
each name; every image file in it must carry a number, numbers must be unique, and all frames must
have the size of the first (checked from the headers when the folder is opened). Gaps in the
numbering are reported as a warning.

No Qt, no torch.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from .. import imagefiles
from ..errors import first_line
from .errors import ImageLoadError, VideoLoadError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv"})
#: More frames than this (about 19 hours at 30 frames/s) is refused: the index would be the least of it.
MAX_FRAMES = 2_000_000
#: Decoded frames kept for going back and forth (a few 1080p frames, many small ones).
CACHE_BYTES = 96 << 20
#: A forward jump of at most this many frames decodes on from the current position instead of seeking.
SEQUENTIAL_GAP = 48
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a clip or frame folder once it is opened."""

    kind: str                      # "file" or "frames"
    frame_count: int
    width: int
    height: int
    fps: float | None = None       # frames per second (average when it varies); None for frame folders
    variable_rate: bool = False
    codec: str = ""
    warnings: tuple[str, ...] = field(default=())


def is_video_file(path: str | Path) -> bool:
    """Whether ``path`` has one of the clip extensions (mp4, mov, avi, mkv)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


class _FrameCache:
    """Least recently used frames, bounded in bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._bytes = 0

    def get(self, index: int) -> np.ndarray | None:
        frame = self._frames.get(index)
        if frame is not None:
            self._frames.move_to_end(index)
        return frame

    def put(self, index: int, frame: np.ndarray) -> None:
        if index in self._frames:
            return
        self._frames[index] = frame
        self._bytes += frame.nbytes
        while self._bytes > self.limit and len(self._frames) > 1:
            _, old = self._frames.popitem(last=False)
            self._bytes -= old.nbytes


class FrameSource(ABC):
    """A clip or frame folder opened for reading; see the module docstring. Thread-safe; close it
    (or use it as a context manager) to release the file."""

    def __init__(self, path: Path, cache_bytes: int = CACHE_BYTES) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._cache = _FrameCache(cache_bytes)
        self.info: VideoInfo

    def __len__(self) -> int:
        return self.info.frame_count

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, index: int, *, copy: bool = True) -> np.ndarray:
        """Frame ``index`` (0-based) as a C-contiguous uint8 (H, W, 3) RGB array: the caller's own copy,
        or with ``copy=False`` the cached frame itself, read-only."""
        if not 0 <= index < self.info.frame_count:
            raise IndexError(f"frame {index} is outside {self.path.name} (0..{self.info.frame_count - 1})")
        with self._lock:
            frame = self._cache.get(index)
            if frame is None:
                frame = self._decode(index)
                frame.setflags(write=False)
                self._cache.put(index, frame)
            return frame.copy() if copy else frame

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(index, frame) for ``start <= index < stop``, in order (sequential decoding; read-only frames)."""
        stop = self.info.frame_count if stop is None else min(stop, self.info.frame_count)
        for index in range(max(0, start), stop):
            yield index, self.read(index, copy=False)

    @abstractmethod
    def _decode(self, index: int) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027 - a hook: a source that holds no file has nothing to release
        """Release the file (reading after this raises)."""


# ------------------------------------------------------------------------------------------- clips
class VideoFile(FrameSource):
    """A clip read through PyAV (see the module docstring)."""

    def __init__(self, path: Path, cache_bytes: int = CACHE_BYTES) -> None:
        super().__init__(path, cache_bytes)
        try:
            import av
        except ImportError as exc:
            raise VideoLoadError(f"{path}: reading video files needs PyAV (pip install 'car-desktop[video]').") from exc
        self._av = av
        try:
            imagefiles.check_file(path, "a video file")
        except ImageLoadError as exc:
            raise VideoLoadError(str(exc)) from None
        try:
            self._container = av.open(str(path), metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            raise VideoLoadError(f"{path}: not a video this app can read, or the file is truncated or damaged "
                                 f"({first_line(exc)}).") from None
        self._cursor = -1                                   # index of the last frame the decoder gave
        self._decoder: Iterator[Any] | None = None
        self._frame_ticks = 0.0                             # usual time between frames, in stream ticks
        try:
            self._open_stream()
        except BaseException:
            self._container.close()
            raise

    # ----- opening
    def _open_stream(self) -> None:
        path, container = self.path, self._container
        if not container.streams.video:
            raise VideoLoadError(f"{path}: the file contains no video frames (it has no video stream).")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width <= 0 or height <= 0:
            raise VideoLoadError(f"{path}: the video stream has no frame size; the file is damaged.")
        imagefiles.check_pixels(path, width, height)
        pts, keyframes = self._index(stream)
        if not pts:
            raise VideoLoadError(f"{path}: the file contains no video frames (its video stream is empty).")
        order = np.argsort(np.asarray(pts, np.int64), kind="stable")
        self._pts = np.asarray(pts, np.int64)[order]
        self._index_of = {int(p): i for i, p in enumerate(self._pts)}
        self._keyframe_pts = np.unique(np.asarray([p for p, k in zip(pts, keyframes) if k], np.int64))
        tb = float(stream.time_base) if stream.time_base else 0.0
        warnings: list[str] = []
        fps, variable = self._rate(tb, warnings)
        self._check_complete(stream, len(pts), tb, warnings)
        self.info = VideoInfo("file", len(pts), width, height, fps, variable, ctx.name or "", tuple(warnings))
        for index in {0, len(pts) - 1}:  # a truncated tail fails here, not in the middle of a run
            self.read(index)

    def _index(self, stream: Any) -> tuple[list[int], list[bool]]:
        """Presentation timestamps (decode order) and key-frame flags of the stream's packets."""
        pts: list[int] = []
        keys: list[bool] = []
        try:
            for packet in self._container.demux(stream):
                if packet.size == 0:
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    raise VideoLoadError(f"{self.path}: the video's frames carry no timestamps; re-encode it "
                                         "(for example with ffmpeg) to label it.")
                pts.append(int(stamp))
                keys.append(bool(packet.is_keyframe))
                if len(pts) > MAX_FRAMES:
                    raise VideoLoadError(f"{self.path}: the video has more than {MAX_FRAMES:,} frames; split it "
                                         "into shorter clips.")
        except self._av.error.FFmpegError as exc:
            raise VideoLoadError(f"{self.path}: the file is truncated or damaged after {len(pts)} frames "
                                 f"({first_line(exc)}).") from None
        if len(set(pts)) != len(pts):
            raise VideoLoadError(f"{self.path}: several frames share one timestamp, so frames cannot be "
                                 "numbered reliably; re-encode the clip (for example with ffmpeg) to label it.")
        if keys and not keys[0]:
            keys[0] = True  # decoding starts somewhere: treat the first packet as a seek point
        return pts, keys

    def _rate(self, tb: float, warnings: list[str]) -> tuple[float | None, bool]:
        deltas = np.diff(self._pts)
        if not len(deltas) or tb <= 0:
            rate = self._stream.average_rate or self._stream.guessed_rate
            return (float(rate) if rate and 0 < float(rate) < 1000 else None), False
        median = float(np.median(deltas))
        self._frame_ticks = median
        variable = bool(np.any(np.abs(deltas - median) > max(1.0, 0.25 * median)))
        span = float(self._pts[-1] - self._pts[0]) * tb
        fps = (len(deltas) / span) if variable and span > 0 else 1.0 / (median * tb)
        declared = self._stream.average_rate
        if not variable and declared and abs(float(declared) / fps - 1.0) < 0.05:
            fps = float(declared)  # the exact rate (30, not the 30.3 of millisecond timestamps)
        if variable:
            warnings.append(
                f"{self.path.name} has a variable frame rate (about {fps:.1f} frames/s on average): frames are "
                "numbered in display order here, but tools that find a frame by its time (time x rate) may "
                "land on another one; export extracted frames rather than clip#frame names for such tools.")
        return (fps if 0 < fps < 1000 else None), variable

    def _check_complete(self, stream: Any, found: int, tb: float, warnings: list[str]) -> None:
        announced = int(stream.frames or 0)
        if announced > found:
            raise VideoLoadError(f"{self.path}: the file is truncated: its header announces {announced} frames, "
                                 f"only {found} are in it. Copy or export the clip again.")
        if tb <= 0 or found < 2:
            return
        ticks = self._frame_ticks
        covered = (float(self._pts[-1] - self._pts[0]) + ticks) * tb
        if stream.duration:
            length = float(stream.duration) * tb
        elif self._container.duration:
            length = float(self._container.duration) / 1e6
        else:
            return
        missing = length - covered
        if missing > 0.1 * length and missing > 2.5 * ticks * tb:
            raise VideoLoadError(f"{self.path}: the file is truncated: it announces {length:.2f} s of video but "
                                 f"its frames end at {covered:.2f} s ({found} frames). Copy or export the clip again.")

    # ----- decoding
    def _decode(self, index: int) -> np.ndarray:
        ahead = index - self._cursor
        if self._decoder is None or not 0 < ahead <= SEQUENTIAL_GAP:
            self._seek(int(self._pts[index]))
        assert self._decoder is not None
        try:
            for frame in self._decoder:
                stamp = frame.pts if frame.pts is not None else frame.dts
                found = self._index_of.get(int(stamp)) if stamp is not None else None
                if found is None or found < index:
                    continue  # before the wanted frame (decoding on from the key frame)
                self._cursor = found
                image = self._to_rgb(frame)
                if found == index:
                    return image
                self._cache.put(found, image)  # the decoder never produced the wanted frame
                break
        except self._av.error.FFmpegError as exc:
            self._decoder = None
            raise VideoLoadError(f"{self.path}: frame {index} cannot be decoded: the file is truncated or damaged "
                                 f"({first_line(exc)}).") from None
        self._decoder = None
        raise VideoLoadError(f"{self.path}: frame {index} cannot be decoded: the file is truncated or damaged.")

    def _seek(self, target: int) -> None:
        keys = self._keyframe_pts
        before = keys[keys <= target]
        seek_to = int(before[-1]) if len(before) else int(self._pts[0])
        try:
            self._container.seek(seek_to, stream=self._stream, backward=True, any_frame=False)
        except self._av.error.FFmpegError as exc:
            raise VideoLoadError(f"{self.path}: cannot seek in the file ({first_line(exc)}); "
                                 "it may be damaged.") from None
        self._decoder = iter(self._container.decode(self._stream))
        self._cursor = -1

    @staticmethod
    def _to_rgb(frame: Any) -> np.ndarray:
        return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))

    def close(self) -> None:
        with self._lock:
            self._decoder = None
            self._container.close()


# ----------------------------------------------------------------------------------- frame folders
def frame_number(name: str) -> int | None:
    """The last number in a file name's stem (``shot_12_frame_0042.png`` -> 42), or None."""
    match = _LAST_NUMBER.search(Path(name).stem)
    return int(match.group(1)) if match else None


class FrameFolder(FrameSource):
    """A folder of numbered image files read as one sequence (see the module docstring)."""

    def __init__(self, path: Path, cache_bytes: int = CACHE_BYTES) -> None:
        super().__init__(path, cache_bytes)
        scan = imagefiles.scan_folder(path, recursive=False)
        if not scan.files:
            raise VideoLoadError(f"{path}: the folder holds no image files to read as frames.")
        if len(scan.files) > MAX_FRAMES:
            raise VideoLoadError(f"{path}: more than {MAX_FRAMES:,} frames; split the folder.")
        numbered = [(frame_number(p.name), p) for p in scan.files]
        unnumbered = [p.name for n, p in numbered if n is None]
        if unnumbered:
            raise VideoLoadError(f"{path}: {len(unnumbered)} image file(s) have no frame number in their name "
                                 f"({', '.join(unnumbered[:3])}); a frame folder holds numbered frames only.")
        numbered.sort(key=lambda item: (item[0], item[1].name))
        numbers = [int(n) for n, _ in numbered if n is not None]
        for a, b in itertools.pairwise(numbered):
            if a[0] == b[0]:
                raise VideoLoadError(f"{path}: {a[1].name} and {b[1].name} have the same frame number {a[0]}.")
        self._files = [p for _, p in numbered]
        try:
            width, height = imagefiles.image_size(self._files[0])
            for p in self._files[1:]:
                if tuple(imagefiles.image_size(p)) != (width, height):
                    w, h = imagefiles.image_size(p)
                    raise VideoLoadError(f"{path}: frame {p.name} is {w}x{h}, the first frame is {width}x{height}; "
                                         "all frames of a sequence must have one size.")
        except VideoLoadError:
            raise
        except ImageLoadError as exc:
            raise VideoLoadError(f"{path}: {exc}") from None
        warnings = []
        missing = numbers[-1] - numbers[0] + 1 - len(numbers)
        if missing:
            warnings.append(f"{path.name}: {missing} frame number(s) between {numbers[0]} and {numbers[-1]} are "
                            "missing; frames are counted as they are.")
        self.info = VideoInfo("frames", len(self._files), width, height, None, False, "", tuple(warnings))

    def _decode(self, index: int) -> np.ndarray:
        from .image_io import load_image

        try:
            image = load_image(self._files[index])
        except ImageLoadError as exc:
            raise VideoLoadError(str(exc)) from None
        if image.shape[:2] != (self.info.height, self.info.width):
            raise VideoLoadError(f"{self._files[index]}: the frame changed size since the folder was opened.")
        return image


# ------------------------------------------------------------------------------------------ entry
def open_video(path: str | Path, cache_bytes: int = CACHE_BYTES) -> FrameSource:
    """A clip file or a folder of numbered frames, opened for reading; raises VideoLoadError (or
    ImageTooLargeError for frames over the pixel limit) with a message naming the file."""
    p = Path(path)
    if p.is_dir():
        return FrameFolder(p, cache_bytes)
    if not is_video_file(p) and p.exists():
        raise VideoLoadError(f"{p}: not a video file (expected {', '.join(sorted(VIDEO_EXTENSIONS))}) or a "
                             "folder of numbered frames.")
    return VideoFile(p, cache_bytes)


def probe_video(path: str | Path) -> VideoInfo:
    """``open_video(path).info``, closing the file again."""
    with open_video(path, cache_bytes=0) as source:
        return source.info
