"""BD3-LM's NELBO scorer: unbiased on a block-structured toy with exact conditionals, exact for
single-token blocks, equal to the AR chain rule at block size 1 on the real DiT."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

from evo_eval.decoding.base import make_generator
from evo_eval.models.bd3lm import TINY_SHAPE, random_model
from evo_eval.scoring.bd3lm import BD3LMScorer


class BlockJointToy(torch.nn.Module):
    """Exact block conditionals of a known joint over whole sequences: a noisy position of block b
    sees the clean tokens before block b and the unmasked tokens of its own block, nothing else,
    as the block-diff mask allows; everything hidden is marginalised out."""

    def __init__(self, length: int, vocab: int, block_size: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.seqs = torch.tensor(list(itertools.product(range(vocab), repeat=length)))
        self.logp = torch.log_softmax(1.5 * torch.randn(len(self.seqs), generator=gen, dtype=torch.float64), 0)
        self.vocab, self.block_size, self.mask_token_id = vocab, block_size, vocab
        self.config = SimpleNamespace(time_conditioning=False, model_length=64)
        self.calls = 0

    def nelbo_prefix(self, clean):
        return None  # nothing to share: every call recomputes from the joint

    def nelbo_logits(self, noisy, clean, noisy_start, *, prefix=None):
        self.calls += noisy.shape[0]
        s, ln = noisy.shape
        clean = clean.expand(s, -1)
        out = torch.full((s, ln, self.vocab + 1), float("-inf"))
        for b0 in range(0, ln, self.block_size):
            start = noisy_start + b0
            block = noisy[:, b0:b0 + self.block_size]
            seen = (self.seqs[None, :, :start] == clean[:, None, :start]).all(-1)
            own = self.seqs[None, :, start:start + block.shape[1]]
            seen &= ((own == block[:, None]) | (block[:, None] == self.mask_token_id)).all(-1)
            weights = self.logp.exp()[None] * seen
            onehot = torch.nn.functional.one_hot(self.seqs[:, start:start + block.shape[1]], self.vocab + 1).double()
            out[:, b0:b0 + block.shape[1]] = torch.einsum("sn,nmv->smv", weights, onehot).log().float()
        out[..., self.mask_token_id] = float("-inf")
        return out

    def exact(self, context: torch.Tensor, continuation: torch.Tensor) -> float:
        p = context.numel()
        with_context = (self.seqs[:, :p] == context).all(-1)
        full = with_context & (self.seqs[:, p:] == continuation).all(-1)
        return float(torch.logsumexp(self.logp[full], 0) - torch.logsumexp(self.logp[with_context], 0))


@pytest.fixture(scope="module")
def scorer():
    return BD3LMScorer()


@pytest.mark.parametrize("context,continuation", [([1, 0, 1], [0, 1, 1, 1]), ([1, 1], [1, 0, 0, 0, 1])])
def test_unbiased_on_exact_block_conditionals(scorer, context, continuation):
    # block size 2: the first example's context ends inside a block, which the continuation shares.
    context, cont = torch.tensor(context), torch.tensor(continuation)
    toy = BlockJointToy(length=context.numel() + cont.numel(), vocab=2, block_size=2, seed=4)
    out = scorer.score(toy, context, cont, scorer.Config(mc_num=6000, batch=6000), generator=make_generator(2))
    exact = toy.exact(context, cont)
    assert 0 < out.stderr < 0.12  # the 1/t weight gives the samples a heavy tail
    assert abs(out.logprob - exact) < 4 * out.stderr, (out.logprob, exact, out.stderr)


def test_one_token_per_block_is_exact(scorer):
    toy = BlockJointToy(length=5, vocab=3, block_size=1, seed=9)
    context, cont = torch.tensor([2, 1]), torch.tensor([0, 2, 2])
    out = scorer.score(toy, context, cont, scorer.Config(mc_num=64), generator=make_generator(0))
    assert out.logprob == pytest.approx(toy.exact(context, cont), abs=1e-6)
    assert out.stderr == 0.0 and out.nfe == 1 and toy.calls == 1


def test_block_size_one_dit_equals_the_autoregressive_chain_rule(scorer):
    """At block size 1 the block-causal forward is an AR model's; the scorer must give its chain rule."""
    model = random_model(dict(TINY_SHAPE, block_size=1), dtype=torch.float32, device="cpu", seed=3)
    context, cont = torch.tensor([4, 80, 17]), torch.tensor([9, 301, 44, 6])
    ids = torch.cat((context, cont))
    chain = 0.0
    for i in range(context.numel(), ids.numel()):  # position i masked, everything before it clean
        probe = ids[: i + 1].clone()
        probe[i] = model.mask_token_id
        chain += float(torch.log_softmax(model.block_logits(probe[None])[0, -1], -1)[ids[i]])
    out = scorer.score(model, context, cont, scorer.Config(mc_num=8))
    assert out.logprob == pytest.approx(chain, abs=1e-4)
    assert out.nfe == 1


def test_greedy_and_seeded_on_the_dit(scorer):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=5)
    context, cont = torch.tensor([3, 14, 15, 92, 65]), torch.tensor([35, 89, 79, 32, 38, 46])
    config = scorer.Config(mc_num=16, batch=5)
    a = scorer.score(model, context, cont, config, generator=make_generator(1))
    b = scorer.score(model, context, cont, config, generator=make_generator(1))
    assert (a.logprob, a.stderr) == (b.logprob, b.stderr) and a.method == "bd3lm_nelbo"
    # Greedy, block by block: each block's argmax with the continuation masked and the blocks
    # before it clean and greedy; the scorer must accept that continuation and reject another.
    p, size = context.numel(), model.block_size
    noisy_start, ids = (p // size) * size, torch.cat((context, torch.zeros(6, dtype=torch.long)))
    masked = ids[None, noisy_start:].clone()
    masked[:, p - noisy_start:] = model.mask_token_id
    for block in range(noisy_start, ids.numel(), size):
        logits = model.nelbo_logits(masked, ids[None, :block], noisy_start)[0, block - noisy_start:block - noisy_start + size]
        ids[max(block, p):block + size] = logits.argmax(-1)[max(block, p) - block:]
    greedy = ids[p:]
    assert scorer.score(model, context, greedy, config).is_greedy
    assert not scorer.score(model, context, (greedy + 1) % 500, config).is_greedy
