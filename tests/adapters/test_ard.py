"""The "ard" lm-eval backend on a tiny ARDiffusionLM checkpoint, with real benchmark requests."""

from __future__ import annotations

import gzip
import json
import math

import pytest
from lm_eval.api.instance import Instance

from evo_eval.adapters.ard import ARDAdapter
from evo_eval.errors import CheckpointError
from evo_eval.models.ard import ARDiffusionLM
from evo_eval.tiny import tiny_card


@pytest.fixture(scope="module")
def lm(tiny_ard_dir):
    return ARDAdapter(pretrained=str(tiny_ard_dir), card=tiny_card("ard"), device="cpu", mc_num=20, batch=20)


def test_registered_with_lm_eval():
    from lm_eval.api.registry import get_model

    assert get_model("ard") is ARDAdapter and get_model("hf").__name__ == "HFLM"


def test_settings_in_force_are_recorded(lm):
    assert isinstance(lm.model, ARDiffusionLM)
    settings = lm.decoding_settings()
    assert settings["sampler"] == "ard" and settings["likelihood"] == "ard_embedding_nelbo"
    assert settings["sampler_config"]["gen_timesteps"] == 20 and settings["sampler_config"]["clamp"] is True
    assert settings["likelihood_config"]["gen_timesteps"] == 20 and settings["likelihood_config"]["mc_num"] == 20


def test_loglikelihood_on_real_hellaswag_endings(lm, benchdata):
    with gzip.open(benchdata / "hellaswag" / "hellaswag_val_preprocessed.jsonl.gz", "rt") as f:
        doc = json.loads(f.readline())
    requests = [Instance("loglikelihood", doc, (doc["ctx"], " " + ending), i, ("hellaswag", 0, 1))
                for i, ending in enumerate(doc["endings"])]
    scores = lm.loglikelihood(requests)
    assert len(scores) == 4 and scores == lm.loglikelihood(requests)
    assert all(math.isfinite(ll) and ll < 0 and greedy is False for ll, greedy in scores)
    assert all(r.method == "ard_embedding_nelbo" and r.nfe == 21 and "stderr" in r.extra for r in lm.records[-4:])


def test_generate_until_on_a_real_gsm8k_question(lm, benchdata):
    doc = json.loads((benchdata / "gsm8k" / "test.jsonl").read_text().splitlines()[1])
    request = Instance("generate_until", doc, (f"Question: {doc['question']}\nAnswer:",
                                               {"until": ["Question:"], "max_gen_toks": 12}), 0, ("gsm8k", 1, 1))
    (text,) = lm.generate_until([request])
    assert isinstance(text, str) and "Question:" not in text
    record = lm.records[-1]
    assert record.nfe == 21 and record.extra["canvas"] == 12 and record.new_tokens <= 12


def test_wrong_card_is_a_one_line_error(tiny_ard_dir):
    with pytest.raises(CheckpointError, match="has n_layers=2 but card ard-7b has n_layers=32"):
        ARDAdapter(pretrained=str(tiny_ard_dir), card="ard-7b", device="cpu")
    with pytest.raises(CheckpointError, match="has no public checkpoint"):
        ARDAdapter(card="ard-7b", device="cpu")
