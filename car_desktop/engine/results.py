"""What a CaR run returns: per-concept masks, scores and statuses, the per-step trace, and run stats.

Plain dataclasses over numpy arrays, so the GUI, the CLI and the annotation store can consume them
without touching torch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from .concepts import Concept


class ConceptStatus(enum.StrEnum):
    KEPT = "kept"
    REMOVED = "removed"
    #: The only survivor: its score is 1 by construction (softmax over one), not a confidence.
    KEPT_ALONE = "kept_without_competition"


@dataclass
class PassCounter:
    """Counts of model passes, so benchmarks and tests can check that no work is repeated."""

    proposal_image_passes: int = 0   # visual tower through all blocks but the last (per image)
    last_block_passes: int = 0       # batched last-block forward/backward (one per step)
    classifier_image_passes: int = 0  # prompted images encoded by the classifier (images, not batches)
    text_encodes: int = 0            # texts encoded (cache misses), proposal and classifier together
    sam_image_encodes: int = 0       # SAM image-encoder runs
    sam_decodes: int = 0             # SAM prompt-decoder runs

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)

    def since(self, before: dict[str, int]) -> dict[str, int]:
        return {k: v - before.get(k, 0) for k, v in self.__dict__.items()}


@dataclass
class StepTrace:
    """One step of the recurrent loop."""

    step: int                      # 1-based
    surviving: list[int]           # concept indices entering this step
    scores: dict[int, float]       # classifier score P[i, i] of each surviving concept
    kept: list[int]                # concept indices leaving this step
    soft_maps: np.ndarray | None = None  # (len(surviving), H, W) float32 proposals, when requested


@dataclass
class ConceptResult:
    """The outcome for one concept, in the order the user typed them."""

    index: int
    concept: Concept               # what was asked for (its synonyms)
    mask: np.ndarray               # (H, W) bool at full image resolution; empty when removed
    score: float                   # final classifier score; 0 when removed
    status: ConceptStatus
    removed_at_step: int | None = None
    removed_score: float | None = None
    sam_accepted: bool | None = None   # None: SAM not run for this concept
    sam_iou: float | None = None

    @property
    def name(self) -> str:
        """Display name (first synonym)."""
        return self.concept.name

    @property
    def query_text(self) -> str:
        """The text fed to CLIP ("car, automobile")."""
        return self.concept.text

    @property
    def label(self) -> str:
        """The user's form ("car | automobile"): what the project stores."""
        return self.concept.label

    @property
    def status_text(self) -> str:
        if self.status is ConceptStatus.REMOVED:
            return f"removed at step {self.removed_at_step} (score {self.removed_score:.2f})"
        if self.status is ConceptStatus.KEPT_ALONE:
            return "kept without competition"
        return f"kept (score {self.score:.2f})"


@dataclass
class CaRResult:
    """Everything one ``CaRPipeline.run`` produced."""

    concepts: list[ConceptResult]
    steps: list[StepTrace]
    label_map: np.ndarray          # (H, W) int32: 0 background, i + 1 for concept i
    image_size: tuple[int, int]    # (height, width)
    timings: dict[str, float] = field(default_factory=dict)   # seconds per stage
    passes: dict[str, int] = field(default_factory=dict)      # PassCounter delta of this run
    warnings: list[str] = field(default_factory=list)
    test_models: bool = False      # True when tiny random-weight models produced this (meaningless masks)
    config: dict = field(default_factory=dict)
    model_names: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready summary without the masks."""
        return {
            "image_size": list(self.image_size),
            "test_models": self.test_models,
            "concepts": [
                {
                    "index": c.index, "name": c.name, "query_text": c.query_text, "status": c.status.value,
                    "status_text": c.status_text, "score": c.score, "removed_at_step": c.removed_at_step,
                    "removed_score": c.removed_score, "pixels": int(c.mask.sum()),
                    "sam_accepted": c.sam_accepted, "sam_iou": c.sam_iou,
                }
                for c in self.concepts
            ],
            "steps": [
                {"step": s.step, "surviving": s.surviving, "kept": s.kept,
                 "scores": {str(k): v for k, v in s.scores.items()}}
                for s in self.steps
            ],
            "timings": self.timings, "passes": self.passes, "warnings": self.warnings,
            "config": self.config, "models": self.model_names,
        }


@dataclass
class Progress:
    """A progress report: stage name ("proposals", "classifier", "crf", "sam", ...), step, fraction."""

    stage: str
    step: int | None = None
    fraction: float | None = None
    message: str = ""
