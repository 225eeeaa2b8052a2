"""MDLM's sampler on a deterministic toy denoiser: the cached step skips the network when nothing
changes, NFE is what the schedule implies, the prompt is never touched, seeds and lengths hold."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from evo_eval.decoding import get_sampler
from evo_eval.decoding.base import make_generator
from evo_eval.models.mdlm import TINY_SHAPE, random_model

VOCAB, MASK = 64, 63
PROMPT = torch.tensor([5, 17, 2, 40, 9])


def favourite(position: torch.Tensor) -> torch.Tensor:
    return (position * 7 + 3) % (VOCAB - 1)


class ToyDenoiser(torch.nn.Module):
    """Peaked at ``favourite(position)`` whatever the canvas; records every canvas it is run on."""

    mask_token_id = MASK

    def __init__(self, time_conditioning: bool = False):
        super().__init__()
        self.config = SimpleNamespace(model_length=256, time_conditioning=time_conditioning)
        self.canvases: list[torch.Tensor] = []

    def denoiser_logits(self, ids, *, start=0, sigma=None):
        self.canvases.append(ids[0].clone())
        positions = torch.arange(start, ids.shape[1])
        logits = -3.0 * (torch.arange(VOCAB)[None] - favourite(positions)[:, None]).abs().float()
        logits[:, MASK] = float("-inf")
        return logits[None].expand(ids.shape[0], -1, -1).clone()


@pytest.fixture(scope="module")
def sampler():
    return get_sampler("mdlm")


def masks_left(canvas: torch.Tensor) -> int:
    return int((canvas == MASK).sum())


def test_cached_step_skips_the_network_when_nothing_changes(sampler):
    toy = ToyDenoiser()
    out = sampler.sample(toy, PROMPT, sampler.Config(max_new_tokens=6, steps=1000), generator=make_generator(1))
    # 1000 steps, 6 tokens: the network runs only before a step that reveals something.
    assert out.stats.nfe == len(toy.canvases) <= 6 + 1
    left = [masks_left(c) for c in toy.canvases]
    assert left[0] == 6 and all(a > b for a, b in zip(left, left[1:]))  # never twice on the same canvas
    # one forward per revealing step, plus the noise removal only if eps left something masked
    assert out.stats.nfe - out.stats.extra["reveal_steps"] in (0, 1)
    assert all(torch.equal(c[:5], PROMPT) for c in toy.canvases)  # the prompt is never masked or changed
    assert out.stats.active_token_steps == out.stats.nfe * (5 + 6)


def test_reference_predictor_runs_every_step_and_the_final_removal(sampler):
    toy = ToyDenoiser()
    out = sampler.sample(toy, PROMPT, sampler.Config(max_new_tokens=6, steps=40, predictor="ddpm"),
                         generator=make_generator(1))
    assert out.stats.nfe == len(toy.canvases) == 40 + 1
    assert any(torch.equal(a, b) for a, b in zip(toy.canvases, toy.canvases[1:]))  # recomputed unchanged canvases


def test_time_conditioned_models_disable_the_cache(sampler):
    toy = ToyDenoiser(time_conditioning=True)
    out = sampler.sample(toy, PROMPT, sampler.Config(max_new_tokens=6, steps=30), generator=make_generator(1))
    assert out.stats.nfe == 30 + 1  # the authors disable caching when time enters the network


@pytest.mark.parametrize("steps", [1, 2, 3, 50])
def test_nfe_is_the_number_of_steps_that_reveal(sampler, steps):
    toy = ToyDenoiser()
    # eps = 0: the grid reaches t = 0, so every position is revealed at a step and none is left to
    # the noise removal; each position's reveal step is uniform, so NFE = distinct reveal steps.
    out = sampler.sample(toy, PROMPT, sampler.Config(max_new_tokens=8, steps=steps, eps=0.0),
                         generator=make_generator(steps))
    left = [masks_left(c) for c in toy.canvases]
    assert out.stats.nfe == len(left) == out.stats.extra["reveal_steps"] <= min(steps, 8)
    assert left[0] == 8 and sorted(set(left), reverse=True) == left
    assert (out.tokens != MASK).all()
    if steps == 1:
        assert out.stats.nfe == 1  # one step from t = 1 to s = 0 reveals everything at once


def test_temperature_zero_takes_the_argmax_at_every_position(sampler):
    toy = ToyDenoiser()
    out = sampler.sample(toy, PROMPT, sampler.Config(max_new_tokens=12, temperature=0.0), generator=make_generator(3))
    assert out.tokens.tolist() == favourite(torch.arange(5, 17)).tolist()


def test_fixed_length_without_eos_and_seeded_draws_on_the_dit(sampler):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=1)
    prompt = torch.tensor([3, 99, 12, 250, 7, 41])
    config = sampler.Config(max_new_tokens=20, steps=16, eos_token_id=None)
    a = sampler.sample(model, prompt, config, generator=make_generator(5))
    b = sampler.sample(model, prompt, config, generator=make_generator(5))
    c = sampler.sample(model, prompt, config, generator=make_generator(6))
    assert a.tokens.numel() == 20 and a.stats.new_tokens == 20
    assert torch.equal(a.tokens, b.tokens) and a.stats.nfe == b.stats.nfe
    assert not torch.equal(a.tokens, c.tokens)
    assert (a.tokens != model.mask_token_id).all()


def test_committed_prefix_stops_early_on_eos_and_stop_strings(sampler):
    config = dict(max_new_tokens=16, steps=64, temperature=0.0)
    full = sampler.sample(ToyDenoiser(), PROMPT, sampler.Config(**config), generator=make_generator(2))
    eos = int(full.tokens[3])
    saved = []
    for seed in range(8):  # the reveal order is random: some orders commit the first tokens early
        reference = sampler.sample(ToyDenoiser(), PROMPT, sampler.Config(**config), generator=make_generator(seed))
        out = sampler.sample(ToyDenoiser(), PROMPT, sampler.Config(**config, eos_token_id=eos),
                             generator=make_generator(seed))
        assert out.tokens.tolist() == full.tokens[:3].tolist()  # cut at EOS by the base
        assert out.stats.nfe <= reference.stats.nfe
        saved.append(out.stats.nfe < reference.stats.nfe)
    assert any(saved)
    seen = []

    def stop(committed):
        seen.append(committed.clone())
        return committed.numel() >= 5

    out = sampler.sample(ToyDenoiser(), PROMPT, sampler.Config(**config), stop=stop, generator=make_generator(2))
    assert seen and all((s != MASK).all() for s in seen)  # stop only ever sees committed tokens
    assert [s.numel() for s in seen] == sorted({s.numel() for s in seen})  # called as the prefix grows
    assert out.tokens.numel() >= 5 and out.tokens.tolist() == full.tokens[:out.tokens.numel()].tolist()
    assert out.stats.extra["stopped_early"] == (out.tokens.numel() < 16)


def test_prompt_plus_canvas_must_fit_the_context(sampler):
    toy = ToyDenoiser()
    with pytest.raises(ValueError, match="exceeds the model's 256 positions"):
        sampler.sample(toy, torch.zeros(250, dtype=torch.long), sampler.Config(max_new_tokens=10))
    with pytest.raises(ValueError, match="unknown MDLM predictor 'analytic'"):
        sampler.Config(predictor="analytic")


def test_speed_variants_are_valid_settings(sampler):
    assert sampler.Config.from_dict(sampler.variants["uncached"]).predictor == "ddpm"
    assert sampler.Config.from_dict(sampler.variants["cached"]) == sampler.Config()  # the authors' default


def _log_probs(model, x, p, dtype):
    logits = model.denoiser_logits(x[None], start=p)[0].to(dtype)
    return logits - torch.logsumexp(logits, dim=-1, keepdim=True)


def reference_sample(model, prompt, n, *, steps, eps, predictor, generator, dtype):
    """kuleshov-group/mdlm diffusion.py ``_sample`` with ``_ddpm_caching_update`` / ``_ddpm_update`` and
    ``_sample_categorical``, re-implemented for the answer positions after a clean prompt."""
    p, mask = prompt.numel(), model.mask_token_id
    x = torch.cat([prompt, torch.full((n,), mask)])
    timesteps = torch.linspace(1, eps, steps + 1)
    dt = (1 - eps) / steps
    p_x0 = None
    for i in range(steps):
        t = timesteps[i]
        if predictor == "ddpm_cache":
            move_t, move_s = t, t - dt
            if p_x0 is None:
                p_x0 = _log_probs(model, x, p, dtype).exp()
        else:
            sigma_t, sigma_s = -torch.log1p(-(1 - 1e-3) * t), -torch.log1p(-(1 - 1e-3) * (t - dt))
            move_t, move_s = 1 - torch.exp(-sigma_t), 1 - torch.exp(-sigma_s)
            p_x0 = _log_probs(model, x, p, dtype).exp()
        q = p_x0 * (move_t - move_s)
        q[:, mask] = move_s
        u = torch.rand(q.shape, generator=generator, dtype=q.dtype)
        drawn = (q / (1e-10 - (u + 1e-10).log())).argmax(-1)
        answer = x[p:]
        new = torch.where(answer != mask, answer, drawn)
        if predictor == "ddpm_cache" and not torch.equal(new, answer):
            p_x0 = None
        x[p:] = new
    final = _log_probs(model, x, p, dtype).argmax(-1)  # noise removal
    return torch.where(x[p:] == mask, final, x[p:])


@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("predictor,eps", [("ddpm_cache", 1e-5), ("ddpm", 1e-5), ("ddpm_cache", 0.2)])
def test_equals_the_authors_sampler_on_the_same_uniforms(sampler, weights, precision, predictor, eps):
    """Item 7: the authors' float32 sampling by default, float64 a setting; token-equal on the same draws."""
    model = random_model(TINY_SHAPE, dtype=weights, device="cpu", seed=1)
    prompt = torch.tensor([3, 99, 12, 250, 7, 41])
    dtype = torch.float32 if precision == "float32" else torch.float64
    for seed in range(2):
        expected = reference_sample(model, prompt.clone(), 12, steps=16, eps=eps, predictor=predictor,
                                    generator=make_generator(seed), dtype=dtype)
        out = sampler.sample(model, prompt, sampler.Config(max_new_tokens=12, steps=16, eps=eps, predictor=predictor,
                                                           precision=precision, eos_token_id=None),
                             generator=make_generator(seed))
        assert out.tokens.tolist() == expected.tolist()


def test_float32_is_the_default_and_precision_changes_the_draw(sampler):
    assert sampler.Config().precision == "float32"
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=1)
    prompt = torch.tensor([3, 99, 12, 250, 7, 41])
    draws = {precision: [sampler.sample(model, prompt, sampler.Config(max_new_tokens=12, steps=16, precision=precision,
                                                                      eos_token_id=None),
                                        generator=make_generator(seed)).tokens.tolist() for seed in range(3)]
             for precision in ("float32", "float64")}
    assert draws["float32"] != draws["float64"]  # different uniforms and arithmetic: a different sample
    with pytest.raises(ValueError, match="precision 'half' is not one of"):
        sampler.Config(precision="half")
