"""Choosing the key frames CaR runs on: every N frames, and where the picture changes (scene cuts).

``scene_cuts`` compares each frame's colour histogram (hue and saturation, on a small copy) with the
previous frame's; a Bhattacharyya distance above ``threshold`` starts a new scene. It decodes the
clip once, sequentially, a frame at a time, reporting progress and honouring cancel. No torch, no Qt.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from .cancel import CancelToken, check
from .video_io import FrameSource

#: Frames are compared at this width (the cut is in the colours, not in the details).
CUT_WIDTH = 64
#: A cut right after another one is a flash or a fade, not a new scene.
MIN_SCENE_FRAMES = 5


def every_n(frame_count: int, n: int) -> list[int]:
    """0, n, 2n, ... below ``frame_count``; only frame 0 when ``n`` is 0."""
    if frame_count <= 0:
        return []
    return list(range(0, frame_count, n)) if n > 0 else [0]


def _histogram(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (CUT_WIDTH, max(1, round(h * CUT_WIDTH / w))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 16], [0, 180, 0, 256])
    return cv2.normalize(hist, hist).flatten()


def scene_cuts(source: FrameSource, threshold: float = 0.5, *, progress: Callable[[int, int], None] | None = None,
               cancel: CancelToken | None = None) -> list[int]:
    """Frame 0 and the first frame of every scene after it (see the module docstring)."""
    total = source.info.frame_count
    cuts = [0] if total else []
    previous: np.ndarray | None = None
    for index, frame in source.frames():
        check(cancel)
        hist = _histogram(frame)
        if (previous is not None and index - cuts[-1] >= MIN_SCENE_FRAMES
                and cv2.compareHist(previous, hist, cv2.HISTCMP_BHATTACHARYYA) > threshold):
            cuts.append(index)
        previous = hist
        if progress is not None and (index % 25 == 0 or index == total - 1):
            progress(index + 1, total)
    return cuts
