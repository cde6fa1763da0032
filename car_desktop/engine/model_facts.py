"""What a person needs to get each model by hand: its exact file name, its URL, the folder where a manual
download is picked up, and its size, in one form for both ``car-desktop models list`` and the window's
Models dialog (so the two never disagree, sizes included).

Sizes are the manifest's: the exact byte count where it has one (SAM files), else its approximate
megabytes (the CLIP files, which Hugging Face serves), written "about N MB". Never imports torch or Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model_manager import ModelManager


def size_text(size: int | None, approx_mb: int | None = None) -> str:
    """'375.0 MB' for an exact byte count, 'about 599 MB' for the manifest's estimate, '?' without either."""
    if size is not None:
        return f"{size / 1e6:,.1f} MB"
    if approx_mb is not None:
        return f"about {approx_mb:,} MB"
    return "?"


@dataclass(frozen=True)
class ModelFacts:
    """One model's download facts and its state on this computer."""

    name: str
    title: str
    state: str
    optional: bool
    file_name: str
    url: str
    folder: Path
    size: str

    def lines(self) -> list[str]:
        optional = " (optional)" if self.optional else ""
        head = f"{self.title or self.name} [{self.name}]{optional}: {self.state}, {self.size}"
        return [head, f"  file:   {self.file_name}", f"  URL:    {self.url}",
                f"  folder: {self.folder}  (a file copied here by hand is used)"]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "file_name": self.file_name, "url": self.url, "folder": str(self.folder),
                "size_text": self.size}


def model_facts(manager: ModelManager) -> list[ModelFacts]:
    """The facts of every model of the manager's manifest, in manifest order."""
    out = []
    for st in manager.list():
        spec = manager.spec(st.name)
        out.append(ModelFacts(name=st.name, title=spec.title, state=st.state, optional=spec.optional,
                              file_name=spec.filename, url=spec.url, folder=manager.folder_for(st.name),
                              size=size_text(spec.size, spec.approx_size_mb)))
    return out


def facts_text(facts: list[ModelFacts]) -> str:
    """The facts as plain text (printed by the CLI, copied by the dialog)."""
    return "\n".join(line for f in facts for line in f.lines())
