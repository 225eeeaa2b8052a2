"""The "mdlm" lm-eval backend on a tiny checkpoint in the published layout, with real benchmark requests."""

from __future__ import annotations

import json

import pytest
import torch
from lm_eval.api.instance import Instance

from evo_eval.adapters.mdlm import MDLMAdapter
from evo_eval.errors import CheckpointError
from evo_eval.models import mdlm
from evo_eval.tiny import save_published_layout


@pytest.fixture(scope="module")
def tiny_dir(tiny_checkpoint):
    return tiny_checkpoint("mdlm", seed=4)


@pytest.fixture(scope="module")
def lm(tiny_dir):
    # The paper-size card with the tiny checkpoint standing in (as --checkpoint does); model_args as
    # lm-eval hands them over, strings included.
    return MDLMAdapter(pretrained=str(tiny_dir), card="mdlm-7b", device="cpu", steps="8", mc_num=8, batch=4)


def arc_requests(benchdata) -> list[Instance]:
    doc = json.loads((benchdata / "arc_challenge" / "ARC-Challenge-Test.jsonl").read_text().splitlines()[0])
    context = f"Question: {doc['question']['stem']}\nAnswer:"
    return [Instance("loglikelihood", doc, (context, " " + c["text"]), i, ("arc_challenge", 0, 1))
            for i, c in enumerate(doc["question"]["choices"])]


def test_registered_with_lm_eval_beside_its_own_backends():
    from lm_eval.api.registry import get_model

    assert get_model("mdlm") is MDLMAdapter
    assert get_model("hf").__name__ == "HFLM"


def test_loads_the_checkpoint_and_routes_settings(lm):
    assert isinstance(lm.model, mdlm.MDLM) and lm.max_length == 4096
    assert lm.model.mask_token_id == lm.tokenizer.mask_token_id  # the checkpoint tokenizer's [MASK]
    settings = lm.decoding_settings()
    assert settings["sampler"] == "mdlm" and settings["likelihood"] == "mdlm_nelbo"
    assert settings["sampler_config"]["steps"] == 8 and settings["sampler_config"]["predictor"] == "ddpm_cache"
    assert settings["sampler_config"]["eos_token_id"] == lm.tokenizer.eos_token_id
    assert settings["likelihood_config"] == {"mc_num": 8, "batch": 4, "seed": 1234, "sampling_eps": 1e-3, "noise_eps": 1e-3}


def test_contexts_begin_with_bos_as_the_training_chunks_do(lm):
    bos = lm.tokenizer.bos_token_id
    context, continuation = lm._encode_pair("Question: 2 + 2?\nAnswer:", " 4")
    assert context[0] == bos and context.count(bos) == 1 and continuation[0] != bos
    assert lm.tok_encode("Answer:", add_special_tokens=True)[:1] == [bos]
    assert bos not in lm.tok_encode("Answer:")


def test_loglikelihood_on_real_arc_requests(lm, benchdata):
    requests = arc_requests(benchdata)
    first = lm.loglikelihood(requests)
    again = lm.loglikelihood(requests)
    assert len(first) == 4 and first == again  # seeded per request, not per call order
    assert all(torch.isfinite(torch.tensor(ll)) and ll < 0 for ll, _ in first)
    records = lm.records[-4:]
    assert all(r.method == "mdlm_nelbo" and r.task == "arc_challenge" and 1 < r.nfe <= 9 for r in records)
    assert all("stderr" in r.extra for r in records)


def test_generate_until_on_a_real_gsm8k_question(lm, benchdata):
    doc = json.loads((benchdata / "gsm8k" / "test.jsonl").read_text().splitlines()[0])
    context = f"Question: {doc['question']}\nAnswer:"
    request = Instance("generate_until", doc, (context, {"until": ["Question:"], "max_gen_toks": 12}), 0,
                       ("gsm8k", 0, 1))
    (text,) = lm.generate_until([request])
    assert isinstance(text, str) and "Question:" not in text
    record = lm.records[-1]
    assert record.extra["canvas"] == record.prompt_tokens + 12  # the canvas is max_gen_toks masks
    assert 1 <= record.nfe <= 8 + 1 and record.new_tokens <= 12


def test_checkpoints_that_do_not_fit_are_one_line_errors(tiny_dir, tmp_path, tokenizer_dir, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="model 'mdlm-7b' has no public checkpoint") as err:
        MDLMAdapter(card="mdlm-7b", device="cpu")
    errors = [err]
    other = tiny_checkpoint("bd3lm")
    with pytest.raises(CheckpointError, match="holds a 'bd3lm' checkpoint, not MDLM") as err:
        MDLMAdapter(pretrained=str(other), card="mdlm-7b", device="cpu")
    errors.append(err)
    small = tmp_path / "small-vocab"
    model = mdlm.random_model(dict(mdlm.TINY_SHAPE, vocab_size=300), dtype=torch.float32, device="cpu")
    save_published_layout(model, small)
    with pytest.raises(CheckpointError, match="tokenizer .* has .* ids but the checkpoint's vocabulary holds 300") as err:
        MDLMAdapter(pretrained=str(small), card="mdlm-7b", device="cpu", tokenizer=str(tokenizer_dir))
    errors.append(err)
    assert all("\n" not in str(e.value) for e in errors)
