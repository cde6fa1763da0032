"""Shared test set-up: offline hubs, offscreen Qt, few torch threads, and small synthetic images."""

from __future__ import annotations

import os

# Must be set before open_clip / huggingface_hub / Qt are imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CAR_DESKTOP_NO_DOWNLOAD", "1")
# Caches the engine writes (text embeddings, the bf16 timing) go to a throw-away folder, not the user's.
if "CAR_DESKTOP_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["CAR_DESKTOP_CACHE"] = tempfile.mkdtemp(prefix="car-desktop-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CAR_DESKTOP_CACHE"], True)

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(2)
    except ImportError:
        pass
    yield


@pytest.fixture
def two_colour_image() -> np.ndarray:
    """96x128 RGB: left half dark blue, right half bright yellow, with a red square on the left."""
    img = np.zeros((96, 128, 3), np.uint8)
    img[:, :64] = (20, 30, 120)
    img[:, 64:] = (240, 220, 40)
    img[30:60, 16:46] = (200, 20, 20)
    return img


@pytest.fixture
def data_dir() -> Path:
    return DATA
