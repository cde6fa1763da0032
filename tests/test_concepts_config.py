"""Concept parsing (separators, synonyms, duplicates, empty, over-long) and config presets/validation."""

from __future__ import annotations

import pytest

from car_desktop.engine.concepts import MAX_CONCEPT_TOKENS, ConceptList, parse_concepts, token_count
from car_desktop.engine.config import PRESETS, CaRConfig, preset
from car_desktop.engine.errors import ConceptError, ConfigError
from car_desktop.engine.pipeline import effective_background


def test_commas_newlines_and_synonyms():
    cs = parse_concepts("forklift, pallet\nwet floor ,  car |  automobile ")
    assert [c.name for c in cs] == ["forklift", "pallet", "wet floor", "car"]
    assert cs[3].synonyms == ("car", "automobile") and cs[3].text == "car, automobile"


@pytest.mark.parametrize("text", ["", "  ,, \n ", "|", " | , "])
def test_empty_concepts_raise_clear_error(text):
    with pytest.raises(ConceptError, match="No concepts"):
        parse_concepts(text)


def test_duplicates_removed_with_warning():
    warnings: list[str] = []
    cs = parse_concepts("Cat, dog, cat ,DOG", warnings)
    assert [c.name for c in cs] == ["Cat", "dog"]
    assert len(warnings) == 2 and "more than once" in warnings[0]


def test_overlong_concept_truncated_with_warning():
    warnings: list[str] = []
    long = " ".join(["red"] * 120)
    (c,) = parse_concepts([long], warnings)
    assert token_count(c.name) <= MAX_CONCEPT_TOKENS
    assert any("shortened" in w for w in warnings)


def test_unchecked_list_is_shortened_by_the_engine_as_a_checked_parse_would():
    long = " ".join(["the man in the red vest"] * 20)
    text = f"cat, {long} | {long} worker, cat"
    checked = ConceptList.parse(text)
    unchecked = ConceptList.parse(text, check_length=False)   # what the window sends (no tokenizer)
    assert checked.length_checked and not unchecked.length_checked
    assert unchecked.labels[1].startswith(long)                   # as typed, not yet shortened
    warnings: list[str] = []
    finished = parse_concepts(unchecked, warnings)                # what the pipeline does in its worker
    assert [c.label for c in finished] == checked.labels
    assert all(token_count(s) <= MAX_CONCEPT_TOKENS for c in finished for s in c.synonyms)
    assert sorted(warnings) == sorted(checked.warnings)
    assert any("shortened" in w for w in warnings) and any("more than once" in w for w in warnings)
    assert unchecked.checked().labels == checked.labels and checked.checked() is checked
    # The resume key is the same whether the window (unchecked) or the CLI (checked) parsed the text.
    from car_desktop.autolabel import run_key

    assert run_key(unchecked, CaRConfig()) == run_key(checked, CaRConfig())
    # A list of surely short concepts needs nothing more.
    assert ConceptList.parse("cat, dog | puppy", check_length=False).length_checked


def test_presets_match_the_paper_table():
    assert (preset("objects").eta, preset("objects").theta, preset("objects").lam) == (0.4, 0.6, 0.4)
    assert preset("objects").prompts == ("blur", "circle")  # drawn in canonical order
    assert CaRConfig(prompts=("circle", "blur")) == CaRConfig(prompts=("blur", "circle"))
    s = preset("objects-and-stuff")
    assert (s.eta, s.theta, s.lam, s.prompts) == (0.5, 0.3, 0.5, ("blur", "gray"))
    sc = preset("scene")
    assert sc.prompts_for("dog") == ("blur", "circle") and sc.prompts_for("Sky") == ("blur", "gray")
    r = preset("referring")
    assert r.referring and r.classifier_model == "ViT-B-16" and len(r.templates) == 1
    assert len(CaRConfig().templates) == 15 and len(CaRConfig().background_words) == 23
    assert set(PRESETS) == {"objects", "objects-and-stuff", "scene", "referring"}


@pytest.mark.parametrize("bad", [dict(eta=1.5), dict(theta=-0.1), dict(prompts=("sparkles",)),
                                 dict(sam_mode="sometimes"), dict(max_steps=1)])
def test_config_validation(bad):
    with pytest.raises(ConfigError):
        CaRConfig(**bad)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="Unknown preset"):
        preset("everything")


def test_background_word_equal_to_a_query_is_dropped():
    warnings: list[str] = []
    bg = effective_background(CaRConfig(), parse_concepts("Sky , dog | building"), warnings)
    assert "sky" not in bg and "building" not in bg and "grass" in bg and len(bg) == 21
    assert warnings and "sky" in warnings[0]


RELEASED_VALUES = dict(gray_correct_luminance=False, refine_box_edge_quirk=True, drop_asked_background=False,
                       crf_colour="released", logit_scale=None, pos_embed_fp16=True, rectangle_on_bbox=False,
                       crf_label_quirk=True, reuse_empty_proposals=True, max_steps=None,
                       proposal_long_side=None, work_long_side=None, stuff_prompts=None)


@pytest.mark.parametrize("name", list(PRESETS))
def test_released_modifier_turns_every_switch(name):
    plain = preset(name)
    released = preset(name, released=True)
    assert not plain.is_released and released.is_released
    for field_name, value in RELEASED_VALUES.items():
        assert getattr(released, field_name) == value, field_name
    # Thresholds and prompts of the preset are untouched.
    assert (released.eta, released.theta, released.lam, released.prompts) == \
        (plain.eta, plain.theta, plain.lam, plain.prompts)
    assert plain.released() == released
    if name == "referring":
        assert released.templates == ("a clean origami {}.",) and not released.double_softmax
    else:
        assert released.templates == plain.templates and released.double_softmax


def test_released_classmethod_and_overrides():
    assert CaRConfig.released() == preset("objects", released=True)
    assert CaRConfig.released("scene").preset == "scene"
    # Explicit overrides win over the released values.
    assert preset("objects", released=True, work_long_side=512).work_long_side == 512
    assert CaRConfig.released(theta=0.1).theta == 0.1


@pytest.mark.parametrize("bad", [dict(crf_colour="lab"), dict(precision="int8"), dict(logit_scale=0.0),
                                 dict(work_long_side=8), dict(proposal_long_side=0)])
def test_new_switch_validation(bad):
    with pytest.raises(ConfigError):
        CaRConfig(**bad)


def test_released_keeps_background_words_the_user_asked_for():
    warnings: list[str] = []
    bg = effective_background(CaRConfig.released(), parse_concepts("sky, dog"), warnings)
    assert "sky" in bg and len(bg) == 23 and not warnings
