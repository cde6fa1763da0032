"""Model weights on this machine: where each file is, whether it is sound, and getting it when it is not.

``ModelManager`` answers, per manifest model, present / missing / corrupt / downloading, and fetches
missing weights into the user's cache (one folder per model: ``<cache>/models/<name>/``, which is
also where a manually downloaded copy is picked up). A local file the user points to
(``set_local_file``, kept in ``<config>/local_models.json``) takes precedence over everything.
CLIP weights also count as present when they already sit in the Hugging Face cache (open_clip's usual
place) or in ``~/.cache/clip``. ``resolve_clip_pretrained``, ``resolve_sam_checkpoint`` and
``resolve_sam2_checkpoint`` are what the model loaders call: they return a local file, download when
allowed and online, or raise ``WeightsMissingError`` within seconds with a message naming the file,
its URL and the folder.

Status is cheap: size and structure are checked every time (a truncated safetensors or zip checkpoint
is caught without hashing), the full SHA-256 once per file version (remembered in
``<cache>/verified.json`` by size and modification time). A file the user points to must be a
checkpoint of the model's kind (``checkpoint_problem``: a PyTorch or safetensors file whose weight
names are SAM's, SAM 2's or CLIP's; read without unpickling anything). Model folders are always inside the
cache (manifest names and file names are checked in manifest.py, and again here). The two JSON
records are written with ``fileio.atomic_write_text``. One lock per model: two threads asking for
the same download share one download. Never Qt.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import struct
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import paths
from ..fileio import atomic_write_text, regular_file
from .cancel import CancelToken
from .downloads import (
    ProgressCallback,
    download_file,
    missing_message,
    offline_reason,
    partial_path,
    probe_host,
    sha256_file,
)
from .errors import Cancelled, ConfigError, WeightsCorruptError, WeightsMissingError
from .manifest import HF_ENDPOINT, ModelSpec, clip_spec_for, find_clip_spec, load_manifest

if TYPE_CHECKING:
    from .model_facts import ModelFacts

log = logging.getLogger(__name__)

PRESENT, MISSING, CORRUPT, DOWNLOADING = "present", "missing", "corrupt", "downloading"
HF_PROBE_TIMEOUT = 3.0

#: SAM model types as segment_anything names them -> manifest names.
SAM_TYPE_TO_NAME = {
    "vit_b": "sam_vit_b",
    "vit_l": "sam_vit_l",
    "vit_h": "sam_vit_h",
    "default": "sam_vit_h",
    "vit_t": "mobilesam_vit_t",
}

# Shared by every ModelManager in the process, keyed by the model's cache folder.
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_ACTIVE: dict[str, tuple[int, int | None]] = {}  # folder -> (done, total) while downloading
_RECORDS_GUARD = threading.Lock()


def _model_lock(key: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


@dataclass(frozen=True)
class ModelStatus:
    """What is known about one model's weights right now."""

    name: str
    state: str  # "present" | "missing" | "corrupt" | "downloading"
    path: Path  # the file that is (or would be) loaded; for "missing", where a download will go
    size: int | None  # bytes on disk; None when there is no file
    expected_size: int | None
    verified: bool  # the full SHA-256 was checked against the manifest and matched
    source: str | None  # "local file", "cache", "hugging face cache", "clip cache"; None when missing
    detail: str = ""
    downloaded: int | None = None  # bytes in the .part file (a resumable or running download)
    title: str = ""
    optional: bool = False
    folder: Path | None = field(default=None, compare=False)  # where a manual copy is picked up

    @property
    def ok(self) -> bool:
        return self.state == PRESENT


def structure_problem(path: Path) -> str | None:
    """A cheap check that a weights file is whole: None when it looks whole, else what is wrong.

    safetensors: the JSON header's tensor offsets must end exactly at the end of the file.
    PyTorch zip checkpoints (.pth/.pt/.bin from torch >= 1.6, TorchScript): the zip directory at the
    end of the file must be readable, which a truncated download never has. Legacy pickles pass.
    """
    try:
        size = path.stat().st_size
        if size == 0:
            return "the file is empty"
        with path.open("rb") as fh:
            head = fh.read(8)
            if path.suffix == ".safetensors":
                if len(head) < 8:
                    return "the file is too short to be safetensors"
                (header_len,) = struct.unpack("<Q", head)
                if header_len > min(size - 8, 100 * 1024 * 1024):
                    return "the safetensors header is damaged"
                header = json.loads(fh.read(header_len))
                end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                          default=0)
                if 8 + header_len + end != size:
                    return f"the file has {size} bytes but its header describes {8 + header_len + end}"
                return None
        if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
            if head.startswith(b"PK\x03\x04"):
                with zipfile.ZipFile(path) as zf:
                    if not zf.namelist():
                        return "the checkpoint archive is empty"
                return None
            if head[:1] == b"\x80":  # a legacy (pre-zip) torch pickle: nothing cheap to check
                return None
            return "it is not a PyTorch checkpoint"
    except (zipfile.BadZipFile, ValueError, KeyError, TypeError, json.JSONDecodeError, struct.error) as exc:
        return f"the file is truncated or damaged ({exc.__class__.__name__})"
    except OSError as exc:
        return f"the file cannot be read ({exc})"
    return None


#: Weight names that identify a checkpoint's kind (all of them must appear in the file's key names).
_KIND_MARKERS: dict[str, tuple[tuple[bytes, ...], ...]] = {
    "sam": ((b"image_encoder", b"mask_decoder"),),
    "sam2": ((b"image_encoder", b"memory_attention"),),
    "clip": ((b"visual", b"transformer"), (b"visual", b"token_embedding")),
}
_SNIFF_BYTES = 16 << 20  # key names sit near the start of a pickle; a safetensors header is its start


def _key_text(path: Path, head: bytes) -> bytes:
    """The bytes where a checkpoint keeps its weight names: the safetensors JSON header, the pickle
    of a zip checkpoint (plus its member names), or the start of a legacy pickle."""
    if head.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            text = "\n".join(names).encode()
            for name in names:
                if name.endswith(("data.pkl", "constants.pkl")):
                    with zf.open(name) as fh:
                        text += fh.read(_SNIFF_BYTES)
            return text
    with path.open("rb") as fh:
        if len(head) >= 8 and head[8:9] == b"{":
            (n,) = struct.unpack("<Q", head[:8])
            fh.seek(8)
            return fh.read(min(n, _SNIFF_BYTES))
        return fh.read(_SNIFF_BYTES)


def checkpoint_problem(path: Path, kind: str) -> str | None:
    """None when ``path`` is a whole checkpoint whose weight names belong to a ``kind`` model ("sam"
    or "clip"); else what is wrong, in words. Nothing is unpickled: the names are read as bytes."""
    _, problem = regular_file(path)
    if problem:
        return f"it {problem}"
    try:
        with path.open("rb") as fh:
            head = fh.read(9)
        is_zip = head.startswith(b"PK\x03\x04")
        is_pickle = head[:1] == b"\x80"
        is_safetensors = len(head) == 9 and head[8:9] == b"{"
        if not (is_zip or is_pickle or is_safetensors):
            return "it is not a model checkpoint (neither a PyTorch file nor safetensors)"
        problem = structure_problem(path) if path.suffix in (".safetensors", ".pth", ".pt", ".bin", ".ckpt") else None
        if problem:
            return problem
        text = _key_text(path, head)
    except (zipfile.BadZipFile, OSError, ValueError, struct.error) as exc:
        return f"the file is truncated or damaged ({exc.__class__.__name__})"
    markers = _KIND_MARKERS.get(kind)
    if markers is None:
        return None
    if not any(all(m in text for m in group) for group in markers):
        wanted = " and ".join(m.decode() for m in markers[0])
        return f"it is a checkpoint, but not of a {kind.upper()} model (no {wanted} weights in it)"
    return None


class ModelManager:
    """Status, download and verification of the manifest's models in one cache folder."""

    def __init__(self, cache_dir: Path | str | None = None, *,
                 manifest: dict[str, ModelSpec] | Path | str | None = None,
                 config_dir: Path | str | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
        self.config_dir = Path(config_dir) if config_dir is not None else paths.config_dir()
        self.models_dir = paths.models_dir(self.cache_dir)
        if isinstance(manifest, dict):
            self._specs = dict(manifest)
        else:
            self._specs = load_manifest(manifest)
        self._specs_guard = threading.Lock()

    # ----------------------------------------------------------------------------------- specs
    def names(self) -> builtins.list[str]:
        return builtins.list(self._specs)

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise ConfigError(
                f"Unknown model {name!r}; known models: {', '.join(self._specs)}."
            ) from None

    def clip_name(self, model_name: str, tag: str) -> str:
        """The manager's name for an open_clip model + tag, adding a spec for names not in the manifest."""
        spec = find_clip_spec(self._specs, model_name, tag)
        if spec is None:
            spec = clip_spec_for(model_name, tag)
            with self._specs_guard:
                self._specs.setdefault(spec.name, spec)
        return spec.name

    def folder_for(self, name: str) -> Path:
        """The model's folder in the cache: downloads go there, manual copies are picked up there."""
        folder = self.models_dir / self.spec(name).name
        # manifest.py already refuses names with separators or '..'; this keeps that promise here too.
        if folder.resolve().parent != self.models_dir.resolve():
            raise ConfigError(f"The model name {name!r} would place its files outside {self.models_dir}.")
        return folder

    def download_target(self, name: str) -> Path:
        return self.folder_for(name) / self.spec(name).filename

    # ----------------------------------------------------------------------------- local files
    @property
    def _local_file_config(self) -> Path:
        return self.config_dir / "local_models.json"

    def local_files(self) -> dict[str, Path]:
        try:
            data = json.loads(self._local_file_config.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable %s: %s", self._local_file_config, exc)
            return {}
        return {k: Path(v) for k, v in data.items() if isinstance(v, str)}

    def set_local_file(self, name: str, path: Path | str | None) -> None:
        """Use ``path`` for model ``name`` from now on (``None`` goes back to the cache)."""
        self.spec(name)
        with _RECORDS_GUARD:
            entries = {k: str(v) for k, v in self.local_files().items()}
            if path is None:
                entries.pop(name, None)
            else:
                file = Path(path).expanduser().resolve()
                if not file.is_file():
                    raise WeightsMissingError(f"{file} does not exist or is not a file.")
                kind = self.spec(name).kind
                problem = checkpoint_problem(file, kind)
                if problem:
                    raise WeightsCorruptError(f"{file} cannot be used for {name}: {problem}. Nothing was changed.")
                entries[name] = str(file)
            self.config_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self._local_file_config, json.dumps(entries, indent=2, sort_keys=True))

    # ------------------------------------------------------------------- verification records
    @property
    def _records_path(self) -> Path:
        return self.cache_dir / "verified.json"

    def _records(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self._records_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def _recorded_hash(self, path: Path) -> str | None:
        rec = self._records().get(str(path))
        if not rec:
            return None
        st = path.stat()
        if rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
            return rec.get("sha256")
        return None

    def _record_hash(self, path: Path, digest: str) -> None:
        st = path.stat()
        with _RECORDS_GUARD:
            records = self._records()
            records[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self._records_path, json.dumps(records, indent=1, sort_keys=True))

    # ---------------------------------------------------------------------------------- status
    def _candidates(self, spec: ModelSpec) -> builtins.list[tuple[Path, str, str]]:
        """(path, source, manifest file name) in order of preference, existing or not."""
        folder = self.folder_for(spec.name)
        found = [(folder / fname, "cache", fname) for fname in spec.candidate_filenames]
        if spec.kind == "clip" and spec.hf_repo:
            try:
                from huggingface_hub import try_to_load_from_cache

                for fname in (spec.filename, *spec.alt_filenames):
                    hit = try_to_load_from_cache(spec.hf_repo, fname)
                    if isinstance(hit, str):
                        found.append((Path(hit), "hugging face cache", fname))
            except Exception as exc:  # noqa: BLE001 - a broken HF cache must not break status
                log.debug("Hugging Face cache lookup failed: %s", exc)
        if spec.kind == "clip" and spec.openai_file is not None:
            found.append((Path.home() / ".cache" / "clip" / spec.openai_file.filename, "clip cache",
                          spec.openai_file.filename))
        return found

    def _check(self, spec: ModelSpec, path: Path, fname: str, user_file: bool) -> tuple[str, bool, str]:
        """(state, verified, detail) for one existing file."""
        size = path.stat().st_size
        expected_size = None if user_file else spec.expected_size(fname)
        if expected_size is not None and size != expected_size:
            return CORRUPT, False, f"{size} bytes instead of {expected_size}"
        problem = checkpoint_problem(path, spec.kind) if user_file else structure_problem(path)
        if problem:
            return CORRUPT, False, problem
        expected = spec.expected_sha256(path.name if user_file else fname)
        digest = self._recorded_hash(path)
        if digest is None or expected is None:
            if user_file:
                return PRESENT, False, "your local file"
            return PRESENT, False, "not hash-checked yet" if expected else "no reference hash; structure checked"
        if digest == expected:
            return PRESENT, True, "SHA-256 verified"
        if user_file:
            return PRESENT, False, "your local file (not the official file: custom weights)"
        return CORRUPT, False, f"SHA-256 {digest[:12]}... does not match the official {expected[:12]}..."

    def status(self, name: str) -> ModelStatus:
        """Present / missing / corrupt / downloading, without hashing (see ``verify``)."""
        spec = self.spec(name)
        folder = self.folder_for(name)
        target = folder / spec.filename
        part = partial_path(target)
        common: dict[str, Any] = dict(name=name, expected_size=spec.size, title=spec.title, optional=spec.optional,
                                      folder=folder)
        active = _ACTIVE.get(str(folder))
        if active is not None:
            return ModelStatus(state=DOWNLOADING, path=target, size=None, verified=False, source=None,
                               downloaded=active[0], detail=f"{active[0]} of {active[1] or '?'} bytes", **common)

        local = self.local_files().get(name)
        if local is not None:
            if not local.is_file():
                return ModelStatus(state=MISSING, path=local, size=None, verified=False, source="local file",
                                   detail=f"your chosen file {local} is gone; choose it again or "
                                          f"'car-desktop models use {name} --clear'", **common)
            state, verified, detail = self._check(spec, local, local.name, user_file=True)
            return ModelStatus(state=state, path=local, size=local.stat().st_size, verified=verified,
                               source="local file", detail=detail, **common)

        corrupt: ModelStatus | None = None
        for path, source, fname in self._candidates(spec):
            if not path.is_file():
                continue
            state, verified, detail = self._check(spec, path, fname, user_file=False)
            st = ModelStatus(state=state, path=path, size=path.stat().st_size, verified=verified,
                             source=source, detail=detail, **common)
            if state == PRESENT:
                return st
            corrupt = corrupt or st
        if corrupt is not None:
            return corrupt
        downloaded = part.stat().st_size if part.is_file() else None
        detail = f"partial download: {downloaded} bytes, resumes on the next download" if downloaded else ""
        return ModelStatus(state=MISSING, path=target, size=None, verified=False, source=None,
                           downloaded=downloaded, detail=detail, **common)

    def list(self) -> builtins.list[ModelStatus]:
        return [self.status(name) for name in self._specs]

    def facts(self) -> builtins.list[ModelFacts]:
        """File name, URL, manual-download folder and size of every model (``model_facts``)."""
        from .model_facts import model_facts

        return model_facts(self)

    def path_for(self, name: str) -> Path:
        """The file that is loaded for ``name`` when present; otherwise where it will be downloaded."""
        return self.status(name).path

    # ------------------------------------------------------------------------------- verify
    def verify(self, name: str, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None) -> ModelStatus:
        """Hash the model's file in full (the result is remembered) and return its status."""
        st = self.status(name)
        if st.state not in (PRESENT, CORRUPT) or st.size is None:
            return st
        if st.state == CORRUPT and "SHA-256" not in st.detail:
            return st  # size or structure already says it is broken
        digest = sha256_file(st.path, progress=progress, cancel=cancel)
        self._record_hash(st.path, digest)
        log.info("%s: %s has SHA-256 %s", name, st.path, digest)
        return self.status(name)

    # ------------------------------------------------------------------------------ download
    def download(self, name: str, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None, *, force: bool = False) -> Path:
        """Fetch the model into its cache folder (no-op when present); returns the usable file."""
        spec = self.spec(name)
        folder = self.folder_for(name)
        with _model_lock(str(folder)):
            st = self.status(name)
            if st.state == PRESENT and not force:
                return st.path
            if st.state == CORRUPT and st.source == "local file":
                raise WeightsCorruptError(
                    f"Your local file {st.path} for {name} is damaged ({st.detail}). Choose another file, "
                    f"or 'car-desktop models use {name} --clear' to download the official one."
                )
            reason = offline_reason(hf=spec.source == "hf")
            if reason:
                raise WeightsMissingError(missing_message(spec.filename, spec.url, folder, reason))
            if st.state == CORRUPT and st.source == "cache" and st.path.parent == folder:
                log.warning("removing corrupt %s (%s) before downloading again", st.path, st.detail)
                st.path.unlink(missing_ok=True)
            folder.mkdir(parents=True, exist_ok=True)

            def report(done: int, total: int | None) -> None:
                _ACTIVE[str(folder)] = (done, total)
                if progress is not None:
                    progress(done, total)

            _ACTIVE[str(folder)] = (0, spec.size)
            try:
                if spec.source == "hf":
                    path = self._download_hf(spec, folder, report, cancel)
                else:
                    result = download_file(
                        spec.url, folder / spec.filename, sha256=spec.sha256, sha256_prefix=spec.sha256_prefix,
                        expected_size=spec.size, progress=report, cancel=cancel, retries=3, pickup_folder=folder,
                    )
                    self._record_hash(result.path, result.sha256)
                    path = result.path
            finally:
                _ACTIVE.pop(str(folder), None)
            final = self.status(name)
            if final.state != PRESENT:
                raise WeightsCorruptError(f"The downloaded {path.name} is unusable: {final.detail}.")
            return final.path

    def _download_hf(self, spec: ModelSpec, folder: Path, progress: ProgressCallback,
                     cancel: CancelToken | None) -> Path:
        """open_clip's Hugging Face weights through huggingface_hub, straight into the model's folder."""
        endpoint = (os.environ.get("HF_ENDPOINT") or HF_ENDPOINT).rstrip("/")
        unreachable = probe_host(endpoint, timeout=HF_PROBE_TIMEOUT)
        if unreachable:
            raise WeightsMissingError(missing_message(spec.filename, spec.url, folder, unreachable))
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        tqdm_class = _progress_tqdm(progress, cancel)
        last_error: Exception | None = None
        for fname in (spec.filename, *spec.alt_filenames):
            try:
                local = Path(hf_hub_download(
                    spec.hf_repo or "", fname, local_dir=folder, tqdm_class=tqdm_class, etag_timeout=5,
                    library_name="car-desktop", endpoint=endpoint,
                ))
            except EntryNotFoundError as exc:
                last_error = exc
                continue
            except Cancelled:
                raise
            except Exception as exc:  # huggingface_hub wraps network trouble in many types
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("Cancelled by the user.") from exc
                raise WeightsMissingError(missing_message(
                    spec.filename, spec.url, folder, f"the Hugging Face hub failed ({exc.__class__.__name__}: {exc})"
                )) from exc
            expected = spec.expected_sha256(fname)
            if expected:
                digest = sha256_file(local, cancel=cancel)
                if digest != expected:
                    local.unlink(missing_ok=True)
                    raise WeightsCorruptError(
                        f"The downloaded {fname} has SHA-256 {digest}, not {expected}; it was deleted."
                    )
                self._record_hash(local, digest)
            problem = structure_problem(local)
            if problem:
                local.unlink(missing_ok=True)
                raise WeightsCorruptError(f"The downloaded {fname} is damaged ({problem}); it was deleted.")
            return local
        raise WeightsMissingError(missing_message(
            spec.filename, spec.url, folder, f"{spec.hf_repo} has no such file ({last_error})"))

    # ------------------------------------------------------------------------------- resolve
    def ensure(self, name: str, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None) -> Path:
        """A usable local file for ``name``: already here, or downloaded now; else a clear error, fast."""
        st = self.status(name)
        if st.state == PRESENT and not st.verified and st.source != "local file":
            spec = self.spec(name)
            if spec.expected_sha256(st.path.name) or (st.path.name == spec.filename and spec.sha256):
                # A copy that arrived by hand: hash it once (remembered) before it is ever loaded.
                st = self.verify(name, cancel=cancel)
        if st.state == PRESENT:
            return st.path
        if st.state == MISSING and st.source == "local file":
            raise WeightsMissingError(f"The weights file for {name} is gone: {st.detail}.")
        return self.download(name, progress=progress, cancel=cancel)


def _progress_tqdm(progress: ProgressCallback, cancel: CancelToken | None) -> type:
    """A silent tqdm class that forwards huggingface_hub's byte counts and honours cancel."""
    from tqdm.std import tqdm

    class _Bar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["disable"] = True
            self._car_total = kwargs.get("total")
            self._car_done = int(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if cancel is not None:
                cancel.check()
            self._car_done += int(n or 0)
            progress(self._car_done, self._car_total)
            return None

    return _Bar


def default_manager() -> ModelManager:
    """A manager on the user's cache and config folders (as the environment names them now)."""
    return ModelManager()


def resolve_clip_pretrained(model_name: str, tag: str, progress: ProgressCallback | None = None,
                            cancel: CancelToken | None = None, *, manager: ModelManager | None = None) -> Path:
    """A local checkpoint file for an open_clip model + pretrained tag (``tag`` may itself be a file).

    Looks at the user's chosen file, our cache, the Hugging Face cache and ``~/.cache/clip``; downloads
    when online; otherwise raises WeightsMissingError within seconds (at once under HF_HUB_OFFLINE=1
    or CAR_DESKTOP_NO_DOWNLOAD=1).
    """
    candidate = Path(tag).expanduser()
    if candidate.suffix and candidate.is_file():
        return candidate
    mgr = manager or default_manager()
    return mgr.ensure(mgr.clip_name(model_name, tag), progress=progress, cancel=cancel)


def resolve_sam_checkpoint(model_type: str, progress: ProgressCallback | None = None,
                           cancel: CancelToken | None = None, *, manager: ModelManager | None = None) -> Path:
    """A local checkpoint file for a SAM model type (vit_b, vit_l, vit_h, or vit_t for MobileSAM)."""
    name = SAM_TYPE_TO_NAME.get(model_type)
    if name is None:
        raise ConfigError(f"Unknown SAM model type {model_type!r}; choose one of vit_b, vit_l, vit_h, vit_t.")
    mgr = manager or default_manager()
    return mgr.ensure(name, progress=progress, cancel=cancel)


def resolve_sam2_checkpoint(name: str, progress: ProgressCallback | None = None,
                            cancel: CancelToken | None = None, *, manager: ModelManager | None = None) -> Path:
    """A local checkpoint file for a SAM 2 model of the manifest (``sam2.1_hiera_tiny`` ... ``_large``)."""
    mgr = manager or default_manager()
    if mgr.spec(name).kind != "sam2":
        raise ConfigError(f"{name} is not a SAM 2 model; choose one of "
                          f"{', '.join(n for n in mgr.names() if mgr.spec(n).kind == 'sam2')}.")
    return mgr.ensure(name, progress=progress, cancel=cancel)

