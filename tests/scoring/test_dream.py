"""Dream-v0's likelihood equals DreamLM/Dream eval.py's Monte-Carlo estimate on the same draws."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evo_eval.decoding.base import make_generator
from evo_eval.models.dream import TINY_SHAPE, random_model
from evo_eval.scoring.dream import DreamScorer

MASK, EOS = TINY_SHAPE["mask_token_id"], TINY_SHAPE["eos_token_id"]


def reference_nll(model, prefix, target, *, mc_num, batch_size, eps, generator):
    """eval.py's _eval_target_nll_mc (ftb) with _forward_process and get_logits, re-implemented."""
    seq = torch.cat([prefix, target])[None].repeat(batch_size, 1)
    losses = []
    for _ in range(max(mc_num // batch_size, 1)):
        b, l = seq.shape
        u0 = torch.rand(1, generator=generator, dtype=torch.float32)
        t = (u0 + torch.arange(b).float() / b) % 1
        p_mask = ((1 - eps) * t + eps)[:, None].repeat(1, l)
        mask_indices = torch.rand((b, l), generator=generator) < p_mask
        mask_indices[:, 0] = False
        mask_indices[:, -1] = False
        perturbed_ = torch.where(mask_indices, MASK, seq)
        perturbed = seq.clone()
        perturbed[:, -len(target):] = perturbed_[:, -len(target):]
        mask = perturbed == MASK
        logits = model(perturbed).logits
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        loss = F.cross_entropy(logits[mask], seq[mask], reduction="none") / p_mask[mask]
        losses.append((loss.sum() / batch_size).item())
    return sum(losses) / len(losses)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_equals_the_authors_estimate_on_the_same_draws(dtype):
    model = random_model(TINY_SHAPE, dtype=dtype, device="cpu", seed=4)
    ctx, cont = torch.tensor([510, 20, 31, 42, 7]), torch.tensor([99, 100, 101])
    target = torch.cat([cont, torch.tensor([EOS])])  # _encode_pair appends EOS
    expected = -reference_nll(model, ctx, target, mc_num=16, batch_size=8, eps=1e-3, generator=make_generator(2))
    scorer = DreamScorer()
    out = scorer.score(model, ctx, cont, scorer.Config(mc_num=16, batch=8), generator=make_generator(2))
    assert out.logprob == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert out.nfe == 16 and out.is_greedy is False and out.method == "dream_mc"


def test_more_draws_converge_and_settings_are_checked():
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=4)
    ctx, cont = torch.tensor([510, 20, 31]), torch.tensor([99, 100])
    scorer = DreamScorer()
    a = scorer.score(model, ctx, cont, scorer.Config(mc_num=256, batch=32), generator=make_generator(1))
    b = scorer.score(model, ctx, cont, scorer.Config(mc_num=256, batch=32), generator=make_generator(9))
    assert a.logprob < 0 and abs(a.logprob - b.logprob) < 4 * (a.stderr ** 2 + b.stderr ** 2) ** 0.5
    with pytest.raises(ValueError, match="sampling_eps 1.5 must lie in"):
        scorer.Config(sampling_eps=1.5)


def test_plan_cost_equals_the_rows_the_estimate_scores():
    from evo_eval.scoring.dream import DreamScorer

    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=1)
    scorer = DreamScorer()
    config = scorer.Config.from_dict({"mc_num": 8, "batch": 4})
    out = scorer.score(model, torch.tensor([3, 4, 5]), torch.tensor([6, 7]), config,
                       generator=torch.Generator().manual_seed(0))
    work = scorer.work(config, 3, 2, TINY_SHAPE)
    assert work.calls == 2 and work.nfe == out.nfe == 8
    assert work.positions == 2 * 4 * (3 + 2 + 1)  # the EOS the authors' _encode_pair appends
