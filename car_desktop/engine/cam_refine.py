"""The CLIP-ES refinement of Grad-CAM maps with CLIP's own attention, as pure array functions.

The affinity matrix (attention averaged over the last blocks, normalised columns-then-rows three
times, symmetrised, squared once) depends only on the image; each query's CAM is boxed (threshold at
lam x max, bounding box of every contour), the affinity's columns outside the boxes are zeroed and the
CAM is propagated through it. Kept free of models so every step can be checked by hand.
See docs/engine.md ("Proposals").
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

#: The released code's min-max epsilon: (x - min) / (eps + max).
MINMAX_EPS = 1e-15


def minmax(maps: np.ndarray) -> np.ndarray:
    """Min-max normalise each map of a (k, ...) stack separately (all-constant maps become 0)."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape[0] == 0:
        return maps
    flat = maps.reshape(maps.shape[0], -1)
    flat = flat - flat.min(axis=1, keepdims=True)
    flat = flat / (MINMAX_EPS + flat.max(axis=1, keepdims=True))
    return flat.reshape(maps.shape).astype(np.float32)


def refinement_matrix(attn: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """(N, N) patch-to-patch attention -> the CLIP-ES transition matrix squared, in fp32.

    Columns then rows are normalised ``iterations`` times (a Sinkhorn-like balancing), the result is
    symmetrised and multiplied by itself once. Sums are floored at the smallest normal float so an
    underflowed column cannot turn the matrix into NaN.
    """
    t = attn.float()
    tiny = torch.finfo(torch.float32).tiny
    for _ in range(iterations):
        t = t / t.sum(dim=0, keepdim=True).clamp_min(tiny)
        t = t / t.sum(dim=1, keepdim=True).clamp_min(tiny)
    t = (t + t.T) / 2
    return t @ t


def cam_boxes(cam: np.ndarray, lam: float, edge_quirk: bool = False) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (x0, y0, x1, y1), end-exclusive, of every contour of ``cam*255 > lam*max``.

    As the released code (CLIP-ES ``scoremap2bbox``): the map is quantised to uint8, the threshold
    is ``int(lam * max)`` and lowered by 0.1 until a pixel survives. ``edge_quirk`` reproduces its
    off-by-one, which caps x1/y1 at width-1/height-1 so boxes never include the last row/column.
    """
    cam = np.asarray(cam, dtype=np.float32)
    height, width = cam.shape
    image = (cam * 255).astype(np.uint8)
    threshold = float(lam)
    while True:
        _, binary = cv2.threshold(image, int(threshold * int(image.max())), 255, cv2.THRESH_BINARY)
        if binary.max() > 0 or threshold <= 0:
            break
        threshold -= 0.1
    contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        x1, y1 = x + w, y + h
        if edge_quirk:
            x1, y1 = min(x1, width - 1), min(y1, height - 1)
        boxes.append((x, y, x1, y1))
    return boxes


def box_mask_from_cam(cam: np.ndarray, lam: float, edge_quirk: bool = False) -> np.ndarray:
    """(h, w) float32 0/1 mask: the union of the CAM's contour boxes (all zero for an all-zero CAM)."""
    mask = np.zeros(np.shape(cam), dtype=np.float32)
    for x0, y0, x1, y1 in cam_boxes(cam, lam, edge_quirk):
        mask[y0:y1, x0:x1] = 1.0
    return mask


def refine_cams(affinity: torch.Tensor, cams: np.ndarray, box_masks: np.ndarray) -> np.ndarray:
    """(k, h, w) refined maps: min-max of (affinity with columns outside the boxes zeroed) @ vec(cam).

    Zeroing column j and multiplying by the CAM equals multiplying by the CAM masked at j, so all k
    queries go through one (N, N) @ (N, k) product instead of k masked copies of the matrix.
    """
    k = cams.shape[0]
    if k == 0:
        return np.zeros_like(cams, dtype=np.float32)
    masked = torch.from_numpy((cams * box_masks).reshape(k, -1).T.astype(np.float32)).to(affinity.device)
    refined = (affinity.float() @ masked).float().T.reshape(cams.shape)
    return minmax(refined.cpu().numpy())


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (k, h, w) stack to (k, H, W) for ``size`` = (H, W), clipped to [0, 1]."""
    height, width = size
    out = np.empty((maps.shape[0], height, width), dtype=np.float32)
    for i, m in enumerate(maps):
        resized = cv2.resize(np.ascontiguousarray(m, dtype=np.float32), (width, height),
                             interpolation=cv2.INTER_LINEAR).reshape(height, width)
        # Clip map by map while it is in cache: one pass over a full-resolution stack is slow.
        np.clip(resized, 0.0, 1.0, out=out[i])
    return out
