"""The cached text encoder: unit-length embeddings, one encode per (model, text)."""

from __future__ import annotations

import pytest
import torch

from car_desktop.engine import clip_models as cm
from car_desktop.engine.results import PassCounter
from car_desktop.engine.text_encoder import TextEncoder


@pytest.fixture(scope="module")
def models():
    return cm.load_test_models(device="cpu")


def test_encode_matches_open_clip_and_caches(models):
    proposal, classifier = models
    counter = PassCounter()
    enc = TextEncoder(counter)
    texts = ["dog", "a clean origami sky.", "dog", "cat"]
    emb = enc.encode(proposal, texts)
    assert emb.shape == (4, 64) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    with torch.no_grad():
        want = torch.nn.functional.normalize(proposal.model.encode_text(proposal.tokenizer(texts)), dim=-1)
    torch.testing.assert_close(emb, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(emb[0], emb[2])
    assert counter.text_encodes == 3          # duplicates are encoded once

    again = enc.encode(proposal, ["cat", "dog"])
    assert counter.text_encodes == 3          # all hits
    torch.testing.assert_close(again, emb[[3, 0]])

    enc.encode(classifier, ["dog"])           # another model is another cache entry
    assert counter.text_encodes == 4
    assert len(enc) == 4


def test_empty_list_and_lru_bound(models):
    proposal = models[0]
    counter = PassCounter()
    enc = TextEncoder(counter, max_entries=2)
    assert enc.encode(proposal, []).shape == (0, 64)
    enc.encode(proposal, ["a", "b", "c"])
    assert len(enc) == 2
    enc.encode(proposal, ["a"])               # evicted earlier, so encoded again
    assert counter.text_encodes == 4


def test_disk_cache_survives_a_new_start(models, tmp_path):
    proposal, classifier = models
    texts = ["dog", "a clean origami sky.", "There is a large cat in the scene."]
    first = TextEncoder(PassCounter(), disk_cache=tmp_path)
    want = first.encode(proposal, texts)
    assert first.counter.text_encodes == 3 and first.counter.text_disk_hits == 0
    again = TextEncoder(PassCounter(), disk_cache=tmp_path)      # a new start: empty memory cache
    got = again.encode(proposal, [*texts, "cat"])
    torch.testing.assert_close(got[:3], want, rtol=0, atol=0)
    assert again.counter.text_disk_hits == 3 and again.counter.text_encodes == 1
    other = TextEncoder(PassCounter(), disk_cache=tmp_path)      # other weights: their own entries
    other.encode(classifier, texts)
    assert other.counter.text_disk_hits == 0 and other.counter.text_encodes == 3


def test_damaged_disk_rows_are_ignored(models, tmp_path):
    import sqlite3

    proposal, _ = models
    enc = TextEncoder(PassCounter(), disk_cache=tmp_path)
    want = enc.encode(proposal, ["dog"])
    (db,) = tmp_path.glob("*.sqlite")
    with sqlite3.connect(db) as con:
        con.execute("UPDATE emb SET vec = ? WHERE text = 'dog'", (b"short",))
    fresh = TextEncoder(PassCounter(), disk_cache=tmp_path)
    torch.testing.assert_close(fresh.encode(proposal, ["dog"]), want)
    assert fresh.counter.text_disk_hits == 0 and fresh.counter.text_encodes == 1


def test_unusable_disk_cache_only_costs_encodes(models, tmp_path, monkeypatch):
    from car_desktop.engine import text_encoder

    proposal, _ = models
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    enc = TextEncoder(PassCounter(), disk_cache=blocker)
    warned: list[str] = []
    monkeypatch.setattr(text_encoder.log, "warning", lambda msg, *args: warned.append(msg % args))
    emb = enc.encode(proposal, ["dog", "cat"])
    assert emb.shape == (2, 64) and enc.counter.text_encodes == 2
    assert any("disk cache unavailable" in w for w in warned)
