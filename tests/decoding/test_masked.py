"""LLaDA's sampler on a deterministic toy denoiser: schedule, block order, NFE, early exits, Fast-dLLM options."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from evo_eval.decoding import get_sampler
from evo_eval.decoding.base import make_generator
from evo_eval.decoding.masked import Canvas, gumbel_argmax
from evo_eval.models.llada import TINY_SHAPE, random_model

MASK, VOCAB = 99, 100
PROMPT = torch.tensor([5, 6, 7, 8])


class Toy(torch.nn.Module):
    """Logits depend on the absolute position only: position i predicts ``tokens[i]`` with probability
    ``conf[i]`` (the rest spread evenly), so every confidence is known in advance. Records each call."""

    def __init__(self, tokens: list[int], conf: list[float], uncond_tokens: list[int] | None = None):
        super().__init__()
        self.config = SimpleNamespace(mask_token_id=MASK, max_sequence_length=None)
        self.table = self._table(tokens, conf)
        self.uncond = self._table(uncond_tokens, conf) if uncond_tokens else None
        self.calls: list[tuple[torch.Tensor, int]] = []

    @staticmethod
    def _table(tokens, conf):
        table = torch.zeros(len(tokens), VOCAB)
        for i, (t, p) in enumerate(zip(tokens, conf)):
            table[i, t] = math.log(p * (VOCAB - 1) / (1 - p))  # softmax prob of t is exactly p
        return table

    def new_cache(self, length: int, batch: int = 1):
        return object()

    def denoise(self, ids, rows=None, *, cache=None, start=0):
        self.calls.append((ids.clone(), start))
        positions = torch.arange(start, start + ids.shape[1])
        out = []
        for row in ids:  # a row whose prompt is masked is the CFG's unconditional row
            table = self.uncond if self.uncond is not None and bool((row[:4] == MASK).all()) else self.table
            out.append(table[positions])
        logits = torch.stack(out)
        return logits if rows is None else logits[:, rows]


def toy(gen: int, conf: list[float], **kw) -> Toy:
    tokens = [0] * len(PROMPT) + [10 + i for i in range(gen)]
    return Toy(tokens, [0.5] * len(PROMPT) + conf, **kw)


@pytest.fixture(scope="module")
def sampler():
    return get_sampler("llada")


def masks_per_call(model: Toy) -> list[int]:
    return [int((ids[0, len(PROMPT):] == MASK).sum()) for ids, start in model.calls]


def test_one_token_per_step_and_the_least_confident_stay_masked(sampler):
    conf = [0.3, 0.9, 0.5, 0.7, 0.2, 0.8]
    model = toy(6, conf)
    out = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=6, gen_length=6, steps=6, eos_token_id=None))
    assert out.tokens.tolist() == [10, 11, 12, 13, 14, 15]
    assert masks_per_call(model) == [6, 5, 4, 3, 2, 1]  # exactly one committed per step
    order = sorted(range(6), key=lambda i: -conf[i])
    for step, (ids, _) in enumerate(model.calls):
        still_masked = {i for i in range(6) if ids[0, len(PROMPT) + i] == MASK}
        assert still_masked == set(order[step:])  # what stays masked is always the least confident
    assert out.stats.nfe == 6 and out.stats.active_token_steps == 6 * 10


def test_blocks_are_decoded_left_to_right(sampler):
    conf = [0.1 + 0.05 * i for i in range(12)]  # right is more confident: without blocks it would go first
    model = toy(12, conf)
    out = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=12, gen_length=12, steps=12, block_length=4,
                                                        eos_token_id=None))
    canvases = [ids[0, len(PROMPT):] for ids, _ in model.calls[1:]] + [out.tokens]
    decoded_at = {}
    for step, canvas in enumerate(canvases):  # canvas after step `step`
        for i in range(12):
            if canvas[i] != MASK and i not in decoded_at:
                decoded_at[i] = step
    for b in range(2):
        assert max(decoded_at[i] for i in range(4 * b, 4 * b + 4)) < min(decoded_at[i] for i in range(4 * b + 4, 4 * b + 8))
    assert [decoded_at[i] for i in range(4)] == [3, 2, 1, 0]  # inside a block: most confident first


def test_schedule_spreads_each_block_over_its_steps():
    assert Canvas(length=16, block=8, steps_per_block=3).schedule() == [3, 3, 2]
    config = get_sampler("llada").Config
    assert config(max_new_tokens=100, block_length=32).canvas() == Canvas(128, 32, 32)  # canvas from max_new_tokens
    for bad, message in [(dict(gen_length=10, block_length=4), "not a multiple of block_length"),
                         (dict(gen_length=16, block_length=4, steps=6), "not a multiple of the 4 blocks"),
                         (dict(gen_length=8, steps=16), "exceed its 8 tokens")]:
        with pytest.raises(ValueError, match=message):
            config(**bad).canvas()
    with pytest.raises(ValueError, match="remasking 'lowest' is not one of"):
        config(remasking="lowest")
    with pytest.raises(ValueError, match="dual_cache needs use_cache"):
        config(dual_cache=True)


def test_nfe_of_each_schedule(sampler):
    conf = [0.6] * 8
    cases = [  # (settings, nfe, positions computed)
        (dict(steps=8), 8, 8 * 12),
        (dict(steps=4), 4, 4 * 12),
        (dict(steps=8, cfg_scale=1.0), 16, 16 * 12),
        (dict(steps=8, block_length=4, use_cache=True), 8, (12 + 3 * 8) + (12 + 3 * 4)),  # window: block to the end
        (dict(steps=8, block_length=4, use_cache=True, dual_cache=True), 8, 2 * (12 + 3 * 4)),  # window: the block
    ]
    for settings, nfe, positions in cases:
        out = sampler.sample(toy(8, conf), PROMPT, sampler.Config(max_new_tokens=8, gen_length=8, eos_token_id=None,
                                                                   **settings))
        assert (settings, out.stats.nfe, out.stats.active_token_steps) == (settings, nfe, positions)
        assert out.tokens.tolist() == [10 + i for i in range(8)]


def test_threshold_commits_every_confident_token_and_at_least_one(sampler):
    conf = [0.99, 0.5, 0.95, 0.3, 0.97, 0.96, 0.92, 0.91]
    model = toy(8, conf)
    out = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=8, gen_length=8, block_length=4,
                                                        threshold=0.9, eos_token_id=None))
    # Block 1: {0, 2} pass, then 1, then 3 (one each, the most confident first). Block 2: all pass at once.
    assert masks_per_call(model) == [8, 6, 5, 4]
    assert out.stats.nfe == 4 and out.tokens.tolist() == [10 + i for i in range(8)]


def test_cached_windows_feed_what_fast_dllm_feeds(sampler):
    model = toy(8, [0.6] * 8)
    sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=8, gen_length=8, steps=4, block_length=4,
                                                  use_cache=True, dual_cache=True, eos_token_id=None))
    assert [(ids.shape[1], start) for ids, start in model.calls] == [(12, 0), (4, 4), (12, 0), (4, 8)]
    model = toy(8, [0.6] * 8)
    sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=8, gen_length=8, steps=4, block_length=4,
                                                  use_cache=True, eos_token_id=None))
    assert [(ids.shape[1], start) for ids, start in model.calls] == [(12, 0), (8, 4), (12, 0), (4, 8)]


def test_guidance_combines_conditional_and_unconditional(sampler):
    tokens = [0] * 4 + [10, 11]
    model = Toy(tokens, [0.5] * 4 + [0.6, 0.6], uncond_tokens=[0] * 4 + [20, 21])
    # cond puts 0.6 on 10, uncond puts 0.6 on 20: un + 2(cond - un) favours 10 (and pushes 20 down).
    out = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=2, gen_length=2, cfg_scale=1.0,
                                                        eos_token_id=None))
    assert out.tokens.tolist() == [10, 11] and out.stats.nfe == 4
    assert all(ids.shape[0] == 2 and bool((ids[1, :4] == MASK).all()) for ids, _ in model.calls)


def test_cap_eos_and_stop_end_early_and_exactly(sampler):
    model = toy(16, [0.6] * 16)
    out = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=6, gen_length=16, steps=16, block_length=4,
                                                        eos_token_id=None, answer_length="max_new_tokens"))
    assert out.tokens.tolist() == [10, 11, 12, 13, 14, 15] and out.stats.nfe == 8  # blocks 3 and 4 skipped
    out = sampler.sample(toy(16, [0.6] * 16), PROMPT, sampler.Config(max_new_tokens=16, gen_length=16, steps=16,
                                                                    block_length=4, eos_token_id=15))
    assert out.tokens.tolist() == [10, 11, 12, 13, 14] and out.stats.nfe == 8
    seen = []

    def stop(ids):
        seen.append(ids.tolist())
        return 18 in ids.tolist()

    out = sampler.sample(toy(16, [0.6] * 16), PROMPT, sampler.Config(max_new_tokens=16, gen_length=16, steps=16,
                                                                    block_length=4, eos_token_id=None), stop=stop)
    assert seen == [[10, 11, 12, 13], [10 + i for i in range(8)], [10 + i for i in range(12)]]
    assert out.tokens.tolist() == [10 + i for i in range(12)] and out.stats.nfe == 12


def test_instruct_eos_options(sampler):
    tokens, conf = [0] * 4 + [3, 11], [0.5] * 4 + [0.9, 0.6]
    out = sampler.sample(Toy(tokens, conf), PROMPT, sampler.Config(max_new_tokens=2, gen_length=2, eos_token_id=3,
                                                                   logits_eos_inf=True))
    assert 3 not in out.tokens.tolist() and out.tokens.numel() == 2
    model = Toy(tokens, conf)  # EoT (3) predicted at the most confident place: its confidence is zeroed
    sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=2, gen_length=2, eos_token_id=None, eot_token_id=3,
                                                 confidence_eos_eot_inf=True))
    assert model.calls[1][0][0, 4:].tolist() == [MASK, 11]
    # An EoT id the vocabulary does not have (a tiny stand-in model) cannot be predicted: nothing to suppress.
    out = sampler.sample(Toy(tokens, conf), PROMPT, sampler.Config(max_new_tokens=2, gen_length=2, eos_token_id=None,
                                                                   eot_token_id=10**6, confidence_eos_eot_inf=True))
    assert out.tokens.tolist() == [3, 11]


def _reference_generate(model, prompt, steps, gen_length, block_length, cfg_scale=0.0):
    """ML-GSAI/LLaDA generate.py at temperature 0, transcribed step by step: full-canvas logits,
    float64 softmax confidences, -inf right of the block and on decoded tokens, top-k per step."""
    p = prompt.numel()
    x = torch.full((1, p + gen_length), MASK_TINY)
    x[0, :p] = prompt
    blocks = gen_length // block_length
    per_block = steps // blocks
    for b in range(blocks):
        n = block_length
        counts = [n // per_block + (1 if j < n % per_block else 0) for j in range(per_block)]
        for k in counts:
            masked = x == MASK_TINY
            logits = model(x).logits
            if cfg_scale > 0:
                un = x.clone()
                un[0, :p] = MASK_TINY
                un_logits = model(un).logits
                logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            x0 = logits.argmax(-1)
            x0_p = torch.softmax(logits.double(), -1).gather(-1, x0[..., None])[..., 0]
            x0_p[:, p + (b + 1) * block_length:] = float("-inf")
            confidence = torch.where(masked, x0_p, torch.tensor(float("-inf"), dtype=torch.float64))
            x0 = torch.where(masked, x0, x)
            chosen = torch.zeros_like(masked)
            chosen[0, torch.topk(confidence[0], k).indices] = True
            x[chosen] = x0[chosen]
    return x[0, p:]


MASK_TINY = TINY_SHAPE["mask_token_id"]


@pytest.mark.parametrize("steps,gen_length,block_length,cfg", [(16, 16, 16, 0.0), (8, 16, 4, 0.0), (12, 12, 4, 0.5)])
def test_equals_the_authors_generate_on_a_real_network(sampler, steps, gen_length, block_length, cfg):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=9)
    prompt = torch.randint(0, 500, (7,), generator=make_generator(4))
    expected = _reference_generate(model, prompt, steps, gen_length, block_length, cfg)
    out = sampler.sample(model, prompt, sampler.Config(max_new_tokens=gen_length, gen_length=gen_length, steps=steps,
                                                        block_length=block_length, cfg_scale=cfg, eos_token_id=None))
    assert out.tokens.tolist() == expected.tolist()


def test_gumbel_max_samples_the_tempered_softmax():
    logits = torch.tensor([0.0, 1.0, 2.0]).repeat(20000, 1)
    for temperature in (1.0, 0.5):
        draws = gumbel_argmax(logits, temperature, make_generator(0))
        freq = torch.bincount(draws, minlength=3).double() / draws.numel()
        expected = torch.softmax(logits[0].double() / temperature, -1)
        assert torch.all((freq - expected).abs() < 4 * torch.sqrt(expected * (1 - expected) / draws.numel()))
    assert torch.equal(gumbel_argmax(logits[:2], 0.0, None), torch.tensor([2, 2]))


def test_real_network_is_seeded_and_fills_the_canvas(sampler):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=2)
    prompt = torch.randint(0, 500, (9,), generator=make_generator(0))
    config = sampler.Config(max_new_tokens=8, block_length=4, temperature=1.0, eos_token_id=None)
    a = sampler.sample(model, prompt, config, generator=make_generator(11)).tokens
    b = sampler.sample(model, prompt, config, generator=make_generator(11)).tokens
    c = sampler.sample(model, prompt, config, generator=make_generator(12)).tokens
    assert torch.equal(a, b) and not torch.equal(a, c) and a.numel() == 8 and 511 not in a.tolist()
    # The speed table's "cached" variant: canvas rounded up to its 32-token block, the answer capped at 8.
    fast = sampler.sample(model, prompt, sampler.Config(max_new_tokens=8, eos_token_id=None, answer_length="max_new_tokens",
                                                        **sampler.variants["cached"]))
    assert fast.tokens.numel() == 8 and 511 not in fast.tokens.tolist()
    assert fast.stats.extra["cache"] == "dual" and fast.stats.extra["canvas"] == 32


def test_long_prompts_are_left_truncated_to_fit_the_canvas(sampler):
    model = toy(8, [0.6] * 8)
    model.config.max_sequence_length = 10
    out = sampler.sample(model, torch.arange(20, 26), sampler.Config(max_new_tokens=8, gen_length=8, steps=8,
                                                                     eos_token_id=None))
    assert model.calls[0][0][0, :2].tolist() == [24, 25]
    assert out.stats.extra["prompt_truncated_from"] == 6 and out.stats.prompt_tokens == 2
