"""One decoding contract for every family run through the adapter base, as lm-eval's HF backend has
it: ``do_sample: false`` (what lm-eval sends when a task names no temperature) decodes greedily, and a
stop string that is a special token ends the answer."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.utils import normalize_gen_kwargs

from evo_eval.adapters import adapter_class
from evo_eval.families import FAMILIES
from evo_eval.tiny import build_tiny_family

ADAPTERS = {"evo": "EvoAdapter", "llada": "LLaDAAdapter", "mdlm": "MDLMAdapter", "bd3lm": "BD3LMAdapter",
            "ard": "ARDAdapter", "dream": "DreamAdapter", "fast_dllm_v2": "FastDLLMv2Adapter"}
PROMPT = "Question: 2 + 3?\nAnswer:"


def _request(gen_kwargs):
    return Instance(request_type="generate_until", doc={}, arguments=(PROMPT, gen_kwargs), idx=0,
                    metadata=("contract", 0, 1))


@pytest.fixture(scope="module")
def tiny_family(tmp_path_factory, tokenizer_dir):
    built = {}

    def get(family):
        if family not in built:
            built[family] = build_tiny_family(family, tmp_path_factory.mktemp(f"contract-{family}"), tokenizer_dir)
        return built[family]

    return get


def _adapter(family, tiny_family, **settings):
    card, checkpoint = tiny_family(family)
    return adapter_class(family)(pretrained=str(checkpoint), card=str(card), device="cpu", max_gen_toks=6, **settings)


def test_every_family_is_covered():
    assert {f.name for f in FAMILIES.values() if f.tiny_build} == set(ADAPTERS)


@pytest.mark.parametrize("family", sorted(ADAPTERS))
def test_do_sample_false_decodes_greedily(family, tiny_family):
    probe = _adapter(family, tiny_family)
    known = {f.name for f in fields(probe.sampler_cls.Config)}
    if "temperature" not in known:
        # ARD draws no tokens (its answer is rounded latents): nothing to turn off, and nothing changes.
        assert "do_sample" not in known
        config = probe.sampler_config_for(normalize_gen_kwargs({"until": ["\n"], "do_sample": False}))
        assert config == probe.sampler_config_for(normalize_gen_kwargs({"until": ["\n"], "do_sample": True,
                                                                        "temperature": 0.5}))
        return
    sampling = _adapter(family, tiny_family, temperature=0.9)  # the card or model_args say: sample
    greedy = _adapter(family, tiny_family, temperature=0.0)
    for gen_kwargs in ({"until": ["\n\n"], "do_sample": False}, {"until": ["\n\n"]}):  # the latter: lm-eval's default
        assert sampling.sampler_config_for(normalize_gen_kwargs(gen_kwargs)).temperature == 0.0
        assert sampling.generate_until([_request(gen_kwargs)]) == greedy.generate_until([_request(gen_kwargs)])
    asked = sampling.sampler_config_for(normalize_gen_kwargs({"until": ["\n\n"], "do_sample": True, "temperature": 0.6}))
    assert asked.temperature == 0.6  # a task that asks for sampling still gets it


@pytest.mark.parametrize("family", ["evo", "llada"])
def test_a_special_token_stop_string_ends_the_answer(family, tiny_family):
    lm = _adapter(family, tiny_family)
    special = lm.tokenizer.pad_token or lm.tokenizer.unk_token
    special_id = lm.tokenizer.convert_tokens_to_ids(special)
    assert special_id != lm.eot_token_id and special in lm.tokenizer.all_special_tokens
    word = lm.tok_encode(" five")
    tokens = torch.tensor(word + [special_id] + lm.tok_encode(" six"))
    assert lm.answer_text(tokens, [special]) == lm.tok_decode(word)
    assert lm.answer_text(tokens, ["\n"]) == lm.tok_decode(tokens.tolist())  # specials skipped, nothing cut
    stop = lm._stop_fn([special])
    assert stop(tokens) and not stop(torch.tensor(word))
