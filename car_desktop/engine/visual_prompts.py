"""Visual prompts of the CaR mask classifier: marking one mask on a copy of the image for CLIP.

Before CLIP scores a proposal, the image is edited so the region stands out: the outside blurred,
greyed or blacked out, and/or a red ellipse, box or outline drawn around the region. This module draws
those prompts as the authors' released code does (docs/engine.md, "Classifier"), with two named
differences: grey uses the correct RGB luminance unless ``correct_gray=False`` (the released code
converts RGB as if it were BGR), and the rectangle is the mask's true bounding box unless
``rectangle_on_bbox=False`` (the released code centres a box of the bounding box's size on the mask's
centroid, which shifts it for lopsided masks; no preset uses the rectangle).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from ..arrays import check_mask, check_rgb_image

log = logging.getLogger(__name__)

#: Prompt names in the order they are applied, whatever order the caller lists them in.
PROMPT_ORDER: tuple[str, ...] = ("blur", "gray", "black", "circle", "rectangle", "contour")
#: Colour (RGB) and thickness (px) of drawn prompts, as in the released code.
PROMPT_COLOR: tuple[int, int, int] = (255, 0, 0)
LINE_THICKNESS = 1


def apply_visual_prompts(
    image: np.ndarray,
    mask: np.ndarray,
    prompts: Sequence[str],
    *,
    soft_map: np.ndarray | None = None,
    blur_kernel: int = 15,
    correct_gray: bool = True,
    rectangle_on_bbox: bool = True,
) -> np.ndarray:
    """A prompted uint8 RGB copy of ``image`` marking ``mask``; the inputs are never modified.

    Prompts are applied in ``PROMPT_ORDER`` (blur, gray, black, circle, rectangle, contour), each
    on the result of the previous ones:

    - blur: outside the mask replaced by a ``blur_kernel`` x ``blur_kernel`` Gaussian blur (sigma
      derived from the kernel size, as OpenCV does for sigma=0: 2.6 for 15);
    - gray: outside the mask replaced by its grey version (``correct_gray=False`` reproduces the
      released code's RGB-read-as-BGR weights);
    - black: outside the mask set to zero;
    - circle: red 1 px ellipse centred on the mask centroid (integer part, as the released code),
      semi-axes half the bounding box's width and height (integer division);
    - rectangle: red 1 px box on the mask's bounding box (its edge pixels); ``rectangle_on_bbox=False``
      draws the released code's box instead: from centroid - size // 2 to centroid + size // 2;
    - contour: red 1 px outline of the mask with its holes filled (outer boundaries only).

    An empty mask, or a ``soft_map`` whose sum is <= 1 (the proposal had essentially no support),
    gets no prompt: an unprompted copy is returned, as in the released code.
    """
    img = check_rgb_image(image)
    m = check_mask(mask, img.shape[:2])
    unknown = [p for p in prompts if p not in PROMPT_ORDER]
    if unknown:
        raise ValueError(f"Unknown visual prompt(s) {unknown}; choose from {', '.join(PROMPT_ORDER)}.")
    if blur_kernel < 1 or blur_kernel % 2 == 0:
        raise ValueError(f"blur_kernel must be a positive odd number (got {blur_kernel}).")

    out = np.array(img, dtype=np.uint8, order="C", copy=True)
    if soft_map is not None and float(np.sum(soft_map)) <= 1.0:
        log.debug("Soft map sums to <= 1: no visual prompt drawn")
        return out
    if not m.any():
        log.debug("Empty mask: no visual prompt drawn")
        return out

    wanted = set(prompts)
    outside = ~m
    if "blur" in wanted:
        blurred = cv2.GaussianBlur(out, (blur_kernel, blur_kernel), 0)
        out[outside] = blurred[outside]
    if "gray" in wanted:
        # The released code calls COLOR_BGR2GRAY on RGB data, weighting red as blue and blue as red.
        code = cv2.COLOR_RGB2GRAY if correct_gray else cv2.COLOR_BGR2GRAY
        grey = cv2.cvtColor(out, code)
        out[outside] = grey[outside][:, None]
    if "black" in wanted:
        out[outside] = 0

    if wanted & {"circle", "rectangle"}:
        rows, cols = np.nonzero(m)
        y0, y1, x0, x1 = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
        # int() truncation of the centroid and // of the sizes match the released mask2chw.
        centre = (int(np.mean(cols)), int(np.mean(rows)))
        half = ((x1 - x0 + 1) // 2, (y1 - y0 + 1) // 2)
        if "circle" in wanted:
            cv2.ellipse(out, centre, half, 0, 0, 360, PROMPT_COLOR, LINE_THICKNESS)
        if "rectangle" in wanted:
            if rectangle_on_bbox:
                cv2.rectangle(out, (x0, y0), (x1, y1), PROMPT_COLOR, LINE_THICKNESS)
            else:
                cv2.rectangle(out, (centre[0] - half[0], centre[1] - half[1]),
                              (centre[0] + half[0], centre[1] + half[1]), PROMPT_COLOR, LINE_THICKNESS)
    if "contour" in wanted:
        # RETR_EXTERNAL traces only outer boundaries: the same outline as the contours of the
        # hole-filled mask that the released code draws, without needing scipy's fill_holes.
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, PROMPT_COLOR, LINE_THICKNESS)
    return out

