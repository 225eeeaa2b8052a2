import pytest

from evo_eval.cards import all_cards, get_card, load_card, paper_order
from evo_eval.errors import UnknownNameError, UserError


def test_fourteen_cards_seven_systems_two_stages():
    cards = {name: card for name, card in all_cards().items() if card.stand_in_for is None}
    assert len(cards) == 14
    systems = {}
    for card in cards.values():
        systems.setdefault(card.system, set()).add(card.stage)
    assert len(systems) == 7
    assert all(stages == {"base", "instruct"} for stages in systems.values())


def test_paper_column_order_is_table_one():
    assert paper_order() == ["evo", "bd3lm", "ard", "llada", "mdlm", "llama3", "qwen2.5"]


def test_public_checkpoints_and_user_checkpoints():
    assert get_card("llada-8b").checkpoint == "GSAI-ML/LLaDA-8B-Base"
    assert get_card("qwen2.5-7b-instruct").checkpoint == "Qwen/Qwen2.5-7B-Instruct"
    for name in ("evo-8b", "mdlm-7b", "bd3lm-7b", "ard-7b"):
        assert get_card(name).needs_checkpoint


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownNameError, match="did you mean llada-8b"):
        get_card("lada-8b")


def test_invalid_card_yaml_is_one_clear_error(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\nsystem: x\nstage: base\nfamily: hf\ncolumn: X\ndtype: bfloat16\nshape: {a: [1\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_card(bad)
    bad.write_text("name: broken\nsystem: x\nstage: mid\nfamily: hf\ncolumn: X\ndtype: bfloat16\nshape: {a: 1}\n")
    with pytest.raises(UserError, match="stage 'mid'"):
        load_card(bad)


def test_public_stand_ins_are_labelled_and_never_a_paper_column():
    stand_ins = {name: card for name, card in all_cards().items() if card.stand_in_for is not None}
    assert set(stand_ins) >= {"dream-v0-7b", "dream-v0-7b-instruct", "fast-dllm-v2-7b"}
    assert stand_ins["fast-dllm-v2-7b"].stand_in_for == "bd3lm" and stand_ins["fast-dllm-v2-7b"].stage == "instruct"
    for card in stand_ins.values():
        assert card.stand_in_for in paper_order() and card.system not in paper_order()
        assert "stand-in" in card.column and card.checkpoint and not card.needs_checkpoint
