"""Where a mask came from: the one typed provenance record, written and read only here.

Every annotation row carries a ``Provenance`` (JSON in the ``provenance`` column, versioned by
``version``; older files are upgraded by ``schema.py``). For a CaR mask it names the concept as the
user typed it (``concept``, the "car | automobile" form that categories use too), CaR's verdict
(``status``: ``KEPT``, ``KEPT_ALONE`` or ``FORCED``, and ``status_text``, the engine's words), SAM's verdict, the
models, the settings that decide the result, how many loop steps ran, whether the tiny test models
made it, the auto-label run key, and where it ran (``origin``). Imported masks record their COCO id
and crowd flag. On the frames of a clip, ``frame_role`` says whether CaR made the mask on that key
frame (``FRAME_KEY``) or SAM 2 carried it there (``FRAME_PROPAGATED``) from the key frame
``from_frame``. Whether a person edited the mask is the annotation's ``edited`` flag, not provenance.

What CaR produced for the whole image, before any edit (masks, removed concepts, scores), is kept
apart in the image's auto-label record (``auto_labels.py``; ``auto_labels.auto_mask(project,
annotation_id)`` gives one mask's first version). See docs/provenance.md.
"""

from __future__ import annotations

import json
import logging
import types
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final, get_origin, get_type_hints

from ..fileio import dumps_strict

log = logging.getLogger(__name__)

#: Version of the record's JSON; ``schema.py`` upgrades rows written by older versions.
PROVENANCE_VERSION: Final = 2

#: CaR's verdicts as stored. KEPT_ALONE: the only concept left, its score of 1 is not a confidence.
KEPT: Final = "kept"
KEPT_ALONE: Final = "kept_without_competition"
FORCED: Final = "forced"        # removed by CaR, then kept by a person (a single-concept run)
REMOVED: Final = "removed"      # removed by the loop (only in the auto-label record: it has no mask row)

#: Where a mask was made.
ORIGIN_WINDOW: Final = "window"        # a CaR run on the image shown in the window
ORIGIN_AUTOLABEL: Final = "autolabel"  # the folder loop (GUI or CLI)
ORIGIN_COCO: Final = "coco"            # imported from a COCO file
ORIGIN_VIDEO: Final = "video"          # a clip's frames: CaR on key frames, SAM 2 in between

#: What a mask on a clip's frame is.
FRAME_KEY: Final = "key"                # CaR ran on this frame
FRAME_PROPAGATED: Final = "propagated"  # SAM 2 carried it here from the key frame ``from_frame``

#: The engine settings recorded with a CaR mask (the ones that change what it computes).
CONFIG_KEYS: Final = ("preset", "eta", "theta", "lam", "phi_iou", "phi_iom", "prompts", "stuff_prompts",
                      "sam_mode", "use_crf", "referring", "max_steps")


@dataclass(frozen=True)
class Provenance:
    """The provenance of one mask. Every field has a neutral default, so a manual mask has ``Provenance()``."""

    concept: str = ""
    status: str | None = None
    status_text: str = ""
    sam_accepted: bool | None = None
    sam_iou: float | None = None
    accepted: bool = False          # a person accepted this very mask (the review queue's verdict)
    models: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None
    test_models: bool = False
    run_key: str | None = None
    origin: str = ""
    coco_id: int | None = None
    iscrowd: bool = False
    frame_role: str = ""
    from_frame: int | None = None
    version: int = PROVENANCE_VERSION

    @staticmethod
    def pick_config(config: Mapping[str, Any]) -> dict[str, Any]:
        """The part of an engine config (``CaRConfig.to_dict()``) worth recording."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items() if k in CONFIG_KEYS}

    def to_json(self) -> str:
        """The stored form: only the fields that differ from their defaults, plus the version."""
        default = Provenance()
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name == "version" or getattr(self, f.name) != getattr(default, f.name)}
        return dumps_strict(data, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Provenance:
        """Read a stored record; unknown keys and values of the wrong type are dropped (a hand-edited
        or foreign row must not break reading the project)."""
        out: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if _fits(_HINTS[f.name], value):
                out[f.name] = dict(value) if isinstance(value, dict) else value
            else:
                log.debug("provenance field %s=%r dropped", f.name, value)
        return cls(**out)

    @classmethod
    def from_json(cls, text: str | None) -> Provenance:
        try:
            data = json.loads(text or "{}")
        except ValueError:
            return cls()
        return cls.from_dict(data) if isinstance(data, dict) else cls()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fits(hint: Any, value: Any) -> bool:
    """Whether a stored JSON value matches a field's annotation (``str | None``, ``dict[str, str]``, ...)."""
    if isinstance(hint, types.UnionType):
        return any(_fits(h, value) for h in hint.__args__)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, get_origin(hint) or hint)


_HINTS: Final = get_type_hints(Provenance)


def sql_field(name: str, table: str = "a") -> str:
    """An SQL expression reading one field of the stored record (for queries such as the review
    queue); NULL for a row whose JSON is broken."""
    if name not in _HINTS:
        raise ValueError(f"provenance has no field {name!r}")
    return (f"CASE WHEN json_valid({table}.provenance) THEN json_extract({table}.provenance, '$.{name}') END")
