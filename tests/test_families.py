"""The family registry: every table that names families derives from it, and a card's sampler is the one
both ``run`` (the adapter) and ``speed`` use."""

from __future__ import annotations

from dataclasses import replace

import pytest

from evo_eval import families
from evo_eval.cards import all_cards
from evo_eval.decoding import get_sampler, sampler_names
from evo_eval.errors import UnknownNameError
from evo_eval.families import FAMILIES, SAMPLERS, ModelModule, card_sampler, model_module, sampler_class
from evo_eval.speed.options import family_module, sampler_for


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_record_resolves_and_meets_the_model_contract(name):
    record = FAMILIES[name]
    module = model_module(name)
    assert isinstance(module, ModelModule), f"{record.model} lacks TINY_SHAPE or random_model"
    assert record.sampler in SAMPLERS
    if not record.is_hf:
        from evo_eval.adapters import adapter_class

        adapter = adapter_class(name)
        assert adapter.family == name
        assert families.scorer_class(name).method
    if record.tiny_build:
        assert families.load(record.tiny_build) and all(c in all_cards() for c in record.paper_cards)


def test_derived_tables_follow_the_registry():
    from lm_eval.api.registry import model_registry

    import evo_eval.adapters  # noqa: F401  (registers the placeholders)
    from evo_eval import cards

    assert sampler_names() == sorted(SAMPLERS)
    assert all(get_sampler(n).name == n for n in SAMPLERS)
    assert all(name in model_registry for name, f in FAMILIES.items() if not f.is_hf)
    assert cards.FAMILIES is FAMILIES
    with pytest.raises(UnknownNameError, match="unknown sampler 'nope'"):
        sampler_class("nope")


@pytest.mark.parametrize("name", sorted(c.name for c in all_cards().values() if not c.is_hf))
def test_run_and_speed_use_the_cards_sampler(name, tiny_checkpoint):
    """The adapter ``run`` builds and ``speed``'s sampler come from one function of the card, so they agree
    for every card, and follow a card that names another sampler."""
    from evo_eval.tiny import tiny_card

    card = all_cards()[name]
    assert sampler_for(card).name == card_sampler(card) == card.decoding["default"]["sampler"]
    assert family_module(card) is model_module(card.family)
    if card.family != "evo":
        return
    from evo_eval.adapters import adapter_class

    tiny = tiny_card("evo")
    lm = adapter_class("evo")(pretrained=str(tiny_checkpoint("evo")), card=tiny, device="cpu")
    assert lm.sampler_cls.name == sampler_for(tiny).name == "evo"
    # A card naming another sampler changes both: there is no second place that could disagree.
    other = replace(tiny, decoding={"default": {"sampler": "ar"}})
    lm = adapter_class("evo")(pretrained=str(tiny_checkpoint("evo")), card=other, device="cpu")
    assert lm.sampler_cls.name == sampler_for(other).name == "ar"


def test_a_card_names_one_known_sampler(tmp_path):
    from evo_eval.cards import load_card
    from evo_eval.errors import UserError

    head = "name: c\nsystem: x\nstage: base\nfamily: evo\ncolumn: X\ndtype: bfloat16\nshape: {a: 1}\n"
    path = tmp_path / "c.yaml"
    path.write_text(head + "decoding: {default: {sampler: nope}}\n")
    with pytest.raises(UserError, match="sampler 'nope' is not one of ar, ard, bd3lm"):
        load_card(path)
    path.write_text(head + "decoding: {tasks: {gsm8k: {sampler: ar}}}\n")
    with pytest.raises(UserError, match="sampler is set per card"):
        load_card(path)
