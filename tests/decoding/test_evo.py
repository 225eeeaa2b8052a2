"""Evo's sampler: exactly K_i updates per token, active-only forwards, cost by schedule, determinism."""

from __future__ import annotations

import math

import pytest
import torch

import evo_eval.decoding.evo as evo_decoding
from evo_eval.decoding import get_sampler
from evo_eval.decoding.base import make_generator
from evo_eval.decoding.evo import EvoSampler, EvoSamplerConfig, parse_schedule, steps_for
from evo_eval.models.evo import TINY_SHAPE, random_model
from evo_eval.models.evo_modeling import noised

PROMPT = torch.tensor([0, 41, 7, 300, 12, 99, 5, 18, 250])

@pytest.fixture(scope="module")
def model():
    return random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=11)


def _sample(model, seed=0, **config):
    values = dict(max_new_tokens=20, block_length=8)
    values.update(config)
    return EvoSampler().sample(model, PROMPT, EvoSamplerConfig(**values), generator=make_generator(seed))


def test_token_i_is_updated_exactly_floor_kmax_ti_times_and_only_active_tokens_are_computed(model, monkeypatch):
    times, calls, updates = [], [], []
    real_times, real_refine, real_ddim = evo_decoding.progression_times, model.refine_step, evo_decoding.ddim_step

    def record_times(*args):
        real_times(*args)  # the learned head runs; its times on random weights all sit near 0.5, so
        # a spread replaces them to give every K_i from 0 to K_max
        t = torch.linspace(0.0, 1.0, args[2].shape[0]) ** 1.5
        times.append(t)
        return t

    def record_refine(cache, z, t, slots, valid, time_conditioning=True):
        calls.append(slots.clone())
        return real_refine(cache, z, t, slots, valid, time_conditioning)

    def record_update(z, t, dt, z0_hat):
        updates.append(z.shape[0])  # the rows updated by this step: a leading slice of the last call's
        return real_ddim(z, t, dt, z0_hat)

    monkeypatch.setattr(evo_decoding, "progression_times", record_times)
    monkeypatch.setattr(evo_decoding, "ddim_step", record_update)
    monkeypatch.setattr(model, "refine_step", record_refine)
    out = _sample(model, schedule="learned", max_new_tokens=20, block_length=8, k_max=10)
    assert out.tokens.numel() == 20

    k = torch.cat([steps_for(t, 10) for t in times])
    assert set(k.tolist()) >= {0, 1, 5, 10}
    counted = torch.zeros(20, dtype=torch.long)
    for slots, live in zip(calls, updates):
        counted[slots[:live] - PROMPT.numel()] += 1
    assert counted.tolist() == k.tolist()
    # After a block's first step, a forward carries exactly the tokens still refining.
    starts = [0, 8, 16]
    block_of = [[j for j in range(20) if starts[b] <= j < starts[b] + (8 if b < 2 else 4)] for b in range(3)]
    step_in_block, block = 0, -1
    for slots, live in zip(calls, updates):
        b = starts.index(max(s for s in starts if s <= int(slots.min()) - PROMPT.numel()))
        step_in_block = step_in_block + 1 if b == block else 0
        block = b
        still = sum(1 for j in block_of[b] if k[j] > step_in_block)
        assert live == still
        assert slots.numel() == (len(block_of[b]) if step_in_block == 0 else still)
    assert out.stats.extra["token_updates"] == int(k.sum())


@pytest.mark.parametrize("schedule,k", [("fixed:0", 0), ("fixed:0.5", 5), ("fixed:1", 10), ("fixed:0.7", 7)])
def test_nfe_and_active_token_steps_follow_a_fixed_schedule(model, schedule, k):
    out = _sample(model, schedule=schedule, max_new_tokens=20, block_length=8, k_max=10)
    blocks = [8, 8, 4]
    previous = [PROMPT.numel(), 8, 8]  # clean tokens appended by each block's sketch forward
    assert out.stats.nfe == len(blocks) * (1 + k)
    assert out.stats.active_token_steps == sum(p + n for p, n in zip(previous, blocks)) + k * sum(blocks)
    assert out.stats.extra["token_updates"] == k * 20 and out.stats.extra["schedule"] == schedule
    assert out.stats.extra["refine_nfe"] == len(blocks) * k
    ends = [PROMPT.numel() + 8, PROMPT.numel() + 16, PROMPT.numel() + 20]  # keys each forward of a block reads
    assert out.stats.extra["kv_bytes_read"] == (1 + k) * sum(ends) * model.kv_bytes_per_position()


def test_fixed_0_does_the_least_work_and_fixed_1_the_most(model):
    work = {s: _sample(model, schedule=s, k_max=10, max_new_tokens=16).stats
            for s in ("fixed:0", "fixed:0.5", "learned", "entropy", "fixed:1")}
    order = sorted(work, key=lambda s: work[s].active_token_steps)
    assert order[0] == "fixed:0" and order[-1] == "fixed:1"
    assert work["fixed:0"].nfe < work["fixed:0.5"].nfe < work["fixed:1"].nfe
    # Half the progression time, about half the refinement work (the sketch forwards are shared).
    ratio = work["fixed:0.5"].active_token_steps / work["fixed:1"].active_token_steps
    assert 0.5 <= ratio <= 0.6


def test_same_seed_same_tokens_other_seed_other_sketch(model):
    a, b, c = _sample(model, seed=3), _sample(model, seed=3), _sample(model, seed=4)
    assert torch.equal(a.tokens, b.tokens) and a.stats.nfe == b.stats.nfe
    assert not torch.equal(a.tokens, c.tokens)


def test_without_eos_exactly_max_new_tokens_with_eos_cut_and_stop_ends_early(model):
    for n in (1, 7, 8, 21):
        assert _sample(model, max_new_tokens=n, eos_token_id=None, k_max=4).tokens.numel() == n
    free = _sample(model, max_new_tokens=16, block_length=8, schedule="fixed:0").tokens
    eos = int(free[2])
    cut = _sample(model, max_new_tokens=16, block_length=8, schedule="fixed:0", eos_token_id=eos)
    assert cut.tokens.tolist() == free[:2].tolist() and cut.stats.nfe == 1  # the second block never ran
    seen = []

    def stop(tokens):
        seen.append(tokens.numel())
        return True

    early = EvoSampler().sample(model, PROMPT, EvoSamplerConfig(max_new_tokens=24, block_length=8, schedule="fixed:0"),
                                generator=make_generator(0), stop=stop)
    assert early.tokens.numel() == 8 and seen == [8]


def test_cached_primitives_equal_the_uncached_forward():
    """The sketch and a refinement step over the cache equal one uncached pass over the same inputs.

    One layer, so a row's keys/values depend on its own input only; deeper, the keys/values a finished
    token leaves in the cache are those of its last step (by design, not recomputed).
    """
    model = random_model(dict(TINY_SHAPE, n_layers=1), dtype=torch.float32, device="cpu", seed=2)
    p, n = PROMPT.numel(), 6
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(n, model.config.hidden_size, generator=gen)
    t = torch.rand(n, generator=gen)
    with torch.no_grad():
        _, reference = model.latent_forward(PROMPT[None], z[None], t[None], torch.arange(p, p + n), torch.full((n,), p))
        cache = model.new_cache(p + n)
        sketch = model.encode_step(cache, PROMPT, 0, z, t, p)
        assert torch.allclose(sketch.logits, reference.logits[0], atol=1e-5)
        # Refining three of the six: their keys/values replace theirs, the others' stay cached.
        z2 = noised(model.clean_latents(torch.tensor([3, 4, 5])), z[:3], t[:3] * 0.5)
        rows = torch.tensor([1, 3, 4])
        step = model.refine_step(cache, z2, t[:3] * 0.5, rows + p, p + n)
        z_all, t_all = z.clone(), t.clone()
        z_all[rows], t_all[rows] = z2, t[:3] * 0.5
        _, again = model.latent_forward(PROMPT[None], z_all[None], t_all[None], torch.arange(p, p + n),
                                        torch.full((n,), p))
        assert torch.allclose(step.logits, again.logits[0, rows], atol=1e-5)


def test_schedules_parse_and_bad_settings_say_so(model):
    assert parse_schedule("fixed:0.5").value == 0.5 and parse_schedule("none").time_conditioning is False
    for bad in ("fixed:2", "fixed:x", "sometimes"):
        with pytest.raises(ValueError, match="unknown Evo schedule"):
            parse_schedule(bad)
    with pytest.raises(ValueError, match="exceeds Evo's 2048 positions"):
        _sample(model, max_new_tokens=2045)
    with pytest.raises(ValueError, match="unknown latent decoding"):
        _sample(model, decode="rounding")
    assert steps_for(torch.tensor([0.0, 0.049, 0.05, 0.7, 0.999, 1.0]), 20).tolist() == [0, 0, 1, 14, 19, 20]
    assert math.floor(20 * torch.tensor(0.7).item()) == 13  # why steps_for guards the floor


def test_registry_and_config_from_card_settings(model):
    sampler = get_sampler("evo")
    assert isinstance(sampler, EvoSampler)
    config = EvoSamplerConfig.from_dict({"sampler": "evo", "k_max": "4", "schedule": "fixed:0.5", "top_p": 0.9,
                                         "temperature": 0.7, "block_length": 32, "decode": "nearest"})
    assert config.k_max == 4 and config.decode == "nearest"
    out = sampler.sample(model, PROMPT, config, generator=make_generator(0))
    assert out.stats.extra["decode"] == "nearest" and out.stats.new_tokens == 256
