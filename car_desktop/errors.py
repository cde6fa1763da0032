"""The base of every error a user can cause and fix, shared by the engine, the annotations and the UI.

The GUI shows ``str(error)`` in a dialog and keeps working; the CLI prints it and exits non-zero.
Anything that is not a ``CaRDesktopError`` is a bug and is reported as such. Subclasses live with
the code that raises them (``engine/errors.py``, ``annotations/errors.py``); ``Cancelled`` lives here
with the cancel flag (``car_desktop.cancel``) that raises it.
"""

from __future__ import annotations


class CaRDesktopError(Exception):
    """Base class of every error the user can cause and fix."""


class NotLocalError(CaRDesktopError):
    """Something needs a local path, but the project's images are in an object store (s3://, gs://)."""


class Cancelled(CaRDesktopError):
    """The caller cancelled a run; nothing was half-updated."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when it has none), cut to ``limit``
    characters: what a one-line message quotes of a library's error."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
