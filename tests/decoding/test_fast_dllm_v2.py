"""Fast-dLLM v2's sampler token-equal to its authors' ``batch_sample`` on a tiny model, in float32 and bf16.

The reference below re-implements, from reading it, NVlabs/Fast-dLLM ``v2/generation_functions.py``
``batch_sample`` (with the checkpoint's ``sample_with_top_p``) for one request: whole prompt blocks
prefilled, the next token after a full block by argmax, blocks of [MASK] decoded sub-block by
sub-block, every masked position over the threshold revealed plus the most confident one, the block
finished after a stop token and nothing after it. It keeps the KV cache as the authors do: whole
blocks enter it (``update_past_key_values=True``); a step inside a block reads it without storing its
own keys (here: a copy of the cache that is then dropped).
"""

from __future__ import annotations

import copy

import pytest
import torch

from evo_eval.decoding import get_sampler
from evo_eval.decoding.base import make_generator
from evo_eval.models.fast_dllm_v2 import TINY_SHAPE, random_model

MASK = TINY_SHAPE["mask_token_id"]


def _sample_with_top_p(logits, top_p, temperature, generator):
    if temperature == 0:
        p = torch.softmax(logits, dim=-1)
        return p.argmax(dim=-1), p
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, sorted_indices = torch.sort(probs, descending=True)
    remove = torch.cumsum(sorted_probs, dim=-1) > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = 0
    probs[torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, sorted_indices, remove)] = 0
    probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.multinomial(probs[0], num_samples=1, generator=generator).unsqueeze(0).squeeze(-1), probs


@torch.no_grad()
def reference_sample(model, prompt, max_new_tokens, *, block_size=32, small_block_size=8, threshold=0.9,
                     top_p=0.95, temperature=0.0, stop_token=None, generator=None):
    input_ids = prompt[None].clone()
    seq_len = input_ids.shape[1]
    num_blocks = max_new_tokens // block_size + seq_len // block_size
    past = model.new_cache()
    if seq_len > block_size:
        logits = model(input_ids[:, :seq_len // block_size * block_size], cache=past, block_size=block_size).logits
        if seq_len % block_size == 0:
            input_ids = torch.cat([input_ids, logits[:, -1:].argmax(dim=-1)], dim=1)
    finished = False
    for _ in range(seq_len // block_size, num_blocks):
        if finished:
            break
        pad = torch.full((1, block_size - input_ids.shape[1] % block_size), MASK, dtype=torch.long)
        x_t = torch.cat([input_ids, pad], dim=1)
        while True:
            mask_idx = x_t[:, -block_size:] == MASK
            if mask_idx.sum() == 0:
                if finished:
                    break
                logits = model(x_t[:, -block_size:], cache=past, block_size=block_size).logits
                x_t = torch.cat([x_t, logits[:, -1:].argmax(dim=-1)], dim=1)
                break
            for small in range(block_size // small_block_size):
                start = -block_size + small * small_block_size
                end = None if small * small_block_size + small_block_size == block_size else start + small_block_size
                while True:
                    mask_idx = x_t[:, -block_size:] == MASK
                    if mask_idx[:, start:end].sum() == 0:
                        break
                    logits = model(x_t[:, -block_size:], cache=copy.deepcopy(past), block_size=block_size).logits
                    logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)[:, start:end]
                    x_1, p_1t = _sample_with_top_p(logits, top_p, temperature, generator)
                    x1_p = torch.squeeze(torch.gather(p_1t, dim=-1, index=torch.unsqueeze(x_1, -1)), -1)
                    x1_p = torch.where(mask_idx[:, start:end], x1_p, -torch.inf)
                    unmask = x1_p > threshold
                    unmask[torch.arange(x_1.shape[0]), x1_p.argmax(dim=-1)] = True
                    unmask = unmask & mask_idx[:, start:end]
                    x_t[:, start:end][unmask] = x_1[unmask]
                    finished = finished or bool(((x_1 == stop_token) & unmask).any())
        input_ids = x_t
    answer = input_ids[0, seq_len:]
    hits = (answer == stop_token).nonzero()
    return answer[: int(hits[0])] if hits.numel() else answer


@pytest.fixture(scope="module")
def sampler():
    return get_sampler("fast_dllm_v2")


def sharp_model(dtype):
    """The tiny network with its head scaled up, so confidences reach the authors' thresholds (a random
    head spreads them over the vocabulary) and several tokens pass in one step."""
    model = random_model(TINY_SHAPE, dtype=dtype, device="cpu", seed=3)
    with torch.no_grad():
        model.lm_head.weight.mul_(50)
        model.lm_head.weight[MASK] = 0  # a trained model never says [MASK] (the authors' loop would not end)
    return model


CASES = [
    dict(prompt=6),  # eval.py's defaults: threshold 0.9, sub-blocks of 8, greedy
    dict(prompt=40, threshold=1.0),  # eval_script.sh's GSM8K setting: one token per step
    dict(prompt=64, threshold=0.5),  # a prompt on a block boundary: the prefill's next token opens block 2
    dict(prompt=45, threshold=0.7, small_block_size=4),
    dict(prompt=10, threshold=0.9, temperature=0.8, top_p=0.95),
    dict(prompt=33, threshold=0.6, temperature=1.0, top_p=0.5, small_block_size=16),
    dict(prompt=7, threshold=0.5, block_size=8, small_block_size=4),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_equals_the_authors_batch_sample_on_the_same_draws(sampler, dtype, case):
    case = dict(case)
    model = sharp_model(dtype)
    prompt = torch.randint(0, 500, (case.pop("prompt"),), generator=make_generator(7))
    said = reference_sample(model, prompt, 64, stop_token=-1, generator=make_generator(11), **case)
    assert said.numel() > 40
    for stop_token in (TINY_SHAPE["eos_token_id"], int(said[5])):  # a token the model never says, one it does
        expected = reference_sample(model, prompt, 64, stop_token=stop_token, generator=make_generator(11), **case)
        config = sampler.Config(gen_length=64, eos_token_id=stop_token, **case)
        out = sampler.sample(model, prompt, config, generator=make_generator(11))
        assert out.tokens.tolist() == expected.tolist()
        assert MASK not in out.tokens.tolist()
        if stop_token != TINY_SHAPE["eos_token_id"]:
            assert out.tokens.numel() <= 5 < said.numel()


def test_the_threshold_reveals_several_tokens_per_forward_and_the_stop_token_ends_the_answer(sampler):
    model = sharp_model(torch.float32)
    prompt = torch.randint(0, 500, (6,), generator=make_generator(7))
    one = sampler.sample(model, prompt, sampler.Config(gen_length=64, threshold=1.0, eos_token_id=None))
    # 26 masks in the first block, 31 in the second, one forward each, plus two cache extensions
    assert one.stats.nfe == 26 + 31 + 2 and one.tokens.numel() == 26 + 32 + 1
    many = sampler.sample(model, prompt, sampler.Config(gen_length=64, threshold=0.0, eos_token_id=None))
    assert many.stats.nfe == 4 + 4 + 2  # every masked token passes: one forward per sub-block
    third = int(one.tokens[2])
    cut = sampler.sample(model, prompt, sampler.Config(gen_length=64, threshold=1.0, eos_token_id=third))
    assert cut.tokens.tolist() == one.tokens[:one.tokens.tolist().index(third)].tolist()
    assert cut.stats.nfe == 26  # the block is finished, and nothing after it
    named = sampler.sample(model, prompt, sampler.Config(gen_length=64, threshold=1.0, eos_token_id=5, stop_token_id=third))
    assert named.tokens.tolist() == cut.tokens.tolist()  # the card's stop token (<|im_end|>) over the tokenizer's EOS
    off = sampler.sample(model, prompt, sampler.Config(gen_length=64, threshold=1.0, eos_token_id=None, stop_token_id=third))
    assert off.tokens.tolist() == one.tokens.tolist()  # no end of sequence at all (speed's synthetic runs)


def test_a_step_that_reveals_only_mask_takes_the_next_best_token(sampler):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=3)
    with torch.no_grad():
        model.lm_head.weight[MASK] = 1000 * model.lm_head.weight[:MASK].mean(0)  # [MASK] is every argmax
    prompt = torch.randint(0, 500, (6,), generator=make_generator(7))
    out = sampler.sample(model, prompt, sampler.Config(gen_length=32, threshold=0.9, eos_token_id=None))
    assert out.tokens.numel() == 27 and MASK not in out.tokens.tolist() and out.stats.nfe == 26 + 1


@pytest.mark.parametrize("prompt_len", [6, 32, 64, 70])
def test_plan_cost_bounds_the_forwards_a_request_makes(sampler, prompt_len):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=3)
    config = sampler.Config(gen_length=64, threshold=1.0, eos_token_id=None)
    prompt = torch.randint(0, 500, (prompt_len,), generator=make_generator(1))
    out = sampler.sample(model, prompt, config)
    work = sampler.work(config, prompt_len, TINY_SHAPE)
    # threshold 1 reveals one token per forward: the bound is met exactly when no stop token comes
    assert not work.exact and work.nfe == work.calls == out.stats.nfe
    assert work.positions == out.stats.active_token_steps


@pytest.mark.parametrize("prompt_len", [6, 32, 70])
@pytest.mark.parametrize("length", [1, 33])
def test_fixed_length_gives_the_speed_protocols_token_count(sampler, prompt_len, length):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=3)
    config = sampler.Config(gen_length=length, threshold=1.0, eos_token_id=None, fixed_length=True)
    prompt = torch.randint(0, 500, (prompt_len,), generator=make_generator(1))
    out = sampler.sample(model, prompt, config)
    assert out.tokens.numel() == length
    reference = sampler.sample(model, prompt, sampler.Config(gen_length=96, threshold=1.0, eos_token_id=None))
    assert out.tokens.tolist() == reference.tokens[:length].tolist()  # the same decoding, only its length differs
    work = sampler.work(config, prompt_len, TINY_SHAPE)
    assert work.nfe == out.stats.nfe and work.positions == out.stats.active_token_steps


def test_a_prompt_of_one_whole_block_is_read(sampler):
    """The authors' ``> block_size`` test leaves such a prompt out of the cache; here it is prefilled."""
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=3)
    config = sampler.Config(gen_length=32, threshold=1.0, eos_token_id=None)
    a = torch.randint(0, 500, (32,), generator=make_generator(1))
    b = a.clone()
    b[:16] = (b[:16] + 1) % 500
    assert sampler.sample(model, a, config).tokens.tolist() != sampler.sample(model, b, config).tokens.tolist()


def test_settings_are_checked(sampler):
    assert sampler.Config().block_size == 32 and sampler.Config().threshold == 0.9
    with pytest.raises(ValueError, match="must divide block_size"):
        sampler.Config(small_block_size=5)
    with pytest.raises(ValueError, match="top_p 0.0 must lie in"):
        sampler.Config(top_p=0.0)
