"""The mask classifier: CLIP preprocessing, the second-to-last-block CLS quirk, the double softmax."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from car_desktop.engine import clip_models as cm
from car_desktop.engine.classifier import MaskClassifier, clip_preprocess, double_softmax
from car_desktop.engine.config import CLASSIFIER_TEMPLATES, CaRConfig
from car_desktop.engine.errors import ConfigError
from car_desktop.engine.results import PassCounter
from car_desktop.engine.text_encoder import TextEncoder

QUERIES = ["dog", "cat", "traffic light"]
TEMPLATES = CLASSIFIER_TEMPLATES[:4]


@pytest.fixture(scope="module")
def classifier_clip():
    return cm.load_test_models(device="cpu")[1]


def _clf(clip, **config) -> MaskClassifier:
    counter = PassCounter()
    return MaskClassifier(clip, CaRConfig(**config), TextEncoder(counter), counter)


def _images(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(90, 120, 3), (240, 200, 3), (31, 57, 3)][:n]]


def test_double_softmax_hand_computed():
    # Two images, two queries, two templates; cosines chosen by hand (scale 1 keeps numbers readable).
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],          # template 0: query 0 = e0, query 1 = e1
                        [[0.6, 0.8], [0.8, 0.6]]])         # template 1
    got = double_softmax(img, txt, scale=1.0).numpy()

    def softmax(v):
        e = np.exp(v - v.max())
        return e / e.sum()

    row0 = softmax(softmax(np.array([1.0, 0.0])) + softmax(np.array([0.6, 0.8])))
    row1 = softmax(softmax(np.array([0.0, 1.0])) + softmax(np.array([0.8, 0.6])))
    np.testing.assert_allclose(got, np.stack([row0, row1]), rtol=1e-6)
    # With one query the score is 1 whatever the image (the "kept without competition" case).
    assert double_softmax(img, txt[:, :1]).numpy() == pytest.approx(np.ones((2, 1)))


@pytest.mark.parametrize("shape", [(90, 120), (240, 200), (31, 57), (224, 224)])
def test_preprocess_matches_open_clip_transform(shape, classifier_clip):
    img = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    transform = open_clip.image_transform(224, is_train=False)
    want = transform(Image.fromarray(img))
    got = _clf(classifier_clip).preprocess([img])[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert clip_preprocess(img).shape == (224, 224, 3)


def _reference_scores(clip, images, queries, templates, cls_block: int) -> np.ndarray:
    """The released code's way: every image re-encoded for every template, full-context text, the
    model's own exp(logit_scale)."""
    visual = clip.model.visual
    transform = open_clip.image_transform(224, is_train=False)
    pixels = torch.stack([transform(Image.fromarray(im)) for im in images])
    total = 0
    with torch.no_grad():
        for template in templates:
            x = visual._embeds(pixels)
            n = len(visual.transformer.resblocks)
            for blk in visual.transformer.resblocks[: cls_block % n + 1]:
                x = blk(x)
            img = F.normalize(visual.ln_post(x[:, 0]) @ visual.proj, dim=-1)
            tok = clip.tokenizer([template.format(q) for q in queries])
            txt = F.normalize(clip.model.encode_text(tok), dim=-1)
            total = total + (clip.model.logit_scale.exp() * img @ txt.T).softmax(dim=-1)
    return total.softmax(dim=-1).numpy()


@pytest.mark.parametrize("cls_block", [-2, -1])
def test_encode_once_equals_per_template_reencoding(classifier_clip, cls_block):
    clf = _clf(classifier_clip, classifier_cls_block=cls_block)
    images = _images()
    got = clf.score(images, QUERIES, TEMPLATES)
    want = _reference_scores(classifier_clip, images, QUERIES, TEMPLATES, cls_block)
    assert got.shape == (3, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
    assert clf.counter.classifier_image_passes == 3                       # once, not per template
    assert clf.counter.text_encodes == len(QUERIES) * len(TEMPLATES)
    clf.score(images, QUERIES, TEMPLATES)
    assert clf.counter.text_encodes == len(QUERIES) * len(TEMPLATES)      # texts cached


def test_cls_block_minus_one_is_standard_clip(classifier_clip):
    clf = _clf(classifier_clip, classifier_cls_block=-1)
    images = _images(2)
    with torch.no_grad():
        want = F.normalize(classifier_clip.model.encode_image(clf.preprocess(images)), dim=-1)
    torch.testing.assert_close(clf.encode_images(images), want, atol=1e-5, rtol=1e-5)
    default = _clf(classifier_clip)
    assert len(default.blocks) == len(classifier_clip.model.visual.transformer.resblocks) - 1


def test_batching_and_defaults(classifier_clip):
    images = _images()
    small = _clf(classifier_clip)
    small.batch_size = 1
    big = _clf(classifier_clip)
    np.testing.assert_allclose(small.score(images, QUERIES), big.score(images, QUERIES), atol=1e-6)
    assert small.counter.classifier_image_passes == 3
    assert small.counter.text_encodes == len(QUERIES) * len(CLASSIFIER_TEMPLATES)   # config templates
    assert big.score([], QUERIES).shape == (0, 3)


def test_bad_cls_block(classifier_clip):
    with pytest.raises(ConfigError):
        _clf(classifier_clip, classifier_cls_block=-9)
