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
