"""The cancel flag the engine checks between stages (defined in ``car_desktop.cancel``)."""

from __future__ import annotations

from ..cancel import CancelToken, check

__all__ = ["CancelToken", "check"]
