"""The "bd3lm" lm-eval backend on a tiny checkpoint in the published layout, with real benchmark requests."""

from __future__ import annotations

import json

import pytest
from lm_eval.api.instance import Instance

from evo_eval.adapters.bd3lm import BD3LMAdapter
from evo_eval.errors import CheckpointError
from evo_eval.models import bd3lm


@pytest.fixture(scope="module")
def tiny_dir(tiny_checkpoint):
    return tiny_checkpoint("bd3lm", seed=5)


@pytest.fixture(scope="module")
def lm(tiny_dir):
    return BD3LMAdapter(pretrained=str(tiny_dir), card="bd3lm-7b", device="cpu", mc_num="6", batch=3)


def test_registered_and_sized_to_whole_blocks(lm):
    from lm_eval.api.registry import get_model

    assert get_model("bd3lm") is BD3LMAdapter
    assert isinstance(lm.model, bd3lm.BD3LM) and lm.model.block_size == 4  # the checkpoint's, not the card's 16
    assert lm.max_length == 4096 - 4 + 1  # prompt + max_gen_toks rounded up to blocks stays in context
    settings = lm.decoding_settings()
    assert settings["sampler"] == "bd3lm" and settings["likelihood"] == "bd3lm_nelbo"
    assert settings["sampler_config"]["first_hitting"] and settings["sampler_config"]["nucleus_p"] == 0.9
    assert settings["likelihood_config"]["mc_num"] == 6 and settings["likelihood_config"]["t_max"] == 1.0


def test_loglikelihood_on_real_piqa_requests(lm, benchdata):
    line = (benchdata / "piqa" / "dev.jsonl").read_text().splitlines()[0]
    doc = json.loads(line)
    context = f"Question: {doc['goal']}\nAnswer:"
    requests = [Instance("loglikelihood", doc, (context, " " + doc[key]), i, ("piqa", 0, 1))
                for i, key in enumerate(("sol1", "sol2"))]
    first, again = lm.loglikelihood(requests), lm.loglikelihood(requests)
    assert first == again and all(ll < 0 for ll, _ in first)
    assert all(r.method == "bd3lm_nelbo" and r.task == "piqa" for r in lm.records[-2:])


def test_generate_until_on_a_real_gsm8k_question(lm, benchdata):
    doc = json.loads((benchdata / "gsm8k" / "test.jsonl").read_text().splitlines()[1])
    context = f"Question: {doc['question']}\nAnswer:"
    request = Instance("generate_until", doc, (context, {"until": ["Question:"], "max_gen_toks": 10}), 0,
                       ("gsm8k", 1, 1))
    (text,) = lm.generate_until([request])
    assert isinstance(text, str) and "Question:" not in text
    record = lm.records[-1]
    assert record.new_tokens <= 10 and record.extra["block_size"] == 4 and record.extra["kv_cache"]
    # one forward per revealed token, plus the prefill and one store per finished block but the last
    assert record.nfe <= 1 + (10 + 3) + 3


def test_an_mdlm_checkpoint_is_not_a_bd3lm(tiny_checkpoint):
    other = tiny_checkpoint("mdlm")
    with pytest.raises(CheckpointError, match="holds a 'mdlm' checkpoint, not BD3-LM") as err:
        BD3LMAdapter(pretrained=str(other), card="bd3lm-7b", device="cpu")
    assert "\n" not in str(err.value)
