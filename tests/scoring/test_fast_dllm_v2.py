"""Fast-dLLM v2's likelihood equals its authors' ``get_loglikelihood`` (NVlabs/Fast-dLLM ``v2/eval.py``)
on a tiny model, in float32 and bf16: re-implemented below from reading it (the continuation's first
token masked, [MASK] padding to the next block with EOS first, shifted logits, cross-entropy over the
masked positions with the padding's targets ignored)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evo_eval.models.fast_dllm_v2 import TINY_SHAPE, random_model
from evo_eval.scoring.fast_dllm_v2 import FastDLLMv2Scorer

MASK, EOS = TINY_SHAPE["mask_token_id"], TINY_SHAPE["eos_token_id"]


@torch.no_grad()
def reference_loglikelihood(model, prefix, target, bd_size=32):
    seq = torch.cat([prefix, target])[None]
    l = seq.shape[1]
    batch = seq.clone()
    batch[:, len(prefix)] = MASK
    batch = torch.cat([batch, torch.full((1, bd_size - l % bd_size), MASK, dtype=torch.long)], dim=1)
    if batch.shape[1] > l:
        batch[:, l] = EOS
    mask_indices = batch == MASK
    logits = model(batch).logits
    logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)[:, :batch.shape[1]]
    seq = torch.cat([seq, torch.full((1, bd_size - l % bd_size), -100, dtype=torch.long)], dim=1)
    return -F.cross_entropy(logits[mask_indices], seq[mask_indices], reduction="none").sum().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("lengths", [(5, 1), (20, 7), (31, 1), (40, 24), (0, 3)])
def test_equals_the_authors_get_loglikelihood(dtype, lengths):
    model = random_model(TINY_SHAPE, dtype=dtype, device="cpu", seed=5)
    gen = torch.Generator().manual_seed(sum(lengths))
    ctx = torch.randint(0, 500, (lengths[0],), generator=gen)
    cont = torch.randint(0, 500, (lengths[1],), generator=gen)
    scorer = FastDLLMv2Scorer()
    out = scorer.score(model, ctx, cont, scorer.Config())
    assert out.logprob == reference_loglikelihood(model, ctx, cont)
    assert out.nfe == 1 and out.is_greedy is False and out.logprob < 0


def test_it_is_the_first_tokens_log_probability_given_the_rest():
    """A direct computation: the log-softmax at the position before the first continuation token, with
    that token masked, the rest visible, EOS then [MASK] to the block's end."""
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=5)
    ctx, cont = torch.tensor([3, 4, 5, 6]), torch.tensor([7, 8, 9])
    scorer = FastDLLMv2Scorer()
    x = torch.tensor([3, 4, 5, 6, MASK, 8, 9, EOS] + [MASK] * 24)
    with torch.no_grad():
        direct = torch.log_softmax(model(x[None]).logits[0, 3], -1)[7].item()
    assert scorer.score(model, ctx, cont, scorer.Config()).logprob == pytest.approx(direct, abs=1e-6)
    # the later continuation tokens are context here: changing one changes the score
    other = scorer.score(model, ctx, torch.tensor([7, 8, 10]), scorer.Config()).logprob
    assert other != pytest.approx(direct, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_one_token_options_share_one_forward(dtype):
    model = random_model(TINY_SHAPE, dtype=dtype, device="cpu", seed=5)
    ctx, options = torch.randint(0, 500, (37,), generator=torch.Generator().manual_seed(1)), torch.tensor([11, 12, 13, 14])
    scorer = FastDLLMv2Scorer()
    shared = scorer.score_choices(model, ctx, options, scorer.Config())
    alone = [scorer.score(model, ctx, options[i:i + 1], scorer.Config()) for i in range(4)]
    assert [s.logprob for s in shared] == [a.logprob for a in alone]
    assert [s.nfe for s in shared] == [1, 0, 0, 0]
    work = scorer.work(scorer.Config(), 37, 1, TINY_SHAPE)
    assert work.exact and work.nfe == 1 and work.positions == 64
