"""LLaDA's Monte-Carlo ELBO: unbiased where the answer is known, exact for one token, stratified as published."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from evo_eval.decoding.base import make_generator
from evo_eval.models.llada import TINY_SHAPE, random_model
from evo_eval.scoring.llada import LLaDAScorer, random_masks, reference_counts, stratified_counts

MASK = 511


class ContextFree(torch.nn.Module):
    """Predictions depend on the position only, so the ELBO equals the exact log-likelihood."""

    def __init__(self, length: int, vocab: int = 7, seed: int = 0):
        super().__init__()
        self.config = SimpleNamespace(mask_token_id=MASK)
        self.table = torch.randn(length, vocab, generator=make_generator(seed)) * 2
        self.rows_seen = 0

    def denoise(self, ids, rows=None, *, cache=None, start=0):
        self.rows_seen += ids.shape[0]
        logits = self.table[:ids.shape[1]].expand(ids.shape[0], -1, -1)
        return logits if rows is None else logits[:, rows]


@pytest.fixture(scope="module")
def scorer():
    return LLaDAScorer()


def test_unbiased_where_the_elbo_is_the_likelihood(scorer):
    ctx, cont = torch.tensor([1, 2, 3]), torch.tensor([4, 0, 6, 2, 5])
    model = ContextFree(8)
    exact = float(torch.log_softmax(model.table[3:], -1).gather(-1, cont[:, None]).sum())
    out = scorer.score(model, ctx, cont, scorer.Config(mc_num=400, batch=40), generator=make_generator(3))
    assert out.stderr > 0 and abs(out.logprob - exact) < 4 * out.stderr
    assert out.nfe == 400 and model.rows_seen == 400 and out.method == "llada_mc_elbo"


def test_unbiased_for_a_real_network_against_the_enumerated_elbo(scorer):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=5)
    ctx, cont = torch.tensor([10, 20, 30, 40]), torch.tensor([7, 8, 9])
    length = cont.numel()
    # ELBO = E_l E_subset [(L/l) Σ_masked log p]: every l in 1..L equally likely, every subset of size l.
    exact = 0.0
    for l in range(1, length + 1):
        subsets = list(itertools.combinations(range(length), l))
        for subset in subsets:
            ids = torch.cat([ctx, cont])[None].clone()
            ids[0, [4 + i for i in subset]] = MASK
            logp = torch.log_softmax(model.denoise(ids, slice(4, 7))[0], -1)
            exact += (length / l) * float(sum(logp[i, cont[i]] for i in subset)) / (len(subsets) * length)
    out = scorer.score(model, ctx, cont, scorer.Config(mc_num=120, batch=30), generator=make_generator(1))
    assert abs(out.logprob - exact) < 4 * out.stderr


def test_one_token_answers_are_exact_in_one_forward(scorer):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=6)
    ctx, cont = torch.tensor([11, 12, 13]), torch.tensor([42])
    masked = torch.tensor([[11, 12, 13, MASK]])
    logits = model.denoise(masked, slice(3, 4))[0, 0]
    out = scorer.score(model, ctx, cont, scorer.Config(mc_num=128, batch=8), generator=make_generator(0))
    assert out.nfe == 1 and out.stderr == 0.0
    assert out.logprob == pytest.approx(float(torch.log_softmax(logits, -1)[42]), abs=1e-6)
    assert out.is_greedy is False  # check_greedy off: False, as eval_llada.py returns
    checked = scorer.score(model, ctx, cont, scorer.Config(mc_num=128, batch=8, check_greedy=True))
    assert checked.is_greedy == (int(logits.argmax()) == 42) and checked.nfe == 1
    # Guided: un + (cfg + 1)(cond - un), the unconditional row with the prompt masked.
    un = model.denoise(torch.full((1, 4), MASK), slice(3, 4))[0, 0]
    guided = un + 1.5 * (logits - un)
    out = scorer.score(model, ctx, cont, scorer.Config(mc_num=128, batch=8, cfg=0.5))
    assert out.nfe == 2 and out.logprob == pytest.approx(float(torch.log_softmax(guided, -1)[42]), abs=1e-5)


def test_draws_are_stratified_as_published():
    gen = make_generator(0)
    for _ in range(20):
        counts = stratified_counts(5, 5, gen, "cpu")
        assert sorted(counts.tolist()) == [1, 2, 3, 4, 5]  # one row per masked-token count
        spaced = stratified_counts(8, 4, gen, "cpu")  # four rows over 8: every other count, random start
        assert len(set(spaced.tolist())) == 4 and {int(c - spaced[0]) % 8 for c in spaced} == {0, 2, 4, 6}
    masks = random_masks(torch.tensor([1, 3, 5]), 5, gen)
    assert masks.sum(1).tolist() == [1, 3, 5]
    # Subsets are uniform: each position is masked in a single-token draw about equally often.
    singles = random_masks(torch.ones(5000, dtype=torch.long), 5, gen).double().mean(0)
    assert torch.all((singles - 0.2).abs() < 4 * math.sqrt(0.2 * 0.8 / 5000))


def test_greedy_check_commits_the_most_confident_token_each_forward(scorer):
    model = ContextFree(6)
    ctx = torch.tensor([1, 2])
    best = model.table[2:].argmax(-1)
    config = scorer.Config(mc_num=8, batch=8, check_greedy=True)
    assert scorer.score(model, ctx, best, config).is_greedy
    other = best.clone()
    other[1] = (other[1] + 1) % 7
    out = scorer.score(model, ctx, other, config)
    assert not out.is_greedy and out.nfe == 8 + 4
    assert not scorer.score(model, ctx, best, scorer.Config(mc_num=8, batch=8)).is_greedy  # not computed


def test_settings_are_checked():
    with pytest.raises(ValueError, match="mc_num 100 is not a multiple of batch 8"):
        LLaDAScorer.Config(mc_num=100, batch=8)
    assert LLaDAScorer.Config.from_dict({"mc_num": "16", "batch": "4", "mask_token_id": "3"}).mask_token_id == 3


def test_one_token_is_greedy_only_when_checked(scorer):
    """Item 5: a one-token answer the network predicts is still not 'greedy' with check_greedy off."""
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=6)
    ctx = torch.tensor([11, 12, 13])
    best = model.denoise(torch.tensor([[11, 12, 13, MASK]]), slice(3, 4))[0, 0].argmax()[None]
    assert scorer.score(model, ctx, best, scorer.Config(mc_num=8, batch=8)).is_greedy is False
    assert scorer.score(model, ctx, best, scorer.Config(mc_num=8, batch=8, check_greedy=True)).is_greedy is True


def test_reference_counts_round_half_to_even_and_the_uniform_draw_is_exact():
    """Item 6: the published draw is kept (P(l = 2) = 0.625 for L = 2, batch 8, enumerated over its
    offset k); ``mask_counts: uniform`` makes every count equally likely."""
    draws = torch.cat([reference_counts(k, 2, 8) for k in (1, 2)])
    assert float((draws == 2).double().mean()) == 0.625
    assert reference_counts(1, 2, 8).tolist() == [1, 1, 2, 2, 2, 2, 2, 1]  # 1.5 -> 2, 2.5 -> 2 (half to even)
    gen = make_generator(0)
    for _ in range(50):  # batch a multiple of L: each count exactly b / L times in every batch
        assert torch.bincount(stratified_counts(2, 8, gen, "cpu", "uniform"), minlength=3)[1:].tolist() == [4, 4]
    many = torch.cat([stratified_counts(3, 8, gen, "cpu", "uniform") for _ in range(3000)])
    freq = torch.bincount(many, minlength=4)[1:].double() / many.numel()
    assert many.min() >= 1 and many.max() <= 3
    assert torch.all((freq - 1 / 3).abs() < 4 * math.sqrt((1 / 3) * (2 / 3) / 3000))
    with pytest.raises(ValueError, match="mask_counts 'biased' is not one of"):
        LLaDAScorer.Config(mask_counts="biased")


def test_the_scorer_draws_the_counts_it_is_told(scorer):
    """With L = 2 and batch 8, mask_counts=uniform masks one token in exactly four rows of every
    forward; the reference draw masks two tokens in five rows of some forwards (round half to even)."""
    class Counting(ContextFree):
        def denoise(self, ids, rows=None, *, cache=None, start=0):
            self.seen.append(sorted((ids[:, 2:] == MASK).sum(1).tolist()))
            return super().denoise(ids, rows)

    ctx, cont = torch.tensor([1, 2]), torch.tensor([3, 5])
    for draw, allowed in (("uniform", {(4, 4)}), ("reference", {(3, 5)})):
        model = Counting(4, seed=2)
        model.seen = []
        scorer.score(model, ctx, cont, scorer.Config(mc_num=64, batch=8, mask_counts=draw), generator=make_generator(5))
        assert {(row.count(1), row.count(2)) for row in model.seen} == allowed
