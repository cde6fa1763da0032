"""What a mask is, in words, for the panels: one rule for the concept panel and the review queue.

``short_status`` is a word or two for a narrow column ("force-kept", "kept alone", "auto-labelled",
"SAM", "manual", "imported"); ``status_text`` the longer form for a row or tooltip, which names how the
mask came to be (a folder auto-label run, a force-keep) before CaR's own words. No Qt here.
"""

from __future__ import annotations

from .provenance import FORCED, KEPT_ALONE, ORIGIN_AUTOLABEL, Provenance

SOURCE_WORDS = {"import": "imported", "sam": "SAM", "manual": "manual", "car": "CaR"}


def short_status(source: str, car_status: str | None, origin: str | None = None) -> str:
    """A word or two: 'kept alone', 'force-kept', 'auto-labelled', 'kept', 'imported', 'SAM', 'manual'."""
    if car_status == KEPT_ALONE:
        return "kept alone"
    if car_status == FORCED:
        return "force-kept"
    if source == "car" and origin == ORIGIN_AUTOLABEL:
        return "auto-labelled"
    if car_status:
        return str(car_status).replace("_", " ")
    return SOURCE_WORDS.get(source, source)


def status_text(source: str, provenance: Provenance) -> str:
    """The status a layer row shows: CaR's words, said to be a force-keep or a folder auto-label when
    it is one ('force-kept (kept, score 0.41)', 'auto-labelled: kept (score 0.83)')."""
    words = provenance.status_text or short_status(source, provenance.status or None, provenance.origin)
    if provenance.status == FORCED:
        return words if words.startswith("force-kept") else f"force-kept ({words})"
    if source == "car" and provenance.origin == ORIGIN_AUTOLABEL:
        return f"auto-labelled: {words}"
    return words
