"""Undo/redo history of mask edits with a memory budget (pure Python + numpy, no Qt).

Each step is (annotation_id, Edit). Edits are stored compressed (bit-packed, then zlib), so a brush
stroke on a 4000x3000 mask costs a few kilobytes; when the total exceeds the budget, the oldest
steps are dropped. ``undo()`` returns the edit *to apply* (already inverted), ``redo()`` the original,
so the caller always does ``apply_edit(mask, edit)``.
"""

from __future__ import annotations

import logging
import zlib
from collections import deque
from dataclasses import dataclass

import numpy as np

from .models import Edit, Rect

log = logging.getLogger(__name__)

DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024
_STEP_OVERHEAD = 200  # Python object overhead per step, counted so tiny edits cannot grow unbounded


@dataclass(frozen=True)
class _Packed:
    annotation_id: int
    rect: Rect
    before: bytes
    after: bytes

    @property
    def nbytes(self) -> int:
        return len(self.before) + len(self.after) + _STEP_OVERHEAD


def _pack(a: np.ndarray) -> bytes:
    return zlib.compress(np.packbits(a, axis=None).tobytes(), 1)


def _unpack(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    bits = np.frombuffer(zlib.decompress(data), np.uint8)
    return np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)


class History:
    """Bounded undo/redo stack. ``budget_bytes`` caps the stored (compressed) size; ``max_steps``
    caps the count (None: only the budget). Pushing a new step clears the redo side."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES, max_steps: int | None = None) -> None:
        self.budget_bytes = int(budget_bytes)
        self.max_steps = max_steps
        self._undo: deque[_Packed] = deque()
        self._redo: list[_Packed] = []
        self._bytes = 0

    # --------------------------------------------------------------- state
    @property
    def memory_bytes(self) -> int:
        """Bytes held by both stacks (compressed payload plus a fixed per-step overhead)."""
        return self._bytes

    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def __len__(self) -> int:
        """Number of steps that can be undone."""
        return len(self._undo)

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()
        self._bytes = 0

    def forget(self, annotation_id: int) -> None:
        """Drop every step of an annotation (e.g. after it was deleted outside the history)."""
        keep = deque(s for s in self._undo if s.annotation_id != annotation_id)
        self._undo = keep
        self._redo = [s for s in self._redo if s.annotation_id != annotation_id]
        self._bytes = sum(s.nbytes for s in self._undo) + sum(s.nbytes for s in self._redo)

    # --------------------------------------------------------------- operations
    def push(self, annotation_id: int, edit: Edit) -> bool:
        """Record an edit that was just applied. Empty edits are ignored (returns False).
        Returns True if recorded; a single step larger than the budget is not kept (False)."""
        if edit.is_empty:
            return False
        for s in self._redo:
            self._bytes -= s.nbytes
        self._redo.clear()
        step = _Packed(annotation_id, edit.rect, _pack(edit.before), _pack(edit.after))
        if step.nbytes > self.budget_bytes:
            log.warning("edit of %d bytes exceeds the undo budget; history cleared", step.nbytes)
            self.clear()
            return False
        self._undo.append(step)
        self._bytes += step.nbytes
        self._enforce()
        return True

    def _enforce(self) -> None:
        while self._undo and (self._bytes > self.budget_bytes
                              or (self.max_steps is not None and len(self._undo) > self.max_steps)):
            dropped = self._undo.popleft()
            self._bytes -= dropped.nbytes

    @staticmethod
    def _edit(step: _Packed, inverse: bool) -> Edit:
        before, after = _unpack(step.before, step.rect.shape), _unpack(step.after, step.rect.shape)
        return Edit(step.rect, after, before) if inverse else Edit(step.rect, before, after)

    def undo(self) -> tuple[int, Edit] | None:
        """Pop the last step: (annotation_id, edit to apply with ``apply_edit``), or None."""
        if not self._undo:
            return None
        step = self._undo.pop()
        self._redo.append(step)
        return step.annotation_id, self._edit(step, inverse=True)

    def redo(self) -> tuple[int, Edit] | None:
        """Re-do the last undone step: (annotation_id, edit to apply), or None."""
        if not self._redo:
            return None
        step = self._redo.pop()
        self._undo.append(step)
        return step.annotation_id, self._edit(step, inverse=False)
