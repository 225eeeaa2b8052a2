"""MDLM's NELBO scorer: unbiased on a toy whose exact conditional likelihood is known; exact and
greedy paths; cost accounting; the real tiny DiT."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from evo_eval.decoding.base import make_generator
from evo_eval.models.mdlm import TINY_SHAPE, random_model
from evo_eval.scoring.mdlm import MDLMScorer


class JointToy(torch.nn.Module):
    """A denoiser that returns the exact conditionals p(x_i | visible tokens) of a known joint
    distribution over the continuation (the context is ignored), the optimum MDLM approximates."""

    def __init__(self, length: int, vocab: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.seqs = torch.tensor(list(itertools.product(range(vocab), repeat=length)))
        self.logp = torch.log_softmax(2.0 * torch.randn(len(self.seqs), generator=gen, dtype=torch.float64), 0)
        self.vocab = vocab
        self.mask_token_id = vocab
        self.config = SimpleNamespace(time_conditioning=False, model_length=64)
        self.calls = 0

    def denoiser_logits(self, ids, *, start=0, sigma=None):
        self.calls += ids.shape[0]
        x = ids[:, start:]
        visible = x != self.mask_token_id
        consistent = ((self.seqs[None] == x[:, None]) | ~visible[:, None]).all(-1)  # (S, N)
        weights = self.logp.exp()[None] * consistent
        onehot = torch.nn.functional.one_hot(self.seqs, self.vocab + 1).double()  # (N, m, V+1)
        logits = torch.einsum("sn,nmv->smv", weights, onehot).log().float()
        logits[..., self.mask_token_id] = float("-inf")
        return logits

    def exact(self, continuation: torch.Tensor) -> float:
        index = int((self.seqs == continuation).all(-1).nonzero()[0, 0])
        return float(self.logp[index])


@pytest.fixture(scope="module")
def scorer():
    return MDLMScorer()


@pytest.mark.parametrize("continuation", [[0, 2, 1], [2, 2, 0], [1, 0, 1]])
def test_unbiased_on_exact_conditionals(scorer, continuation):
    toy = JointToy(length=3, vocab=3, seed=7)
    context, cont = torch.tensor([1, 0, 2]), torch.tensor(continuation)
    # noise_eps = 0 masks everything at t = 1, so the expectation is log p exactly (sampling_eps's
    # truncation of the time integral moves it by O(1e-3) nats, far inside the tolerance). The 1/t
    # weight gives the samples a heavy tail, hence many of them.
    config = scorer.Config(mc_num=20000, batch=5000, noise_eps=0.0)
    out = scorer.score(toy, context, cont, config, generator=make_generator(11))
    exact = toy.exact(cont)
    assert 0 < out.stderr < 0.08
    assert abs(out.logprob - exact) < 4 * out.stderr, (out.logprob, exact, out.stderr)


def test_single_token_is_exact_in_one_forward(scorer):
    toy = JointToy(length=1, vocab=5, seed=2)
    out = scorer.score(toy, torch.tensor([3, 1]), torch.tensor([4]), scorer.Config(mc_num=64), generator=make_generator(0))
    assert out.logprob == pytest.approx(toy.exact(torch.tensor([4])), abs=1e-6)
    assert out.stderr == 0.0 and out.nfe == 1 and toy.calls == 1
    best = int(toy.logp.argmax())
    assert scorer.score(toy, torch.tensor([3]), torch.tensor([best]), scorer.Config()).is_greedy
    assert not scorer.score(toy, torch.tensor([3]), torch.tensor([(best + 1) % 5]), scorer.Config()).is_greedy


def test_cost_counts_evaluated_samples_only(scorer):
    toy = JointToy(length=3, vocab=2, seed=1)
    out = scorer.score(toy, torch.tensor([0]), torch.tensor([1, 1, 0]), scorer.Config(mc_num=50, batch=7),
                       generator=make_generator(4))
    # One greedy forward, then one per sample that masked something: a sample masks nothing with
    # probability E[(1 - t)^3] = 1/4, so about 1 + 50 * 3/4 = 38.5 sequences are evaluated.
    assert toy.calls == out.nfe
    assert 28 <= out.nfe <= 49


def test_same_seed_same_estimate_and_context_matters_on_the_dit(scorer):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=2)
    context, cont = torch.tensor([5, 9, 77, 300]), torch.tensor([12, 40, 8, 3, 99])
    config = scorer.Config(mc_num=24, batch=8)
    a = scorer.score(model, context, cont, config, generator=make_generator(9))
    b = scorer.score(model, context, cont, config, generator=make_generator(9))
    c = scorer.score(model, torch.tensor([6, 9, 77, 301]), cont, config, generator=make_generator(9))
    assert a.logprob == b.logprob and a.stderr == b.stderr
    assert a.logprob != c.logprob  # the unmasked context reaches the continuation through attention
    assert a.method == "mdlm_nelbo" and a.logprob < 0
    # Each masked token costs at most its own -log(1/V) scaled by 1/t; the bound is loose but finite.
    assert math.isfinite(a.logprob)
