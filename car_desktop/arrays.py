"""The one image validator and the one mask validator shared by the engine and the GUI.

numpy only: importable without torch or Qt, so every layer can check its inputs the same way and
raise the same clear message.
"""

from __future__ import annotations

import numpy as np


def check_rgb_image(image: object, what: str = "image") -> np.ndarray:
    """``image`` itself if it is a uint8 (H, W, 3) RGB array; otherwise a ValueError naming what it got.

    No conversion: callers that accept grey or RGBA convert first (engine.image_io.as_rgb_uint8).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{what} must be a uint8 (H, W, 3) RGB array (got {desc}).")
    return image


def check_mask(mask: object, shape: tuple[int, ...], what: str = "mask") -> np.ndarray:
    """``mask`` as an (H, W) bool array (no copy when it already is one); ValueError if its shape is not ``shape``."""
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"{what} shape {m.shape} does not match the image's {tuple(shape)}.")
    return m.astype(bool, copy=False)
