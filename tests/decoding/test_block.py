"""BD3-LM's sampler on a deterministic toy: blocks in order against a cache of finished blocks,
NFE exactly as first hitting / ancestral imply, lengths, seeds, stops; exactness of the cache on
the real DiT."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from evo_eval.decoding import get_sampler
from evo_eval.decoding.base import make_generator
from evo_eval.decoding.block import nucleus
from evo_eval.models.bd3lm import TINY_SHAPE, random_model

VOCAB, MASK, SIZE = 64, 63, 4
PROMPT = torch.tensor([5, 17, 2, 40, 9, 33])  # 6 tokens: one whole block, then half of the next


def favourite(position: torch.Tensor) -> torch.Tensor:
    return (position * 7 + 3) % (VOCAB - 1)


class ToyBlocks(torch.nn.Module):
    """Peaked at ``favourite(position)``; checks, at every call, that the cache before the block
    holds only finished tokens and that no call reaches past the block it denoises."""

    mask_token_id, block_size = MASK, SIZE

    def __init__(self, model_length: int = 64):
        super().__init__()
        self.config = SimpleNamespace(model_length=model_length, time_conditioning=False)
        self.calls: list[tuple[int, int, bool, torch.Tensor]] = []  # (start, length, logits?, ids)

    def new_cache(self, capacity: int):
        return {"ids": torch.full((capacity,), -1), "stored_upto": 0}

    def block_logits(self, ids, *, start=0, caches=None, out_start=0, logits=True):
        self.calls.append((start, ids.shape[1], logits, ids[0].clone()))
        if caches is not None:
            assert (caches["ids"][:start] >= 0).all() and (caches["ids"][:start] != MASK).all()
            assert start % SIZE == 0 and (ids.shape[1] == SIZE or start == 0)
            caches["ids"][start:start + ids.shape[1]] = ids[0]
        if not logits:
            return None
        positions = torch.arange(start + out_start, start + ids.shape[1])
        out = -3.0 * (torch.arange(VOCAB)[None] - favourite(positions)[:, None]).abs().float()
        out[:, MASK] = float("-inf")
        return out[None]


@pytest.fixture(scope="module")
def sampler():
    return get_sampler("bd3lm")


def test_blocks_left_to_right_against_finished_blocks(sampler):
    toy = ToyBlocks()
    out = sampler.sample(toy, PROMPT, sampler.Config(max_new_tokens=10, temperature=0.0), generator=make_generator(0))
    assert out.tokens.tolist() == favourite(torch.arange(6, 16)).tolist()
    starts = [start for start, *_ in toy.calls]
    assert starts == sorted(starts)  # never back to an earlier block
    for start, length, logits, ids in toy.calls:
        if logits:  # a denoising step: earlier blocks finished, this block only partly
            assert length == SIZE and (ids == MASK).any()
    stores = [(start, ids) for start, length, logits, ids in toy.calls if not logits]
    assert [s for s, _ in stores] == [0, 4, 8]  # prompt prefill, then each finished block but the last
    assert all((ids != MASK).all() for _, ids in stores)


def test_first_hitting_costs_one_forward_per_token_plus_stores(sampler):
    toy = ToyBlocks()
    out = sampler.sample(toy, PROMPT, sampler.Config(max_new_tokens=10), generator=make_generator(1))
    # prefill [0,4); block [4,8) has 2 masks (+ store); [8,12) 4 (+ store); [12,16) 4
    assert out.stats.nfe == len(toy.calls) == 1 + (2 + 1) + (4 + 1) + 4
    assert out.stats.active_token_steps == 4 + 4 * 2 + 4 + 4 * 4 + 4 + 4 * 4
    masks = [int((ids == MASK).sum()) for _, _, logits, ids in toy.calls if logits]
    assert masks == [2, 1, 4, 3, 2, 1, 4, 3, 2, 1]  # exactly one token revealed per step
    assert out.stats.extra["blocks"] == 3 and out.stats.extra["prefill_tokens"] == 4


def test_without_cache_every_step_recomputes_the_prefix(sampler):
    toy = ToyBlocks()
    out = sampler.sample(toy, PROMPT, sampler.Config(max_new_tokens=10, kv_cache=False), generator=make_generator(1))
    assert out.stats.nfe == 2 + 4 + 4
    assert out.stats.active_token_steps == 8 * 2 + 12 * 4 + 16 * 4
    assert all(start == 0 for start, *_ in toy.calls)


def test_ancestral_reveals_per_step_and_reuses_unchanged_predictions(sampler):
    toy = ToyBlocks()
    out = sampler.sample(toy, PROMPT, sampler.Config(max_new_tokens=10, first_hitting=False, steps=1),
                         generator=make_generator(2))
    assert out.stats.nfe == 1 + (1 + 1) + (1 + 1) + 1  # one step from t = 1 to s = 0 reveals a whole block
    toy = ToyBlocks()
    out = sampler.sample(toy, PROMPT, sampler.Config(max_new_tokens=10, first_hitting=False, steps=500),
                         generator=make_generator(2))
    steps = [c for c in toy.calls if c[2]]
    # T = 500 steps per block, but the network runs only before the (at most 4) steps that reveal
    assert len(steps) <= 2 + 4 + 4 and out.stats.nfe == len(toy.calls)
    assert all(int((a[3] == MASK).sum()) > int((b[3] == MASK).sum()) for a, b in zip(steps, steps[1:]) if a[0] == b[0])


def test_exactly_max_new_tokens_with_a_partial_last_block(sampler):
    toy = ToyBlocks()
    out = sampler.sample(toy, PROMPT, sampler.Config(max_new_tokens=9, eos_token_id=None), generator=make_generator(3))
    assert out.tokens.numel() == 9 and (out.tokens != MASK).all()
    last = [int((ids[:3] == MASK).sum()) for start, _, logits, ids in toy.calls if logits and start == 12]
    assert last[-1] == 1  # the last block stops once positions 12..14, those returned, are revealed
    assert 1 + 3 + 5 + 3 <= out.stats.nfe <= 1 + 3 + 5 + 4


def test_stop_is_checked_on_finished_blocks(sampler):
    seen = []

    def stop(committed):
        seen.append(committed.clone())
        return committed.numel() >= 6

    toy = ToyBlocks()
    out = sampler.sample(toy, PROMPT, sampler.Config(max_new_tokens=30, temperature=0.0), stop=stop,
                         generator=make_generator(4))
    assert [s.numel() for s in seen] == [2, 6] and all((s != MASK).all() for s in seen)
    assert out.tokens.tolist() == favourite(torch.arange(6, 12)).tolist() and out.stats.extra["stopped_early"]
    eos = int(favourite(torch.tensor(9)))
    out = sampler.sample(ToyBlocks(), PROMPT, sampler.Config(max_new_tokens=30, temperature=0.0, eos_token_id=eos),
                         generator=make_generator(4))
    assert out.tokens.tolist() == favourite(torch.arange(6, 9)).tolist()


def test_cache_is_exact_and_draws_are_seeded_on_the_dit(sampler):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=2)
    prompt = torch.tensor([3, 99, 12, 250, 7, 41, 8])
    config = dict(max_new_tokens=13, eos_token_id=None)
    cached = sampler.sample(model, prompt, sampler.Config(**config), generator=make_generator(5))
    again = sampler.sample(model, prompt, sampler.Config(**config), generator=make_generator(5))
    recomputed = sampler.sample(model, prompt, sampler.Config(**config, kv_cache=False), generator=make_generator(5))
    other = sampler.sample(model, prompt, sampler.Config(**config), generator=make_generator(6))
    assert cached.tokens.numel() == 13 and torch.equal(cached.tokens, again.tokens)
    assert torch.equal(cached.tokens, recomputed.tokens)  # the cache changes the cost, not the samples
    assert not torch.equal(cached.tokens, other.tokens)
    assert cached.stats.active_token_steps < recomputed.stats.active_token_steps


def test_nucleus_keeps_the_authors_mass():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)
    assert torch.allclose(nucleus(probs, 0.9), torch.tensor([[0.625, 0.375, 0.0, 0.0]], dtype=torch.float64))
    assert torch.equal(nucleus(probs, 0.2), torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64))
    assert nucleus(probs, 1.0) is probs


def test_bad_lengths_and_settings_are_clear_errors(sampler):
    # 6 + 11 = 17 positions fit 18, but whole blocks of 4 need 20
    with pytest.raises(ValueError, match="rounded up to blocks of 4, exceeds the model's 18 positions"):
        sampler.sample(ToyBlocks(model_length=18), PROMPT, sampler.Config(max_new_tokens=11))
    with pytest.raises(ValueError, match=r"steps \(2\) must be at least the block size \(4\)"):
        sampler.sample(ToyBlocks(), PROMPT, sampler.Config(max_new_tokens=4, steps=2))
    with pytest.raises(ValueError, match="nucleus_p must lie in"):
        sampler.Config(nucleus_p=0.0)


def test_speed_variants_are_valid_settings(sampler):
    assert not sampler.Config.from_dict(sampler.variants["uncached"]).kv_cache
    assert sampler.Config.from_dict(sampler.variants["cached"]) == sampler.Config()  # the authors' default


def _authors_nucleus(p_x0, top_p):
    if top_p == 1.0:
        return p_x0
    probs, order = p_x0.sort(dim=-1, descending=True)
    keep = probs.cumsum(-1) <= top_p
    keep[..., 0] = True
    out = p_x0.clone().scatter_(-1, order, probs * keep)
    return out / out.sum(-1, keepdim=True)


def reference_semi_ar(model, prompt, n, *, steps, first_hitting, nucleus_p, context, generator):
    """kuleshov-group/bd3lms _semi_ar_sampler + _ddpm_caching_update without the cache, re-implemented for
    a clean prompt: the window of the last ``context`` positions, float64 p_x0 and nucleus, the
    Gumbel draw of the block, then (first hitting) one uniformly chosen masked position."""
    size, mask = model.block_size, model.mask_token_id
    p = prompt.numel()
    end = -(-(p + n) // size) * size
    x = torch.cat([prompt, torch.full((end - p,), mask)])
    for start in range((p // size) * size, end, size):
        lo = max(start + size - context, 0)
        timesteps, dt, p_x0 = torch.linspace(1, 0, steps), 1 / steps, None
        for i in range(steps):
            block = x[start:start + size].clone()
            if not bool((block == mask).any()):
                break
            if p_x0 is None:
                logits = model.block_logits(x[None, lo:start + size], out_start=start - lo)[0]
                p_x0 = _authors_nucleus((logits - torch.logsumexp(logits, -1, keepdim=True)).double().exp(), nucleus_p)
            if first_hitting:
                q = p_x0
            else:
                t = timesteps[i]
                mask_prob = (t - dt) / t
                q = p_x0 * (1 - mask_prob)
                q[:, mask] = mask_prob
                if float(t) == 0:  # the authors' s/t is -inf at the last grid point: q is inf/NaN there
                    assert torch.isinf(mask_prob) and (torch.isnan(q).any() or torch.isinf(q).any())
                    q = p_x0.clone()  # the documented limit s/t -> 0 (decoding/block.py)
                    q[:, mask] = 0.0
            u = torch.rand(q.shape, generator=generator, dtype=q.dtype)
            drawn = (q / (1e-10 - (u + 1e-10).log())).argmax(-1)
            if first_hitting:
                masked = block == mask
                index = torch.randint(0, int(masked.sum()), (1,), generator=generator)
                where = masked.nonzero()[index, 1 - 1]
                new = block.clone()
                new[where] = drawn[where]
            else:
                new = torch.where(block != mask, block, drawn)
            if not torch.equal(new, block):
                p_x0 = None
            x[start:start + size] = new
    return x[p:p + n]


@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("first_hitting,steps,nucleus_p", [(True, 5000, 0.9), (False, 64, 0.9), (False, 7, 1.0)])
def test_equals_the_authors_semi_ar_sampler_on_the_same_uniforms(sampler, weights, first_hitting, steps, nucleus_p):
    """Item 7: the ancestral time grid linspace(1, 0, T) with dt = 1/T, first hitting's draw order,
    and the sliding window (context 8 < the sequence), token for token in fp32 and bf16."""
    model = random_model(TINY_SHAPE, dtype=weights, device="cpu", seed=2)
    prompt = torch.tensor([3, 99, 12, 250, 7, 41, 8])
    for seed in range(2):
        expected = reference_semi_ar(model, prompt.clone(), 13, steps=steps, first_hitting=first_hitting,
                                     nucleus_p=nucleus_p, context=8, generator=make_generator(seed))
        out = sampler.sample(model, prompt, sampler.Config(max_new_tokens=13, steps=steps, first_hitting=first_hitting,
                                                           nucleus_p=nucleus_p, kv_cache=False, context_size=8,
                                                           entropy_rejection=False, eos_token_id=None),
                             generator=make_generator(seed))
        assert out.tokens.tolist() == expected.tolist()


def test_the_sliding_window_reaches_past_the_model_length(sampler):
    toy = ToyBlocks(model_length=16)
    out = sampler.sample(toy, PROMPT, sampler.Config(max_new_tokens=30, kv_cache=False, context_size=12,
                                                     temperature=0.0, entropy_rejection=False),
                         generator=make_generator(0))
    assert out.tokens.numel() == 30 and max(length for _, length, _, _ in toy.calls) == 12
    # the toy's favourite is by position inside what it is fed: the window restarts the positions at 0
    assert out.tokens[-4:].tolist() == favourite(torch.arange(8, 12)).tolist()


class Constant(ToyBlocks):
    """Always the same token: the lowest entropy there is."""

    def block_logits(self, ids, *, start=0, caches=None, out_start=0, logits=True):
        out = super().block_logits(ids, start=start, caches=caches, out_start=out_start, logits=logits)
        if out is None:
            return None
        out = torch.full_like(out, -5.0)
        out[..., 7] = 5.0
        out[..., MASK] = float("-inf")
        return out


def test_low_entropy_samples_are_rejected_and_retried_as_the_authors_do(sampler):
    config = dict(max_new_tokens=300, temperature=0.0, eos_token_id=None, max_tries=3)
    out = sampler.sample(Constant(model_length=512), PROMPT, sampler.Config(**config), generator=make_generator(0))
    # rejected once 256 tokens exist; the last of max_tries (the authors': 10) returned and flagged
    assert out.stats.extra["tries"] == 3 and out.stats.extra["sampling_failed"]
    # Two tries rejected after the block [256, 260), the first that makes the sequence longer than 256:
    # a prefill, 2 + 63·4 first-hitting steps, 63 stores each. The third runs to position 306: 2 + 74·4 steps,
    # 75 stores, and 2 to 4 steps in [304, 308) until 304 and 305 are revealed.
    assert out.tokens.tolist() == [7] * 300
    assert out.stats.nfe - 2 * (1 + 2 + 63 * 4 + 63) - (1 + 2 + 74 * 4 + 75) in (2, 3, 4)
    kept = sampler.sample(Constant(model_length=512), PROMPT, sampler.Config(**config, entropy_rejection=False),
                          generator=make_generator(0))
    assert kept.stats.extra["tries"] == 1 and not kept.stats.extra["sampling_failed"] and kept.tokens.numel() == 300
    # ToyBlocks' favourite (7i + 3) mod 63 takes 9 values: entropy ln 9 < 4, rejected; i mod 61 is ln 61 > 4.
    varied = sampler.sample(Cycling(model_length=512), PROMPT, sampler.Config(**config), generator=make_generator(0))
    assert varied.stats.extra["tries"] == 1 and not varied.stats.extra["sampling_failed"]
    assert varied.tokens.tolist() == (torch.arange(6, 306) % 61).tolist()
    cycling9 = sampler.sample(ToyBlocks(model_length=512), PROMPT, sampler.Config(**config), generator=make_generator(0))
    assert cycling9.stats.extra["tries"] == 3 and cycling9.stats.extra["sampling_failed"]
    assert sampler.Config().max_tries == 10 and sampler.Config().entropy_rejection


class Cycling(ToyBlocks):
    def block_logits(self, ids, *, start=0, caches=None, out_start=0, logits=True):
        out = super().block_logits(ids, start=start, caches=caches, out_start=out_start, logits=logits)
        if out is None:
            return None
        positions = torch.arange(start + out_start, start + ids.shape[1])
        out = torch.full_like(out, -5.0)
        out[0, torch.arange(positions.numel()), positions % 61] = 5.0
        out[..., MASK] = float("-inf")
        return out
