"""ARD's sampler: an oracle denoiser is decoded exactly, NFE follows the skip grid, early exits are exact."""

from __future__ import annotations

import pytest
import torch

from evo_eval.decoding import get_sampler
from evo_eval.decoding.ard import gaussian, skip_step
from evo_eval.decoding.base import make_generator
from evo_eval.models.ard import TINY_SHAPE, alphas_cumprod, random_model

PROMPT = torch.tensor([3, 14, 15, 92, 65])


@pytest.fixture(scope="module")
def sampler():
    return get_sampler("ard")


@pytest.fixture(scope="module")
def model():
    return random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=7)


class Oracle(torch.nn.Module):
    """The tiny ARD with a denoiser that always predicts the target's embeddings, and a rounding head
    that picks the nearest embedding (bias -|e_v|²/2): decoding must recover the target exactly."""

    def __init__(self, base, target: torch.Tensor):
        super().__init__()
        self.base, self.target, self.config = base, target, base.config
        with torch.no_grad():
            base.word_embedding.weight.normal_(0.0, 1.0, generator=make_generator(0))
            base.lm_head_bias.copy_(-0.5 * base.word_embedding.weight.pow(2).sum(-1))
        self.seen_t = []

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.base, name)

    def denoise(self, cache, z, t):
        self.seen_t.append(t.clone())
        return self.base.embed_latent(self.target[: z.shape[1]]).expand(z.shape[0], -1, -1)


def test_an_oracle_denoiser_is_decoded_exactly(sampler):
    target = torch.randint(0, 500, (24,), generator=make_generator(1))
    oracle = Oracle(random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=1), target)
    for clamp in (True, False):
        out = sampler.sample(oracle, PROMPT, sampler.Config(max_new_tokens=24, clamp=clamp, eos_token_id=None),
                             generator=make_generator(2))
        assert out.tokens.tolist() == target.tolist()
    # The denoiser saw ARD's per-token timesteps: all at T-1 first, left tokens ahead of right ones after.
    assert bool((oracle.seen_t[0] == 1999).all()) and bool((oracle.seen_t[-1][0, 1:] >= oracle.seen_t[-1][0, :-1]).all())


def test_jump_is_the_gaussian_posterior():
    acp = alphas_cumprod(2000).float()
    e = torch.randn(4, 8)
    a_t, a_s = acp[torch.tensor([1500, 900, 40, 7])], acp[torch.tensor([900, 40, 0, 7])]
    z = a_t.sqrt()[:, None] * e  # a noise-free latent on the path of e
    mean = skip_step(z, e, a_t, a_s, torch.zeros(4, 8), torch.zeros(4, dtype=torch.bool))
    torch.testing.assert_close(mean, a_s.sqrt()[:, None] * e)  # lands on the same path at the target level
    noisy = skip_step(z, e, a_t, a_s, torch.ones(4, 8), torch.tensor([False, False, True, False]))
    assert torch.equal(noisy[2], mean[2]) and torch.equal(noisy[3], z[3])  # no noise into 0; a still token stays
    assert bool((gaussian((2000,), make_generator(0), "cpu", truncation=0.5).abs() <= 0.5).all())


def test_nfe_and_work_follow_the_skip_grid(sampler, model):
    for steps in (20, 5):
        out = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=16, gen_timesteps=steps, eos_token_id=None))
        assert out.tokens.numel() == 16
        assert out.stats.nfe == 1 + steps and out.stats.active_token_steps == PROMPT.numel() + 16 * steps


def test_seeded_and_fixed_length(sampler, model):
    config = sampler.Config(max_new_tokens=10, eos_token_id=None)
    a = sampler.sample(model, PROMPT, config, generator=make_generator(5)).tokens
    b = sampler.sample(model, PROMPT, config, generator=make_generator(5)).tokens
    c = sampler.sample(model, PROMPT, config, generator=make_generator(6)).tokens
    assert torch.equal(a, b) and not torch.equal(a, c) and a.numel() == 10


def test_cap_eos_and_stop_end_early_and_exactly(sampler, model):
    # 256 tokens in 20 steps: the first 17 tokens are final after step 18 of 20, the first 129 after step 19.
    full = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=256, eos_token_id=None),
                          generator=make_generator(3))
    capped = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=16, gen_length=256, eos_token_id=None),
                            generator=make_generator(3))
    assert capped.tokens.tolist() == full.tokens[:16].tolist()
    assert (full.stats.nfe, capped.stats.nfe) == (21, 19)
    tokens = full.tokens.tolist()
    j = next(i for i in range(4, 17) if tokens[i] not in tokens[:i])
    eos = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=256, eos_token_id=tokens[j]),
                         generator=make_generator(3))
    assert eos.tokens.tolist() == tokens[:j] and eos.stats.nfe == 19
    seen = []

    def stop(ids):
        seen.append(ids.tolist())
        return False

    sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=256, eos_token_id=None), generator=make_generator(3),
                   stop=stop)
    assert [len(s) for s in seen] == [17, 129] and all(s == tokens[: len(s)] for s in seen)


def test_settings_are_checked(sampler, model):
    with pytest.raises(ValueError, match="gen_timesteps must be at least 1"):
        sampler.Config(gen_timesteps=0)
    with pytest.raises(ValueError, match="exceeds the model's 2048 positions"):
        sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=2046, eos_token_id=None))
