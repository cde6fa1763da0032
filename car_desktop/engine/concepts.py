"""Turning what the annotator typed into the engine's queries.

Concepts are separated by commas or new lines, and by nothing else (a ";" is part of the text);
"car | automobile" is one concept with synonyms, whose CLIP text is the synonyms joined by ", " (as
the released class lists do). Empty entries are dropped, duplicates (case-insensitive) removed with
one warning per concept however often it repeats, and over-long concepts truncated to fit CLIP's
77-token context together with the longest template.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

from .errors import ConceptError

log = logging.getLogger(__name__)

#: Tokens a concept may use: 77 minus start/end tokens minus the longest template's own words.
MAX_CONCEPT_TOKENS = 60


@dataclass(frozen=True)
class Concept:
    """One query: a display name and its synonyms (the name is the first synonym)."""

    synonyms: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.synonyms[0]

    @property
    def text(self) -> str:
        """The text CLIP sees."""
        return ", ".join(self.synonyms)

    @property
    def key(self) -> str:
        return self.text.casefold()


@lru_cache(maxsize=1)
def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer  # ships its vocabulary: works offline

    return SimpleTokenizer()


def token_count(text: str) -> int:
    return len(_tokenizer().encode(text))


def _truncate(text: str, warnings: list[str]) -> str:
    tok = _tokenizer()
    ids = tok.encode(text)
    if len(ids) <= MAX_CONCEPT_TOKENS:
        return text
    short = tok.decode(ids[:MAX_CONCEPT_TOKENS]).strip()
    warnings.append(
        f"Concept '{text[:40]}...' is {len(ids)} tokens long; CLIP reads at most {MAX_CONCEPT_TOKENS} "
        f"here, so it was shortened to '{short}'."
    )
    return short


def split_concept_text(text: str) -> list[str]:
    """Split on commas and new lines (but not on the ", " inside a synonym group)."""
    return [part.strip() for part in re.split(r"[,\r\n]", text) if part.strip()]


def parse_concepts(items: str | list[str] | tuple[str, ...], warnings: list[str] | None = None) -> list[Concept]:
    """Parse typed text (or a list of entries) into unique concepts; raise ConceptError if none."""
    warnings = warnings if warnings is not None else []
    entries = split_concept_text(items) if isinstance(items, str) else [str(e).strip() for e in items]
    concepts: list[Concept] = []
    seen: set[str] = set()
    repeats: dict[str, list] = {}  # casefolded name -> [name as first given, times given]
    for entry in entries:
        synonyms = tuple(
            _truncate(" ".join(s.split()), warnings) for s in entry.split("|") if s.strip()
        )
        if not synonyms:
            continue
        concept = Concept(synonyms)
        if concept.key in seen or concept.name.casefold() in {c.name.casefold() for c in concepts}:
            first = next((c.name for c in concepts if c.name.casefold() == concept.name.casefold()), concept.name)
            repeats.setdefault(first.casefold(), [first, 1])[1] += 1
            continue
        seen.add(concept.key)
        concepts.append(concept)
    warnings.extend(f"Concept '{name}' appears more than once ({n} times); it is used once."
                    for name, n in repeats.values())
    if not concepts:
        raise ConceptError("No concepts given. Type one or more concepts separated by commas, e.g. 'cat, dog, sky'.")
    for w in warnings:
        log.warning(w)
    return concepts
