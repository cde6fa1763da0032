"""A CaR result as a small JSON-ready dict: what a remote worker sends back instead of full-resolution arrays.

``compact_result`` keeps what saving an auto-label needs: each concept's mask as a COCO RLE (pycocotools),
its concept (synonyms), score, status and SAM verdict, the step trace without its soft maps, the per-stage timings, pass
counts, warnings and model names. ``expand_result`` turns it back into a ``CaRResult`` whose masks equal
the originals pixel for pixel and whose scores are the same floats (JSON keeps a float's exact value).
The label map is not carried (nothing that saves a result reads it): the expanded result's is empty.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .annotations.mask_codec import decode_full_rle, fortran_u8
from .engine.concepts import Concept
from .engine.results import CaRResult, ConceptResult, ConceptStatus, StepTrace


def encode_mask(mask: np.ndarray) -> str:
    """The COCO compressed RLE counts of an (H, W) bool mask, as text."""
    return mask_utils.encode(fortran_u8(mask))["counts"].decode("ascii")


def compact_result(result: CaRResult) -> dict[str, Any]:
    """``result`` without arrays other than RLE masks; see the module docstring."""
    return {
        "image_size": list(result.image_size),
        "concepts": [
            {"index": c.index, "synonyms": list(c.concept.synonyms), "rle": encode_mask(c.mask),
             "score": float(c.score), "status": c.status.value, "removed_at_step": c.removed_at_step,
             "removed_score": None if c.removed_score is None else float(c.removed_score),
             "sam_accepted": c.sam_accepted, "sam_iou": None if c.sam_iou is None else float(c.sam_iou)}
            for c in result.concepts
        ],
        "steps": [{"step": s.step, "surviving": list(s.surviving), "kept": list(s.kept),
                   "scores": [[int(k), float(v)] for k, v in s.scores.items()]} for s in result.steps],
        "timings": {k: float(v) for k, v in result.timings.items()},
        "passes": {k: int(v) for k, v in result.passes.items()},
        "warnings": list(result.warnings),
        "test_models": bool(result.test_models),
        "config": result.config,
        "model_names": dict(result.model_names),
    }


def expand_result(data: dict[str, Any]) -> CaRResult:
    """The ``CaRResult`` of a ``compact_result`` dict (masks decoded, label map empty)."""
    height, width = (int(v) for v in data["image_size"])
    concepts = [
        ConceptResult(index=c["index"], concept=Concept(tuple(c["synonyms"])),
                      mask=decode_full_rle(height, width, c["rle"]), score=c["score"],
                      status=ConceptStatus(c["status"]), removed_at_step=c["removed_at_step"],
                      removed_score=c["removed_score"], sam_accepted=c["sam_accepted"], sam_iou=c["sam_iou"])
        for c in data["concepts"]
    ]
    steps = [StepTrace(step=s["step"], surviving=s["surviving"], scores=dict(s["scores"]),
                       kept=s["kept"]) for s in data["steps"]]
    return CaRResult(concepts=concepts, steps=steps, label_map=np.zeros((0, 0), np.int32),
                     image_size=(height, width), timings=data["timings"], passes=data["passes"],
                     warnings=data["warnings"], test_models=data["test_models"], config=data["config"],
                     model_names=data["model_names"])
