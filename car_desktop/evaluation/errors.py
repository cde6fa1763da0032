"""The evaluation's user-facing error: a bad input file, nothing to compare, an unwritable output folder."""

from __future__ import annotations

from ..errors import CaRDesktopError


class EvaluationError(CaRDesktopError):
    """Something the user can fix about an evaluation's inputs or outputs; the message says what."""
