"""Turning what the annotator typed into the engine's queries: parsed once, into a ``ConceptList``.

Concepts are separated by commas or new lines, and by nothing else (a ";" is part of the text);
"car | automobile" is one concept with synonyms. A concept has two spellings, each made here and
nowhere else: ``label`` ("car | automobile", the user's form, which the project stores as the category
and in provenance) and ``text`` ("car, automobile", what CLIP reads, as the released class lists join
synonyms). Empty entries are dropped, duplicates (case-insensitive) removed with one warning per
concept however often it repeats, and over-long concepts truncated to fit CLIP's 77-token context
together with the longest template.

The concept bar, the auto-label dialog and the CLI parse the user's text once into a ``ConceptList``
and hand that object on (engine client, pipeline, batch loop, store); ``parse_concepts`` passes an
already parsed list through unchanged. The tokenizer (open_clip, which imports torch) is used only for a
concept that might be too long (``surely_short``). The window parses with ``check_length=False``, so
its GUI thread never loads it: a list that may hold a too-long concept is then marked
``length_checked=False``, and the engine finishes its parse in the worker (``parse_concepts``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
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
        """The text CLIP sees: "car, automobile"."""
        return ", ".join(self.synonyms)

    @property
    def label(self) -> str:
        """The user's form, stored in the project: "car | automobile"."""
        return " | ".join(self.synonyms)

    @property
    def key(self) -> str:
        return self.text.casefold()


@dataclass(frozen=True)
class ConceptList(Sequence[Concept]):
    """Unique concepts in the order typed, with the warnings their parsing raised (duplicates,
    truncations). Build it with ``ConceptList.parse``; it is immutable and safe to pass between threads."""

    concepts: tuple[Concept, ...]
    warnings: tuple[str, ...] = ()
    length_checked: bool = True     # False: a concept may still be over the token limit (see the module)

    @classmethod
    def parse(cls, items: str | Sequence[str | Concept] | ConceptList, *, check_length: bool = True) -> ConceptList:
        """Parse typed text or entries; raises ConceptError when no concept is left. ``check_length=False``
        leaves concepts that might be too long as typed, for the engine to shorten in its worker."""
        if isinstance(items, ConceptList):
            return items
        warnings: list[str] = []
        concepts = parse_concepts(items, warnings, check_length=check_length)
        checked = check_length or all(surely_short(s) for c in concepts for s in c.synonyms)
        return cls(tuple(concepts), tuple(warnings), checked)

    def checked(self) -> ConceptList:
        """This list with the length check done (shortened concepts, their warnings): itself when it was
        parsed with the check. Loads the tokenizer when needed: call it in a worker, not the GUI thread."""
        if self.length_checked:
            return self
        warnings: list[str] = []
        return ConceptList(tuple(parse_concepts(self, warnings)), tuple(warnings))

    @property
    def labels(self) -> list[str]:
        """The user's form of every concept ("car | automobile")."""
        return [c.label for c in self.concepts]

    @property
    def text(self) -> str:
        """The list as a person would type it again (for recent lists and dialogs)."""
        return ", ".join(self.labels)

    def __iter__(self) -> Iterator[Concept]:
        return iter(self.concepts)

    def __len__(self) -> int:
        return len(self.concepts)

    def __getitem__(self, index):
        return self.concepts[index]


@lru_cache(maxsize=1)
def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer  # ships its vocabulary: works offline

    return SimpleTokenizer()


def token_count(text: str) -> int:
    return len(_tokenizer().encode(text))


def surely_short(text: str) -> bool:
    """True when ``text`` cannot be over ``MAX_CONCEPT_TOKENS`` tokens, known without the tokenizer
    (which imports torch). CLIP's tokens are byte-level BPE pieces that never hold white space, so each
    covers at least one byte of the rest: ASCII text with at most that many non-space characters fits.
    Other text gets a factor 2 of margin, for the tokenizer's clean-up (which may rewrite characters)."""
    size = sum(len(ch.encode("utf-8")) for ch in text if not ch.isspace())
    return size <= (MAX_CONCEPT_TOKENS if text.isascii() else MAX_CONCEPT_TOKENS // 2)


def _truncate(text: str, warnings: list[str]) -> str:
    if surely_short(text):
        return text
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


def parse_concepts(items: str | Sequence[str | Concept] | ConceptList,
                   warnings: list[str] | None = None, *, check_length: bool = True) -> list[Concept]:
    """Parse typed text (or a list of entries) into unique concepts; raise ConceptError if none.

    A ``ConceptList`` is already parsed: its concepts come back as they are and its warnings are
    added to ``warnings``; one parsed without the length check gets it here (shortening, and the
    duplicates that shortening may make)."""
    warnings = warnings if warnings is not None else []
    if isinstance(items, ConceptList):
        warnings.extend(items.warnings)   # logged when that list was parsed
        if items.length_checked:
            return list(items.concepts)
        items = items.labels
    first_new = len(warnings)
    entries: Sequence[str | Concept] = split_concept_text(items) if isinstance(items, str) else items
    concepts: list[Concept] = []
    seen: set[str] = set()
    repeats: dict[str, list] = {}  # casefolded name -> [name as first given, times given]
    for entry in entries:
        if isinstance(entry, Concept):
            concept = entry
        else:
            synonyms = tuple(
                _truncate(" ".join(s.split()), warnings) if check_length else " ".join(s.split())
                for s in str(entry).strip().split("|") if s.strip()
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
    for w in warnings[first_new:]:
        log.warning(w)
    return concepts
