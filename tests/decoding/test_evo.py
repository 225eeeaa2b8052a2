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
from evo_eval.models.evo_schedule import noised

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
    real_times, real_refine, real_ddim = evo_decoding.learned_times, model.refine_step, evo_decoding.ddim_step

    def record_times(model, hidden):
        real_times(model, hidden)  # the learned head runs; its times on random weights all sit near 0.5,
        # so a spread replaces them to give every K_i from 0 to K_max
        t = torch.linspace(0.0, 1.0, hidden.shape[0]) ** 1.5
        times.append(t)
        return t

    def record_refine(cache, z, t, slots, valid, time_conditioning=True):
        calls.append(slots.clone())
        return real_refine(cache, z, t, slots, valid, time_conditioning)

    def record_update(z, t, dt, z0_hat):
        updates.append(z.shape[0])  # the rows updated by this step: a leading slice of the last call's
        return real_ddim(z, t, dt, z0_hat)

    monkeypatch.setattr(evo_decoding, "learned_times", record_times)
    monkeypatch.setattr(evo_decoding, "ddim_step", record_update)
    monkeypatch.setattr(model, "refine_step", record_refine)
    out = _sample(model, schedule="learned", max_new_tokens=20, block_length=8, k_max=10)
    assert out.tokens.numel() == 20 and out.stats.extra["blocks"] == 3

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


@pytest.mark.parametrize("schedule,k", [("fixed:0.5", 5), ("fixed:0.7", 7), ("fixed:0.1", 1)])
def test_blocks_nfe_and_active_token_steps_follow_a_fixed_schedule(model, schedule, k):
    out = _sample(model, schedule=schedule, max_new_tokens=20, block_length=8, k_max=10)
    blocks = [8, 8, 4]
    previous = [PROMPT.numel(), 8, 8]  # clean tokens appended by each block's sketch forward
    assert out.stats.nfe == len(blocks) * (1 + k)
    assert out.stats.active_token_steps == sum(p + n for p, n in zip(previous, blocks)) + k * sum(blocks)
    assert out.stats.extra["token_updates"] == k * 20 and out.stats.extra["schedule"] == schedule
    assert out.stats.extra["refine_nfe"] == len(blocks) * k and out.stats.extra["canvas"] == 8
    ends = [PROMPT.numel() + 8, PROMPT.numel() + 16, PROMPT.numel() + 20]  # keys each forward of a block reads
    assert out.stats.extra["kv_bytes_read"] == (1 + k) * sum(ends) * model.kv_bytes_per_position()


@pytest.mark.parametrize("schedule,k", [("fixed:0.5", 5), ("fixed:0.7", 7), ("fixed:0.1", 1)])
def test_full_canvas_costs_one_sketch_plus_max_k(model, schedule, k):
    out = _sample(model, schedule=schedule, max_new_tokens=20, block_length=0, k_max=10)
    assert out.tokens.numel() == 20 and out.stats.extra["canvas"] == 20 and out.stats.extra["blocks"] == 1
    assert out.stats.nfe == 1 + k  # NFE = 1 + max K_i
    assert out.stats.active_token_steps == PROMPT.numel() + 20 + k * 20


def test_full_canvas_nfe_is_one_plus_max_k_under_learned_times(model, monkeypatch):
    spread = torch.tensor([0.35, 0.9, 0.5, 0.15, 0.6, 0.25] * 3 + [0.45, 0.3])
    monkeypatch.setattr(evo_decoding, "learned_times", lambda model, hidden: spread)
    out = _sample(model, schedule="learned", max_new_tokens=20, block_length=0, k_max=10)
    k = steps_for(spread, 10)
    assert out.stats.nfe == 1 + int(k.max()) and out.stats.extra["token_updates"] == int(k.sum())
    assert out.stats.active_token_steps == PROMPT.numel() + 20 + sum(int((k > s).sum()) for s in range(1, 9)) + 20


def test_fixed_1_reuses_the_sketch_forward_as_its_first_refinement_step(model, monkeypatch):
    """At t = 1 the noised latents are the prior draws the sketch read: step 0's forward is not repeated,
    and what it would have computed equals the sketch's readout."""
    out = _sample(model, schedule="fixed:1", max_new_tokens=12, block_length=0, k_max=10)
    assert out.stats.nfe == 10 and out.stats.extra["sketch_reused"] == 1 and out.stats.extra["refine_nfe"] == 9
    p, n = PROMPT.numel(), 12
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(n, model.config.hidden_size, generator=gen)
    ones = torch.ones(n)
    with torch.no_grad():
        cache = model.new_cache(p + n)
        sketch = model.encode_step(cache, PROMPT, 0, eps, ones, p)
        z = noised(model.clean_latents(sketch.logits.argmax(-1)), eps, ones)
        again = model.refine_step(cache, z, ones, torch.arange(p, p + n), p + n)
    assert torch.allclose(again.logits, sketch.logits, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fixed_0_is_greedy_autoregressive_decoding_of_the_ar_pathway(dtype):
    model = random_model(TINY_SHAPE, dtype=dtype, device="cpu", seed=5)
    out = _sample(model, schedule="fixed:0", temperature=0.0, max_new_tokens=24, block_length=0)
    ids = PROMPT.clone()
    with torch.no_grad():
        for _ in range(24):  # the reference: recompute the whole causal pass, take the argmax
            ids = torch.cat([ids, model.ar_logits(ids)[0, -1].argmax()[None]])
    assert out.tokens.tolist() == ids[PROMPT.numel():].tolist()
    assert out.stats.nfe == 24 and out.stats.extra["ar_tokens"] == 24 and out.stats.extra["refine_nfe"] == 0
    assert out.stats.active_token_steps == PROMPT.numel() + 23


def test_k_zero_tokens_under_learned_times_are_realised_by_the_ar_pathway(model, monkeypatch):
    spread = torch.tensor([0.0, 0.5, 0.0, 0.0, 0.9, 0.3, 0.0, 0.6, 0.05, 0.0])
    monkeypatch.setattr(evo_decoding, "learned_times", lambda model, hidden: spread)
    out = _sample(model, schedule="learned", temperature=0.0, max_new_tokens=10, block_length=0, k_max=10)
    zero = [j for j, v in enumerate(steps_for(spread, 10).tolist()) if v == 0]
    with torch.no_grad():
        for j in zero:
            context = torch.cat([PROMPT, out.tokens[:j]])
            assert int(out.tokens[j]) == int(model.ar_logits(context)[0, -1].argmax())
    # One sketch, max K_i = 9 refinement forwards, one AR forward per realised token after the first
    # (the first canvas token's AR prediction comes with the sketch forward's last prompt row).
    assert out.stats.nfe == 1 + 9 + (len(zero) - 1) and out.stats.extra["ar_tokens"] == len(zero)


def test_a_latent_at_the_end_of_the_canvas_changes_the_first_latents_update(model, monkeypatch):
    """Full-sequence attention: perturb only the last canvas latent before refinement; the first token's
    clean estimate at refinement step 0 moves on the full canvas, not with blocks of 8."""
    real_noised, real_ddim = evo_decoding.noised, evo_decoding.ddim_step

    def first_update(block_length, shift):
        seen, calls = [], []
        last_canvas = 0 if block_length == 0 else 1  # 16 tokens: one canvas, or the second block of 8

        def perturbed(z0, eps, t):
            z = real_noised(z0, eps, t)
            if len(calls) == last_canvas:
                z[-1] += shift
            calls.append(1)
            return z

        def record(z, t, dt, z0_hat):
            seen.append(z0_hat.clone())
            return real_ddim(z, t, dt, z0_hat)

        monkeypatch.setattr(evo_decoding, "noised", perturbed)
        monkeypatch.setattr(evo_decoding, "ddim_step", record)
        _sample(model, schedule="fixed:0.5", max_new_tokens=16, block_length=block_length, k_max=4)
        return seen[0][0]  # step 0, token 0 (every token is active, in canvas order)

    assert not torch.allclose(first_update(0, 0.0), first_update(0, 5.0), atol=1e-4)
    assert torch.allclose(first_update(8, 0.0), first_update(8, 5.0))


def test_entropy_schedule_reads_the_ar_pathways_next_token_entropy(model, monkeypatch):
    seen = {}
    real_sample, real_steps = evo_decoding.nucleus_sample, evo_decoding.steps_for

    def record_sketch(logits, *args):
        tokens = real_sample(logits, *args)
        seen.setdefault("drafted", tokens)
        return tokens

    def record_steps(t, k_max):
        seen["t"] = t
        return real_steps(t, k_max)

    monkeypatch.setattr(evo_decoding, "nucleus_sample", record_sketch)
    monkeypatch.setattr(evo_decoding, "steps_for", record_steps)
    out = _sample(model, schedule="entropy", max_new_tokens=12, block_length=0, k_max=10)
    with torch.no_grad():
        logits = model.ar_logits(torch.cat([PROMPT, seen["drafted"][:-1]]))[0, PROMPT.numel() - 1:]
    assert torch.allclose(seen["t"], evo_decoding.normalised_entropy(logits), atol=1e-5)
    assert out.stats.nfe == 1 + 1 + int(real_steps(seen["t"], 10).max())  # the entropy pass is one forward


def test_fixed_0_does_the_least_work_and_fixed_1_the_most(model):
    work = {s: _sample(model, schedule=s, k_max=10, max_new_tokens=16, block_length=0).stats
            for s in ("fixed:0", "fixed:0.5", "learned", "fixed:1")}
    order = sorted(work, key=lambda s: work[s].active_token_steps)
    assert order[0] == "fixed:0" and order[-1] == "fixed:1"
    assert work["fixed:0.5"].nfe < work["fixed:1"].nfe
    # Half the progression time, half the refinement forwards; fixed:1's first one is the sketch's own.
    sketch = PROMPT.numel() + 16
    assert work["fixed:0.5"].active_token_steps == sketch + 5 * 16
    assert work["fixed:1"].active_token_steps == sketch + 9 * 16


def test_same_seed_same_tokens_other_seed_other_sketch(model):
    a, b, c = _sample(model, seed=3), _sample(model, seed=3), _sample(model, seed=4)
    assert torch.equal(a.tokens, b.tokens) and a.stats.nfe == b.stats.nfe
    assert not torch.equal(a.tokens, c.tokens)


def test_without_eos_exactly_max_new_tokens_with_eos_cut_and_stop_ends_early(model):
    for n in (1, 7, 8, 21):
        for block in (0, 8):
            assert _sample(model, max_new_tokens=n, block_length=block, eos_token_id=None, k_max=4).tokens.numel() == n
    free = _sample(model, max_new_tokens=16, block_length=8, schedule="fixed:0.5", k_max=4).tokens
    first = next(j for j in range(1, 8) if int(free[j]) not in free[:j].tolist())
    eos = int(free[first])
    cut = _sample(model, max_new_tokens=16, block_length=8, schedule="fixed:0.5", k_max=4, eos_token_id=eos)
    assert cut.tokens.tolist() == free[:first].tolist() and cut.stats.nfe == 1 + 2  # the second block never ran
    # A full canvas decodes whole, then is cut (the adapter cuts the text at `until`).
    whole = _sample(model, max_new_tokens=16, block_length=0, schedule="fixed:0.5", k_max=4, eos_token_id=eos)
    assert whole.stats.nfe == 1 + 2 and whole.tokens.numel() < 16
    seen = []

    def stop(tokens):
        seen.append(tokens.numel())
        return True

    early = EvoSampler().sample(model, PROMPT, EvoSamplerConfig(max_new_tokens=24, block_length=8, schedule="fixed:0.5",
                                                                k_max=4), generator=make_generator(0), stop=stop)
    assert early.tokens.numel() == 8 and seen == [8]
    # Token by token (fixed:0), a stop fires after the token that completes it.
    seen.clear()
    ar = EvoSampler().sample(model, PROMPT, EvoSamplerConfig(max_new_tokens=24, schedule="fixed:0"),
                             generator=make_generator(0), stop=stop)
    assert ar.tokens.numel() == 1 and seen == [1] and ar.stats.nfe == 1
    free_ar = _sample(model, max_new_tokens=12, schedule="fixed:0", temperature=0.0).tokens
    cut_ar = _sample(model, max_new_tokens=12, schedule="fixed:0", temperature=0.0, eos_token_id=int(free_ar[3]))
    first = free_ar.tolist().index(int(free_ar[3]))
    assert cut_ar.tokens.tolist() == free_ar[:first].tolist() and cut_ar.stats.nfe == first + 1


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


@pytest.mark.parametrize("block_length", [0, 8])
def test_plan_cost_equals_the_forwards_a_fixed_schedule_makes(model, block_length):
    """``work`` (what ``evo-eval plan`` counts) ends and agrees with the run for one whole-canvas block
    (block_length 0) as for several blocks: a fixed schedule's count is exact."""
    config = EvoSamplerConfig(max_new_tokens=20, block_length=block_length, schedule="fixed:0.5", k_max=4,
                              eos_token_id=None)
    out = EvoSampler().sample(model, PROMPT, config, generator=make_generator(0))
    work = EvoSampler().work(config, PROMPT.numel(), {})
    assert work.exact and work.nfe == out.stats.nfe
    assert work.positions == out.stats.active_token_steps
