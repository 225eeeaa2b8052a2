"""The "dream" lm-eval backend on a tiny checkpoint in Dream's published layout (no remote code)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from lm_eval.api.instance import Instance

from evo_eval.adapters.dream import DreamAdapter
from evo_eval.cards import get_card
from evo_eval.errors import CheckpointError
from evo_eval.models.dream import TINY_SHAPE, DreamModel


def tiny_card():
    return replace(get_card("dream-v0-7b"), name="dream-tiny", shape=dict(TINY_SHAPE, architecture="DreamModel"))


@pytest.fixture(scope="module")
def lm(tiny_checkpoint):
    return DreamAdapter(pretrained=str(tiny_checkpoint("dream")), card=tiny_card(), device="cpu", gen_length="8",
                        mc_num=8, batch=4)


def test_registered_and_loads_the_published_layout(lm, tiny_checkpoint):
    from lm_eval.api.registry import get_model

    assert get_model("dream") is DreamAdapter and isinstance(lm.model, DreamModel)
    config = json.loads((tiny_checkpoint("dream") / "config.json").read_text())
    assert config["model_type"] == "Dream" and config["architectures"] == ["DreamModel"] and "auto_map" in config
    settings = lm.decoding_settings()
    assert settings["sampler"] == "dream" and settings["likelihood"] == "dream_mc"
    assert settings["sampler_config"]["alg"] == "entropy" and settings["likelihood_config"]["append_eos"]


def test_bos_starts_every_context_as_add_bos_token_does(lm):
    bos = lm.tokenizer.bos_token_id
    context, continuation = lm._encode_pair("Question: two plus two?\nAnswer:", " four")
    assert context[0] == bos and context[1:] == lm.tokenizer.encode("Question: two plus two?\nAnswer:",
                                                                     add_special_tokens=False)
    assert lm.tok_encode("hello", add_special_tokens=True)[0] == bos and lm.tok_encode("hello")[0] != bos


def test_generates_the_canvas_and_scores(lm):
    request = Instance("generate_until", {}, ("Question: what is 3 + 4?\nAnswer:", {"until": ["Question:"],
                                                                                  "max_gen_toks": 4}), 0, ("gsm8k", 0, 1))
    (text,) = lm.generate_until([request])
    record = lm.records[-1]
    assert isinstance(text, str) and record.nfe == 8 and record.extra["canvas"] == 8  # the card's canvas, not 4
    scored = Instance("loglikelihood", {}, ("The sky is", " blue"), 0, ("arc_challenge", 0, 1))
    (ll, greedy), = lm.loglikelihood([scored])
    assert ll < 0 and greedy is False and lm.records[-1].nfe == 8 and lm.records[-1].method == "dream_mc"


def test_a_checkpoint_of_another_shape_is_one_clear_error(tiny_checkpoint):
    card = replace(tiny_card(), shape=dict(TINY_SHAPE, architecture="DreamModel", num_hidden_layers=28))
    with pytest.raises(CheckpointError, match="num_hidden_layers 2 \\(card: 28\\)"):
        DreamAdapter(pretrained=str(tiny_checkpoint("dream")), card=card, device="cpu")
    with pytest.raises(CheckpointError, match="cannot read a Dream config"):
        DreamAdapter(pretrained="/nonexistent/dream", card=tiny_card(), device="cpu")
