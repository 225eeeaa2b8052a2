"""The "llada" lm-eval backend on a tiny checkpoint in the published layout, with real benchmark requests."""

from __future__ import annotations

import json

import pytest
import torch
from lm_eval.api.instance import Instance

from evo_eval.adapters.llada import LLaDAAdapter
from evo_eval.errors import CheckpointError
from evo_eval.models.llada import LLaDAModelLM
from evo_eval.tiny import tiny_card


@pytest.fixture(scope="module")
def lm(tiny_llada_dir):
    # model_args as lm-eval hands them over (strings and numbers); a short canvas keeps the CPU test fast.
    return LLaDAAdapter(pretrained=str(tiny_llada_dir), card=tiny_card("llada"), device="cpu", gen_length="16", steps=16,
                        block_length=8, mc_num=8, batch=4)


def _arc_requests(benchdata) -> list[Instance]:
    doc = json.loads((benchdata / "arc_challenge" / "ARC-Challenge-Test.jsonl").read_text().splitlines()[0])
    context = f"Question: {doc['question']['stem']}\nAnswer:"
    return [Instance("loglikelihood", doc, (context, " " + c["text"]), i, ("arc_challenge", 0, 1))
            for i, c in enumerate(doc["question"]["choices"])]


def test_registered_with_lm_eval_beside_its_own_backends():
    from lm_eval.api.registry import get_model

    assert get_model("llada") is LLaDAAdapter
    assert get_model("hf").__name__ == "HFLM"


def test_loads_the_checkpoint_and_routes_settings(lm):
    assert isinstance(lm.model, LLaDAModelLM) and lm.max_length == 2048
    settings = lm.decoding_settings()
    assert settings["sampler"] == "llada" and settings["likelihood"] == "llada_mc_elbo"
    assert settings["sampler_config"]["gen_length"] == 16 and settings["sampler_config"]["temperature"] == 0.0
    assert settings["likelihood_config"]["mc_num"] == 8 and settings["likelihood_config"]["cfg"] == 0.0
    assert settings["sampler_config"]["eos_token_id"] == lm.tokenizer.eos_token_id


def test_loglikelihood_on_real_arc_requests(lm, benchdata):
    requests = _arc_requests(benchdata)
    first = lm.loglikelihood(requests)
    again = lm.loglikelihood(requests)
    assert len(first) == 4 and first == again  # seeded per request, not per call order
    assert all(torch.isfinite(torch.tensor(ll)) and ll < 0 for ll, _ in first)
    records = lm.records[-4:]
    assert all(r.method == "llada_mc_elbo" and r.task == "arc_challenge" and r.nfe == 8 for r in records)


def test_generate_until_on_a_real_gsm8k_question(lm, benchdata):
    doc = json.loads((benchdata / "gsm8k" / "test.jsonl").read_text().splitlines()[0])
    context = f"Question: {doc['question']}\nAnswer:"
    request = Instance("generate_until", doc, (context, {"until": ["Question:"], "max_gen_toks": 8}), 0,
                       ("gsm8k", 0, 1))
    (text,) = lm.generate_until([request])
    assert isinstance(text, str) and "Question:" not in text
    record = lm.records[-1]
    # Canvas 16 in blocks of 8, one token per step: as in eval_llada.py the whole canvas is decoded and
    # returned (max_gen_toks 8 does not cap it; no stop string or EOS comes up on these random weights).
    assert record.nfe == 16 and record.new_tokens == 16 and record.extra["blocks_decoded"] == 2


def test_card_settings_per_benchmark(tiny_llada_dir):
    lm = LLaDAAdapter(pretrained=str(tiny_llada_dir), card=tiny_card("llada", stage="instruct"), device="cpu")
    config = lm.with_settings(benchmark="mmlu").sampler_config_for({"max_gen_toks": 256, "until": ["\n"]})
    assert (config.gen_length, config.steps, config.block_length) == (3, 3, 3) and config.max_new_tokens == 256
    config = lm.with_settings(benchmark="gsm8k").sampler_config_for({"max_gen_toks": 256})
    assert config.confidence_eos_eot_inf and config.eot_token_id == 126348 and config.gen_length == 512


def test_checkpoint_problems_are_one_line_errors(tiny_llada_dir):
    with pytest.raises(CheckpointError, match="has n_layers=2 but card llada-8b has n_layers=32"):
        LLaDAAdapter(pretrained=str(tiny_llada_dir), card="llada-8b", device="cpu")
    with pytest.raises(CheckpointError, match="has no public checkpoint"):
        LLaDAAdapter(card=tiny_card("llada"), device="cpu")
