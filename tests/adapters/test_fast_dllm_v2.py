"""The "fast_dllm_v2" lm-eval backend on a tiny checkpoint in Fast-dLLM v2's published layout (no remote code)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from lm_eval.api.instance import Instance

from evo_eval.adapters.fast_dllm_v2 import FastDLLMv2Adapter
from evo_eval.cards import get_card
from evo_eval.errors import CheckpointError, UserError
from evo_eval.models.fast_dllm_v2 import ARCHITECTURE, TINY_SHAPE, FastDLLMv2Model


def tiny_card():
    return replace(get_card("fast-dllm-v2-7b"), name="fast-dllm-v2-tiny", shape=dict(TINY_SHAPE, architecture=ARCHITECTURE))


@pytest.fixture(scope="module")
def lm(tiny_checkpoint):
    return FastDLLMv2Adapter(pretrained=str(tiny_checkpoint("fast_dllm_v2")), card=tiny_card(), device="cpu",
                             gen_length="32")


def test_registered_and_loads_the_published_layout(lm, tiny_checkpoint):
    from lm_eval.api.registry import get_model

    assert get_model("fast_dllm_v2") is FastDLLMv2Adapter and isinstance(lm.model, FastDLLMv2Model)
    config = json.loads((tiny_checkpoint("fast_dllm_v2") / "config.json").read_text())
    assert config["model_type"] == "Fast_dLLM_Qwen" and config["architectures"] == [ARCHITECTURE]
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling.Fast_dLLM_QwenForCausalLM" and config["bd_size"] == 32
    settings = lm.decoding_settings()
    assert settings["sampler"] == "fast_dllm_v2" and settings["likelihood"] == "fast_dllm_v2_first_token"
    assert settings["sampler_config"]["threshold"] == 0.9 and settings["sampler_config"]["small_block_size"] == 8
    assert lm.with_settings("gsm8k").sampler_config.threshold == 1.0  # eval_script.sh's GSM8K setting


def test_the_continuation_keeps_the_contexts_whitespace_as_the_authors_split_it(lm):
    context, continuation = lm._encode_pair("Answer:\n", "B")
    assert context == lm.tok_encode("Answer:\n", add_special_tokens=True)
    assert context + continuation == lm.tok_encode("Answer:\nB", add_special_tokens=True)


def test_generates_one_block_uncut_by_until_and_scores(lm):
    request = Instance("generate_until", {}, ("Question: what is 3 + 4?\nAnswer:", {"until": ["Question:"],
                                                                                  "max_gen_toks": 4}), 0, ("gsm8k", 0, 1))
    (text,) = lm.generate_until([request])
    record = lm.records[-1]
    tokens = lm.tokenizer.encode(text, add_special_tokens=False)
    assert record.new_tokens > 4 and record.nfe >= 2  # the card's gen_length, not max_gen_toks
    cutting = lm.with_settings(cut_at_until=True)
    ids = torch.tensor(lm.tok_encode(" one Question: two"))
    assert cutting.answer_text(ids, ["Question:"]) == " one " and lm.answer_text(ids, ["Question:"]) == " one Question: two"
    assert tokens  # the tiny model says something
    scored = Instance("loglikelihood", {}, ("The sky is", " blue sky"), 0, ("arc_challenge", 0, 1))
    (ll, greedy), = lm.loglikelihood([scored])
    assert ll < 0 and greedy is False and lm.records[-1].nfe == 1 and lm.records[-1].method == "fast_dllm_v2_first_token"
    with pytest.raises(UserError, match="no rolling"):
        lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("some text",), 0, ("wikitext", 0, 1))])


def test_a_checkpoint_of_another_shape_is_one_clear_error(tiny_checkpoint):
    card = replace(tiny_card(), shape=dict(TINY_SHAPE, architecture=ARCHITECTURE, bd_size=16))
    with pytest.raises(CheckpointError, match="bd_size 32 \\(card: 16\\)"):
        FastDLLMv2Adapter(pretrained=str(tiny_checkpoint("fast_dllm_v2")), card=card, device="cpu")
    with pytest.raises(CheckpointError, match="cannot read a Fast-dLLM v2 config"):
        FastDLLMv2Adapter(pretrained="/nonexistent/fdllm", card=tiny_card(), device="cpu")
    with pytest.raises(CheckpointError, match="not a Fast-dLLM v2 checkpoint"):
        FastDLLMv2Adapter(pretrained=str(tiny_checkpoint("dream")), card=tiny_card(), device="cpu")
