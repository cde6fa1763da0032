"""CLIP text embeddings, cached in memory and on disk, shared by the proposal and classifier stages.

The recurrent loop asks for the same prompts step after step and image after image (15 classifier
templates x the concepts, plus the background words); each distinct text is encoded once per model,
in one batch, cut to the longest prompt (see clip_tower.encode_text_truncated). Embeddings are kept in
an in-memory LRU keyed by ``(clip.key, text)`` and, optionally, in one small SQLite file per set of
weights in the user cache folder (keyed by the model's weight fingerprint and the text), so a new start
of the app does not re-encode the 150 or so prompts of a concept list. Texts are always encoded in
fp32 (they are cached, so bf16 would save little and cost agreement).

Counters: ``PassCounter.text_encodes`` counts texts actually run through the text tower,
``text_disk_hits`` texts read back from disk.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .clip_models import ClipModel
from .clip_tower import encode_text_truncated
from .device import full_precision
from .results import PassCounter

log = logging.getLogger(__name__)

#: Bumped when what is stored changes meaning (e.g. the truncation rule).
_DISK_FORMAT = 1


def default_cache_folder() -> Path:
    from ..paths import cache_dir

    return cache_dir() / "text_embeddings"


class _DiskCache:
    """float32 embeddings by text for one set of weights, in an SQLite file (safe across processes)."""

    def __init__(self, folder: Path, clip: ClipModel, dim: int) -> None:
        ident = f"{clip.name}|{clip.fingerprint}|v{_DISK_FORMAT}"
        name = hashlib.blake2b(ident.encode(), digest_size=10).hexdigest()
        self.dim = dim
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{name}.sqlite"
        self._db = sqlite3.connect(str(self.path), timeout=10, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (text TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self._db.commit()

    def get(self, texts: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(texts), 500):  # SQLite's parameter limit
            chunk = texts[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for text, blob in self._db.execute(f"SELECT text, vec FROM emb WHERE text IN ({marks})", chunk):
                # Bounded: a row of another length is foreign or damaged and is ignored.
                if isinstance(blob, bytes) and len(blob) == 4 * self.dim:
                    vec = np.frombuffer(blob, dtype="<f4")
                    if np.all(np.isfinite(vec)):
                        found[text] = vec
        return found

    def put(self, items: dict[str, np.ndarray]) -> None:
        rows = [(t, np.asarray(v, dtype="<f4").tobytes()) for t, v in items.items()]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO emb (text, vec) VALUES (?, ?)", rows)

    def close(self) -> None:
        self._db.close()


class TextEncoder:
    """L2-normalised CLIP text embeddings, cached (LRU) by ``(clip.key, text)`` and optionally on disk.

    ``disk_cache``: True for the user cache folder, a folder path, or False for memory only. A disk
    cache that cannot be opened or written only costs re-encoding (logged once).
    """

    def __init__(self, counter: PassCounter, max_entries: int = 20000, batch_size: int = 256,
                 disk_cache: bool | str | Path = False) -> None:
        self.counter = counter
        self.max_entries = max_entries
        self.batch_size = batch_size
        self._cache: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._folder: Path | None = None
        if disk_cache:
            self._folder = default_cache_folder() if disk_cache is True else Path(disk_cache)
        self._disks: dict[str, _DiskCache | None] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        """Forget the in-memory embeddings (the disk cache stays)."""
        with self._lock:
            self._cache.clear()

    def _disk(self, clip: ClipModel) -> _DiskCache | None:
        if self._folder is None:
            return None
        if clip.key not in self._disks:
            try:
                self._disks[clip.key] = _DiskCache(self._folder, clip, _embed_dim(clip))
            except (OSError, sqlite3.Error) as exc:
                log.warning("Text-embedding disk cache unavailable in %s (%s); texts are encoded every start.",
                            self._folder, exc)
                self._disks[clip.key] = None
        return self._disks[clip.key]

    @torch.no_grad()
    def encode(self, clip: ClipModel, texts: list[str]) -> torch.Tensor:
        """(len(texts), d) float32 embeddings on ``clip.device``, each of unit length."""
        texts = list(texts)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if (clip.key, t) not in self._cache))
            disk = self._disk(clip) if missing else None
            if disk is not None:
                try:
                    stored = disk.get(missing)
                except sqlite3.Error as exc:
                    log.warning("Text-embedding disk cache read failed (%s).", exc)
                    stored = {}
                for text, vec in stored.items():
                    self._cache[(clip.key, text)] = torch.from_numpy(vec.copy()).to(clip.device)
                self.counter.text_disk_hits += len(stored)
                missing = [t for t in missing if t not in stored]
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start:start + self.batch_size]
                tokens = clip.tokenizer(chunk).to(clip.device)
                with full_precision(clip.device.type):
                    feats = F.normalize(encode_text_truncated(clip.model, tokens).float(), dim=-1)
                for text, f in zip(chunk, feats):
                    self._cache[(clip.key, text)] = f
                self.counter.text_encodes += len(chunk)
                if disk is not None:
                    try:
                        disk.put({t: f.cpu().numpy() for t, f in zip(chunk, feats)})
                    except sqlite3.Error as exc:
                        log.warning("Text-embedding disk cache write failed (%s).", exc)
            if missing:
                log.debug("Encoded %d new texts with %s.", len(missing), clip.name)
            rows = []
            for t in texts:
                self._cache.move_to_end((clip.key, t))
                rows.append(self._cache[(clip.key, t)])
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        if not rows:
            return torch.zeros((0, _embed_dim(clip)), dtype=torch.float32, device=clip.device)
        return torch.stack(rows, dim=0)


def _embed_dim(clip: ClipModel) -> int:
    proj = clip.model.text_projection
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[-1])
    if isinstance(proj, torch.nn.Linear):
        return int(proj.out_features)
    return int(clip.model.visual.output_dim)
