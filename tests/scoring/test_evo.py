"""Evo's likelihood: the ELBO's Monte-Carlo estimate is unbiased and seeded; the AR limit is exact."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from evo_eval.decoding.base import make_generator
from evo_eval.models.evo import TINY_SHAPE, random_model
from evo_eval.scoring.ar import ar_logprob
from evo_eval.scoring.evo import EvoScorer, EvoScorerConfig, _prior_kl, block_starts, log_snr, time_of

CONTEXT = torch.tensor([0, 44, 301, 7])
CONTINUATION = torch.tensor([12, 150, 9, 61, 3])

class ShrinkingDenoiser:
    """A stand-in network whose clean estimate is c·z0 at every noise level, so the diffusion term
    has the closed form 1/2·(1 - c)²·|z0|²·(SNR(t_min) - SNR(t_max)); its readout is fixed logits."""

    def __init__(self, c: float, vocab: int = 16, d: int = 8):
        gen = torch.Generator().manual_seed(0)
        self.table = torch.randn(vocab, d, generator=gen)
        self.logits = torch.randn(vocab, generator=gen)
        self.c = c
        self.z0 = None

    def clean_latents(self, ids):
        self.z0 = self.table[ids]
        return self.z0

    def encode_prefix(self, ids):
        return None

    def latent_forward(self, clean, z, t, positions, starts, time_conditioning=True, prefix=None):
        logits = self.logits.expand(z.shape[0], z.shape[1], -1)
        return None, SimpleNamespace(logits=logits)

    def expected_latent(self, logits):
        return (self.c * self.z0).expand(logits.shape[0], -1, -1)


def _closed_form(model: ShrinkingDenoiser, cont, config) -> float:
    z0 = model.table[cont]
    snr = lambda t: 1.0 / math.tan(math.pi * t / 2) ** 2  # noqa: E731
    diffusion = 0.5 * (1 - model.c) ** 2 * float(z0.pow(2).sum()) * (snr(config.t_min) - snr(config.t_max))
    recon = -float(torch.log_softmax(model.logits, -1)[cont].sum())
    return -(diffusion + recon + float(_prior_kl(z0, config.t_max)))


def test_the_diffusion_term_is_unbiased_against_its_closed_form():
    model, cont = ShrinkingDenoiser(0.9), torch.tensor([1, 5, 7])
    config = EvoScorerConfig(mc_num=4, batch=5)
    exact = _closed_form(model, cont, config)
    estimates = [EvoScorer().score(model, torch.tensor([0]), cont, config, generator=make_generator(s)).logprob
                 for s in range(200)]
    mean = sum(estimates) / len(estimates)
    spread = (sum((e - mean) ** 2 for e in estimates) / (len(estimates) - 1)) ** 0.5 / len(estimates) ** 0.5
    assert abs(mean - exact) < 4 * spread
    fine = EvoScorer().score(model, torch.tensor([0]), cont, EvoScorerConfig(mc_num=4000, batch=4001),
                             generator=make_generator(0))
    assert fine.logprob == pytest.approx(exact, rel=0.01)


def test_the_prior_term_is_the_gaussian_kl():
    z0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    a, s = math.cos(math.pi * 0.9 / 2), math.sin(math.pi * 0.9 / 2)
    q = torch.distributions.Normal(a * z0, s)
    p = torch.distributions.Normal(torch.zeros_like(z0), 1.0)
    assert float(_prior_kl(z0, 0.9)) == pytest.approx(float(torch.distributions.kl_divergence(q, p).sum()), rel=1e-5)


def test_log_snr_and_its_inverse_and_block_layout():
    t = torch.tensor([0.05, 0.3, 0.5, 0.9])
    assert torch.allclose(time_of(log_snr(t)), t, atol=1e-6)
    assert float(log_snr(torch.tensor(0.5))) == pytest.approx(0.0, abs=1e-6)
    assert block_starts(10, 7, 3, "cpu").tolist() == [10, 10, 10, 13, 13, 13, 16]


@pytest.fixture(scope="module")
def model():
    return random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=7)


def test_ar_estimator_is_the_exact_ar_limit(model):
    out = EvoScorer().score(model, CONTEXT, CONTINUATION, EvoScorerConfig(estimator="ar"))
    assert out.method == "evo_ar_limit" and out.nfe == 1 and out.stderr is None
    assert out.logprob == pytest.approx(ar_logprob(model, CONTEXT, CONTINUATION)[0])


def test_elbo_is_seeded_costs_what_it_says_and_reports_its_error(model):
    config = EvoScorerConfig(mc_num=6, batch=4, block_length=2)
    score = lambda seed: EvoScorer().score(model, CONTEXT, CONTINUATION, config,  # noqa: E731
                                           generator=make_generator(seed))
    a, b, c = score(1), score(1), score(2)
    assert a.method == "evo_elbo" and a.nfe == 1 + 2 and a.stderr > 0  # the context once, 7 levels by 4
    assert a.logprob == b.logprob and a.logprob != c.logprob
    assert a.logprob < 0
    with pytest.raises(ValueError, match="unknown Evo likelihood estimator"):
        EvoScorer().score(model, CONTEXT, CONTINUATION, EvoScorerConfig(estimator="exact"))


def test_time_conditioning_switch_changes_the_elbo(model):
    on = EvoScorer().score(model, CONTEXT, CONTINUATION, EvoScorerConfig(mc_num=4), generator=make_generator(0))
    off = EvoScorer().score(model, CONTEXT, CONTINUATION, EvoScorerConfig(mc_num=4, time_conditioning=False),
                            generator=make_generator(0))
    assert on.logprob != off.logprob


def test_the_elbo_scores_the_whole_continuation_as_one_canvas_by_default(model):
    assert EvoScorerConfig().block_length == 0
    assert block_starts(10, 7, 0, "cpu").tolist() == [10] * 7
    # One canvas: the last latent reaches the first one's readout (full attention); blocks of 2 cut it off.
    p, n = CONTEXT.numel(), CONTINUATION.numel()
    z = torch.randn(1, n, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    t = torch.full((1, n), 0.5)
    moved = z.clone()
    moved[0, -1] += 3.0
    positions = torch.arange(p, p + n)
    for block, changes in ((0, True), (2, False)):
        starts = block_starts(p, n, block, "cpu")
        with torch.no_grad():
            a = model.latent_forward(CONTINUATION[None], z, t, positions, starts, prefix=model.encode_prefix(CONTEXT))[1]
            b = model.latent_forward(CONTINUATION[None], moved, t, positions, starts,
                                     prefix=model.encode_prefix(CONTEXT))[1]
        assert (not torch.allclose(a.logits[0, 0], b.logits[0, 0], atol=1e-5)) is changes
    whole = EvoScorer().score(model, CONTEXT, CONTINUATION, EvoScorerConfig(mc_num=4), generator=make_generator(0))
    blocks = EvoScorer().score(model, CONTEXT, CONTINUATION, EvoScorerConfig(mc_num=4, block_length=2),
                               generator=make_generator(0))
    assert whole.logprob != blocks.logprob
