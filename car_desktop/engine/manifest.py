"""The model manifest: which weight files the app knows, where they come from and how to check them.

``resources/models.json`` lists the default models (CLIP ViT-B/16 and ViT-L/14 with OpenAI weights,
SAM vit_b / vit_l / vit_h, optional MobileSAM). Any other open_clip name + pretrained tag is turned
into a spec on demand from open_clip's own pretrained table (``clip_spec_for``), so every open_clip
model can be managed the same way. Model names and file names become folder and file names in the
weights cache, so each must be one plain name (letters, digits, ``._+-``, not starting with a dot):
no separator, no ``..``, nothing that could place a file outside the cache. Plain data only: no
network, no torch at import time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..paths import resource_path
from .errors import ConfigError

HF_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class AltFile:
    """Another accepted file for the same weights (e.g. the OpenAI ``clip`` package's ``ViT-B-16.pt``)."""

    filename: str
    url: str = ""
    sha256: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One model's weights as the manifest describes them."""

    name: str
    kind: str  # "clip" | "sam"
    title: str
    filename: str
    url: str
    source: str = "url"  # "url": plain HTTPS; "hf": Hugging Face hub through huggingface_hub
    size: int | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    approx_size_mb: int | None = None
    hf_repo: str | None = None
    alt_filenames: tuple[str, ...] = ()
    openai_file: AltFile | None = None
    open_clip_model: str | None = None
    open_clip_tag: str | None = None
    sam_model_type: str | None = None
    optional: bool = False
    default: bool = False
    package: str | None = None
    module: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def candidate_filenames(self) -> tuple[str, ...]:
        """File names accepted in the model's folder, preferred first."""
        names = [self.filename, *self.alt_filenames]
        if self.openai_file is not None:
            names.append(self.openai_file.filename)
        return tuple(dict.fromkeys(names))

    def expected_sha256(self, filename: str) -> str | None:
        """The full SHA-256 known for one of the accepted file names, if any."""
        if filename == self.filename:
            return self.sha256
        if self.openai_file is not None and filename == self.openai_file.filename:
            return self.openai_file.sha256
        return None

    def expected_size(self, filename: str) -> int | None:
        return self.size if filename == self.filename else None


_HEX = re.compile(r"^[0-9a-f]+$")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


def plain_name(value: object, what: str) -> str:
    """``value`` if it is one plain file name (see the module docstring); ValueError otherwise."""
    if not isinstance(value, str) or not _PLAIN_NAME.match(value):
        raise ValueError(f"{what} {str(value)[:80]!r} is not a plain file name (letters, digits, '._+-'; "
                         "no folder separators, no leading dot)")
    return value


def _spec_from_dict(name: str, raw: dict[str, Any]) -> ModelSpec:
    try:
        openai = raw.get("openai_file")
        sha = raw.get("sha256")
        prefix = raw.get("sha256_prefix")
        for value in (sha, prefix, (openai or {}).get("sha256")):
            if value is not None and not _HEX.match(value):
                raise ValueError(f"hash {value!r} is not lower-case hex")
        if sha is not None and len(sha) != 64:
            raise ValueError(f"sha256 of {name} has {len(sha)} hex digits, not 64")
        known = set(ModelSpec.__dataclass_fields__)
        plain_name(name, "the model name")
        plain_name(raw["filename"], "the file name")
        for alt in raw.get("alt_filenames", ()):
            plain_name(alt, "the file name")
        if openai:
            plain_name(openai.get("filename"), "the file name")
        return ModelSpec(
            name=name,
            kind=raw["kind"],
            title=raw.get("title", name),
            filename=raw["filename"],
            url=raw["url"],
            source=raw.get("source", "url"),
            size=raw.get("size"),
            sha256=sha,
            sha256_prefix=prefix,
            approx_size_mb=raw.get("approx_size_mb"),
            hf_repo=raw.get("hf_repo"),
            alt_filenames=tuple(raw.get("alt_filenames", ())),
            openai_file=AltFile(**openai) if openai else None,
            open_clip_model=raw.get("open_clip_model"),
            open_clip_tag=raw.get("open_clip_tag"),
            sam_model_type=raw.get("sam_model_type"),
            optional=bool(raw.get("optional", False)),
            default=bool(raw.get("default", False)),
            package=raw.get("package"),
            module=raw.get("module"),
            extra={k: v for k, v in raw.items() if k not in known},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"The model manifest entry {name!r} is invalid: {exc}") from exc


def load_manifest(path: Path | str | None = None) -> dict[str, ModelSpec]:
    """Read the manifest (the bundled ``resources/models.json`` unless ``path`` is given)."""
    manifest_path = Path(path) if path is not None else resource_path("models.json")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"The model manifest {manifest_path} is missing; reinstall CaR Desktop.") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"The model manifest {manifest_path} is not valid JSON: {exc}") from exc
    return {name: _spec_from_dict(name, raw) for name, raw in data.get("models", {}).items()}


def clip_key(model_name: str, tag: str) -> tuple[str, str]:
    """open_clip's normalisation of a (model, tag) pair, for matching manifest entries."""
    return model_name, tag.lower().replace("-", "_")


def find_clip_spec(manifest: dict[str, ModelSpec], model_name: str, tag: str) -> ModelSpec | None:
    wanted = clip_key(model_name, tag)
    for spec in manifest.values():
        if (spec.kind == "clip" and spec.open_clip_model and spec.open_clip_tag
                and clip_key(spec.open_clip_model, spec.open_clip_tag) == wanted):
            return spec
    return None


def clip_spec_for(model_name: str, tag: str) -> ModelSpec:
    """A spec for any open_clip model + pretrained tag, built from open_clip's pretrained table."""
    import open_clip  # heavy (imports torch): only for names the manifest does not list

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise ConfigError(
            f"open_clip has no pretrained weights {tag!r} for model {model_name!r} "
            f"(known tags: {tags}). Choose a local checkpoint file instead."
        )
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"clip_{model_name}_{clip_key(model_name, tag)[1]}")
    hf_hub = cfg.get("hf_hub", "")
    url = cfg.get("url", "")
    if hf_hub:
        repo, filename = hf_hub.rstrip("/"), ""
        if not hf_hub.endswith("/"):
            repo, filename = hf_hub.rsplit("/", 1)
        alts: tuple[str, ...] = ()
        if not filename:
            filename, alts = "open_clip_model.safetensors", ("open_clip_pytorch_model.bin",)
        openai = None
        if url:
            openai = AltFile(filename=url.rsplit("/", 1)[-1], url=url, sha256=_sha_from_url(url))
        return _checked(ModelSpec(
            name=safe_name, kind="clip", title=f"{model_name} ({tag})", filename=filename,
            url=f"{HF_ENDPOINT}/{repo}/resolve/main/{filename}", source="hf", hf_repo=repo,
            alt_filenames=alts, openai_file=openai, open_clip_model=model_name, open_clip_tag=tag,
        ))
    if url:
        return _checked(ModelSpec(
            name=safe_name, kind="clip", title=f"{model_name} ({tag})", filename=url.rsplit("/", 1)[-1],
            url=url, source="url", sha256=_sha_from_url(url),
            sha256_prefix=None if _sha_from_url(url) else _prefix_from_name(url),
            open_clip_model=model_name, open_clip_tag=tag,
        ))
    raise ConfigError(f"open_clip lists {model_name!r} / {tag!r} without any download location.")


def _checked(spec: ModelSpec) -> ModelSpec:
    try:
        plain_name(spec.name, "the model name")
        for fname in spec.candidate_filenames:
            plain_name(fname, "the file name")
    except ValueError as exc:
        raise ConfigError(f"open_clip's entry for {spec.title} cannot be stored safely: {exc}") from None
    return spec


def _sha_from_url(url: str) -> str | None:
    """OpenAI's CLIP URLs carry the file's full SHA-256 as the folder name."""
    parts = url.rstrip("/").split("/")
    if len(parts) >= 2 and len(parts[-2]) == 64 and _HEX.match(parts[-2]):
        return parts[-2]
    return None


def _prefix_from_name(url: str) -> str | None:
    """open_clip's GitHub release files end in ``-<sha256 prefix>.pt``."""
    if "mlfoundations" not in url:
        return None
    stem = url.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    tail = stem.rsplit("-", 1)[-1]
    return tail if len(tail) >= 8 and _HEX.match(tail) else None
