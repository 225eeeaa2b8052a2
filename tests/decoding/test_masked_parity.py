"""LLaDA's sampler token-equal to the authors' code on a real tiny network, in float32 and bfloat16.

The references below re-implement, from reading them, ML-GSAI/LLaDA ``generate.py`` (the paper's
decoding) and NVlabs/Fast-dLLM ``llada/generate.py`` (caches, threshold): full-canvas logits in the
network's dtype, the chained ``confidence_eos_eot_inf`` assignment (at T = 0 the "noisy" logits are
the logits themselves), softmax in the logits' dtype (Fast-dLLM: float64), and ``topk`` over the
whole window the reference passes (its tie order).
"""

from __future__ import annotations

import pytest
import torch

from evo_eval.decoding import get_sampler
from evo_eval.decoding.base import make_generator, truncate_at_eos
from evo_eval.models.llada import TINY_SHAPE, random_model

MASK = TINY_SHAPE["mask_token_id"]
NEG = float("-inf")


def published_logits(model, x: torch.Tensor) -> torch.Tensor:
    """``model(x).logits`` as the published network returns them: in its own dtype (bf16 weights, bf16 logits)."""
    return model(x).logits.to(model.dtype)


def reference_generate(model, prompt, *, steps, gen_length, block_length, cfg_scale=0.0, eos=None, eot=None,
                       logits_eos_inf=False, confidence_eos_eot_inf=False):
    """ML-GSAI/LLaDA generate.py at temperature 0, low-confidence remasking, batch 1."""
    p = prompt.numel()
    x = torch.full((1, p + gen_length), MASK)
    x[0, :p] = prompt
    per_block = steps // (gen_length // block_length)
    for b in range(gen_length // block_length):
        counts = [block_length // per_block + (1 if j < block_length % per_block else 0) for j in range(per_block)]
        for k in counts:
            mask_index = x == MASK
            logits = published_logits(model, x)
            if cfg_scale > 0:
                un = x.clone()
                un[0, :p] = MASK
                un_logits = published_logits(model, un)
                logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            if logits_eos_inf:
                logits[:, :, eos] = NEG
            noisy = logits  # add_gumbel_noise at temperature 0 returns the tensor itself
            x0 = noisy.argmax(-1)
            if confidence_eos_eot_inf:  # `noisy[..., EOS] = logits[..., EoT] = -inf`, left target first
                noisy[:, :, eos] = NEG
                logits[:, :, eot] = NEG
            x0_p = torch.softmax(logits, dim=-1).gather(-1, x0[..., None])[..., 0]
            x0_p[:, p + (b + 1) * block_length:] = NEG
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, NEG)
            chosen = torch.zeros_like(mask_index)
            chosen[0, torch.topk(confidence[0], k).indices] = True
            x[chosen] = x0[chosen]
    return x[0, p:]


def fast_dllm_generate(model, prompt, *, gen_length, block_length, threshold):
    """NVlabs/Fast-dLLM ``generate`` with a threshold: float64 confidence, topk over the canvas,
    the most confident always, the rest only at or above the threshold."""
    p = prompt.numel()
    x = torch.full((1, p + gen_length), MASK)
    x[0, :p] = prompt
    for b in range(gen_length // block_length):
        s, e = p + b * block_length, p + (b + 1) * block_length
        while bool((x[0, s:e] == MASK).any()):
            mask_index = x == MASK
            logits = published_logits(model, x)
            mask_index[:, e:] = False
            x0 = logits.argmax(-1)
            x0_p = torch.softmax(logits.to(torch.float64), -1).gather(-1, x0[..., None])[..., 0]
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, NEG)
            n = int(mask_index.sum())
            index = torch.topk(confidence[0], n).indices
            chosen = torch.zeros_like(mask_index)
            chosen[0, index[0]] = True
            for i in index[1:]:
                chosen[0, i] = bool(confidence[0, i] >= threshold)
            x[chosen] = x0[chosen]
    return x[0, p:]


@pytest.fixture(scope="module")
def sampler():
    return get_sampler("llada")


def tiny(dtype):
    return random_model(TINY_SHAPE, dtype=dtype, device="cpu", seed=9)


def prompts(n=4, length=6):
    gen = make_generator(4)
    return [torch.randint(0, 500, (length,), generator=gen) for _ in range(n)]


def frequent_tokens(model, sampler):
    """The two ids this network predicts most often: stand-ins for EOS and EoT that actually occur."""
    seen = torch.cat([sampler.sample(model, q, sampler.Config(gen_length=16, steps=16, eos_token_id=None)).tokens
                      for q in prompts()])
    counts = torch.bincount(seen, minlength=TINY_SHAPE["vocab_size"])
    top = counts.topk(2).indices.tolist()
    return top[0], top[1]


DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_confidence_eos_eot_inf_at_temperature_zero_equals_the_reference(sampler, dtype):
    """Item 1: at T = 0 the EOS half of the chained assignment writes into the logits themselves."""
    model = tiny(dtype)
    eos, eot = frequent_tokens(model, sampler)
    for prompt in prompts():
        expected = reference_generate(model, prompt, steps=16, gen_length=16, block_length=8, eos=eos, eot=eot,
                                      confidence_eos_eot_inf=True)
        out = sampler.sample(model, prompt, sampler.Config(gen_length=16, steps=16, block_length=8, eos_token_id=eos,
                                                           eot_token_id=eot, confidence_eos_eot_inf=True))
        assert out.tokens.tolist() == truncate_at_eos(expected, eos).tolist()


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("settings", [dict(steps=16, gen_length=16, block_length=16),
                                      dict(steps=8, gen_length=16, block_length=4),
                                      dict(steps=12, gen_length=12, block_length=4, cfg_scale=0.5),
                                      dict(steps=8, gen_length=8, block_length=8, logits_eos_inf=True)],
                         ids=["one-block", "semi-ar", "cfg", "eos-inf"])
def test_softmax_in_the_logits_dtype_and_whole_sequence_topk_equal_the_reference(sampler, dtype, settings):
    """Items 3 and 4: the confidence is the softmax in the network's dtype, ties broken by topk over
    the whole sequence; in bf16 ties are frequent, so this is where both show."""
    model = tiny(dtype)
    eos = TINY_SHAPE["eos_token_id"]
    for prompt in prompts():
        expected = reference_generate(model, prompt, eos=eos, **settings)
        out = sampler.sample(model, prompt, sampler.Config(eos_token_id=eos, **settings))
        assert out.tokens.tolist() == truncate_at_eos(expected, eos).tolist()


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_threshold_decoding_equals_fast_dllm_in_float64(sampler, dtype):
    model = tiny(dtype)
    for prompt in prompts():
        expected = fast_dllm_generate(model, prompt, gen_length=16, block_length=8, threshold=0.02)
        config = sampler.Config(gen_length=16, block_length=8, threshold=0.02, confidence_precision="float64",
                                eos_token_id=None)
        assert sampler.sample(model, prompt, config).tokens.tolist() == expected.tolist()


def test_confidence_precision_is_a_setting_with_the_authors_defaults(sampler):
    assert sampler.Config().confidence_precision == "logits"  # ML-GSAI/LLaDA: softmax in the logits' dtype
    assert sampler.variants["cached"]["confidence_precision"] == "float64"  # Fast-dLLM
    with pytest.raises(ValueError, match="confidence_precision 'half' is not one of"):
        sampler.Config(confidence_precision="half")


def test_the_whole_canvas_is_decoded_and_returned_as_eval_llada_does(sampler):
    """Item 2: the answer is the whole gen_length canvas (eval_llada.py cuts only at stop strings),
    not lm-eval's max_gen_toks; answer_length=max_new_tokens is the matched-protocol option."""
    model = tiny(torch.float32)
    prompt = prompts(1)[0]
    full = sampler.sample(model, prompt, sampler.Config(max_new_tokens=4, gen_length=16, steps=16, block_length=4,
                                                        eos_token_id=None))
    expected = reference_generate(model, prompt, steps=16, gen_length=16, block_length=4)
    assert full.tokens.tolist() == expected.tolist() and full.stats.nfe == 16
    capped = sampler.sample(model, prompt, sampler.Config(max_new_tokens=4, gen_length=16, steps=16, block_length=4,
                                                          eos_token_id=None, answer_length="max_new_tokens"))
    assert capped.tokens.tolist() == expected[:4].tolist() and capped.stats.nfe == 4
    with pytest.raises(ValueError, match="answer_length 'all' is not one of"):
        sampler.Config(answer_length="all")
