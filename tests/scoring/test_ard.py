"""ARD's NELBO estimator: unbiased for a denoiser whose bound is known in closed form; the KL weights telescope."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from evo_eval.decoding.base import make_generator
from evo_eval.models.ard import TINY_SHAPE, random_model
from evo_eval.scoring.ard import ARDScorer, prior_kl, step_weights

CTX, CONT = torch.tensor([5, 9, 2, 7]), torch.tensor([11, 40, 300, 7, 99, 12])


class ConstantDenoiser(torch.nn.Module):
    """The tiny ARD whose x̂0 ignores its input and whose rounding logits are fixed: every term of the
    bound is then deterministic given the step, so the exact NELBO is a finite sum."""

    def __init__(self):
        super().__init__()
        self.base = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=4)
        gen = make_generator(9)
        self.x0 = torch.randn(len(CONT), 16, generator=gen) * 0.05
        self.logits = torch.randn(512, generator=gen)
        self.config = self.base.config

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.base, name)

    def denoise(self, cache, z, t):
        return self.x0[: z.shape[1]].expand(z.shape[0], -1, -1)

    def round_logits(self, z):
        return self.logits.expand(*z.shape[:-1], -1)

    def exact_nelbo(self, cont: torch.Tensor, steps: int) -> float:
        e = self.base.embed_latent(cont)
        _, weights = step_weights(self.base, len(cont), steps, "cpu")
        diffusion = (weights * (e - self.x0).double().pow(2).sum(-1)).sum()
        rounding = F.cross_entropy(self.logits.expand(len(cont), -1), cont, reduction="sum").double()
        alpha_last = float(self.base.alphas_cumprod("cpu")[-1])
        return float(prior_kl(e, alpha_last) + diffusion + rounding)


@pytest.fixture(scope="module")
def scorer():
    return ARDScorer()


def test_exact_when_every_step_is_visited_and_unbiased_when_sampled(scorer):
    toy = ConstantDenoiser()
    exact = -toy.exact_nelbo(CONT, 20)
    stratified = scorer.score(toy, CTX, CONT, scorer.Config(mc_num=40, batch=20), generator=make_generator(0))
    assert stratified.logprob == pytest.approx(exact, rel=1e-6) and stratified.nfe == 41
    sampled = scorer.score(toy, CTX, CONT, scorer.Config(mc_num=300, batch=1), generator=make_generator(1))
    assert sampled.stderr > 0 and abs(sampled.logprob - exact) < 4 * sampled.stderr


def test_kl_weights_telescope_along_every_tokens_path():
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=0)
    src, weights = step_weights(model, 40, 20, "cpu")
    acp = model.alphas_cumprod("cpu")
    snr = acp / (1 - acp)
    # Each token goes from T-1 to 0 through the chain, so its jumps' ½ΔSNR add up to ½(SNR(0) - SNR(T-1)).
    torch.testing.assert_close(weights.sum(0), torch.full((40,), float(0.5 * (snr[0] - snr[-1])), dtype=torch.float64))
    assert bool((weights >= 0).all()) and bool((src[0] == 1999).all())


def test_prior_kl_closed_form():
    e = torch.randn(3, 16)
    alpha = 0.3
    var = 1 - alpha
    expected = sum(0.5 * (alpha * float(row.pow(2).sum()) + 16 * var - 16 - 16 * math.log(var)) for row in e)
    assert float(prior_kl(e, alpha)) == pytest.approx(expected, rel=1e-6)


def test_real_network_cost_and_chain_choice(scorer):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=5)
    raw = scorer.score(model, CTX, CONT, scorer.Config(mc_num=20, batch=20), generator=make_generator(2))
    clamped = scorer.score(model, CTX, CONT, scorer.Config(mc_num=20, batch=20, clamped_chain=True),
                           generator=make_generator(2))
    assert math.isfinite(raw.logprob) and raw.logprob < 0 and not raw.is_greedy
    assert raw.nfe == 21 and raw.method == "ard_embedding_nelbo" and raw.logprob != clamped.logprob
    empty = scorer.score(model, CTX, CONT[:0], scorer.Config())
    assert (empty.logprob, empty.nfe) == (0.0, 0)
    with pytest.raises(ValueError, match="mc_num 30 is not a multiple of batch 20"):
        scorer.Config(mc_num=30, batch=20)
