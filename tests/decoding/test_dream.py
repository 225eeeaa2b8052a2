"""Dream-v0's sampler token-equal to its authors' ``_sample`` on a tiny DreamModel, in float32 and bf16.

The reference below re-implements, from reading it, Dream's ``generation_utils.py`` (``_sample``,
``sample_tokens``, top-p / top-k) for one unpadded request: ``model(x).logits`` shifted right by one,
the grid ``linspace(1, eps, steps + 1)``, every algorithm's confidence and transfer count, topk over
the whole canvas. Its random draws use the same generator in the same order (``Categorical.sample``
is ``torch.multinomial`` of the renormalised probabilities).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evo_eval.decoding import get_sampler
from evo_eval.decoding.base import make_generator
from evo_eval.models.dream import TINY_SHAPE, random_model

MASK = TINY_SHAPE["mask_token_id"]


def _sample_tokens(logits, temperature, top_p, top_k, generator, margin=False, neg_entropy=False):
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        sorted_logits, sorted_indices = torch.sort(logits, descending=True)
        remove = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1) > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = 0
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_indices, remove)
        logits = logits.masked_fill(drop, torch.finfo(logits.dtype).min)
    if top_k is not None:
        logits = logits.masked_fill(logits < torch.topk(logits, top_k)[0][..., -1, None], torch.finfo(logits.dtype).min)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        normalised = probs / probs.sum(-1, keepdim=True)  # torch.distributions.Categorical(probs=...)
        x0 = torch.multinomial(normalised, 1, True, generator=generator).T[0]
        confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if margin:
        ordered = torch.sort(probs, dim=-1, descending=True)[0]
        confidence = ordered[:, 0] - ordered[:, 1]
    if neg_entropy:
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, x0


def reference_sample(model, prompt, max_new_tokens, *, steps, eps=1e-3, alg, alg_temp=None, temperature=0.0,
                     top_p=None, top_k=None, generator=None):
    x = F.pad(prompt[None], (0, max_new_tokens), value=MASK)
    timesteps = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
        mask_index = x == MASK
        logits = model(x).logits
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        mask_logits = logits[mask_index]
        t, s = timesteps[i], timesteps[i + 1]
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1
            x0 = torch.zeros_like(x[mask_index], dtype=torch.long) + MASK
            transfer = torch.rand(*x0.shape, generator=generator) < p_transfer
            _, x0[transfer] = _sample_tokens(mask_logits[transfer], temperature, top_p, top_k, generator)
            x[mask_index] = x0.clone()
            continue
        confidence, x0 = _sample_tokens(mask_logits, temperature, top_p, top_k, generator,
                                        margin=alg == "topk_margin", neg_entropy=alg == "entropy")
        num_mask_token = mask_index.sum() / mask_index.shape[0]
        number = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
        full_confidence = torch.full_like(x, -torch.inf, dtype=logits.dtype)
        full_confidence[mask_index] = confidence
        if number > 0:
            if alg_temp is None or alg_temp == 0:
                _, transfer_index = torch.topk(full_confidence, number)
            else:
                full_confidence = F.softmax(full_confidence / alg_temp, dim=-1)
                transfer_index = torch.multinomial(full_confidence, num_samples=number, generator=generator)
            x_ = torch.zeros_like(x, dtype=torch.long) + MASK
            x_[mask_index] = x0.clone()
            rows = torch.arange(x.size(0)).unsqueeze(1).expand_as(transfer_index)
            x[rows, transfer_index] = x_[rows, transfer_index]
    return x[0, prompt.numel():]


@pytest.fixture(scope="module")
def sampler():
    return get_sampler("dream")


CASES = [
    dict(alg="entropy", steps=12),  # eval.py's default, one token per step
    dict(alg="maskgit_plus", steps=5),
    dict(alg="topk_margin", steps=4),
    dict(alg="entropy", steps=6, temperature=0.2, top_p=0.95),  # eval_dream_gen.sh's MBPP setting
    dict(alg="origin", steps=6, temperature=1.0, top_k=50),
    dict(alg="origin", steps=3),
    dict(alg="maskgit_plus", steps=6, alg_temp=0.5, temperature=0.7),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_equals_the_authors_sample_on_the_same_draws(sampler, dtype, case):
    model = random_model(TINY_SHAPE, dtype=dtype, device="cpu", seed=3)
    gen = make_generator(7)
    for _ in range(1):
        prompt = torch.randint(0, 500, (6,), generator=gen)
        expected = reference_sample(model, prompt, 12, generator=make_generator(11), **case)
        settings = dict(case)
        settings["top_p"] = settings.get("top_p") or 1.0
        settings["top_k"] = settings.get("top_k") or 0
        out = sampler.sample(model, prompt, sampler.Config(max_new_tokens=12, eos_token_id=None, **settings),
                             generator=make_generator(11))
        assert out.tokens.tolist() == expected.tolist()
        assert out.stats.nfe == case["steps"] and MASK not in out.tokens.tolist()


def test_settings_are_checked(sampler):
    assert sampler.Config().alg == "entropy" and sampler.Config().steps == 0
    with pytest.raises(ValueError, match="alg 'greedy' is not one of"):
        sampler.Config(alg="greedy")
    with pytest.raises(ValueError, match="top_p 0.0 must lie in"):
        sampler.Config(top_p=0.0)
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=3)
    with pytest.raises(ValueError, match="exceeds the model's 2048 positions"):
        sampler.sample(model, torch.zeros(2040, dtype=torch.long), sampler.Config(max_new_tokens=10))


@pytest.mark.parametrize("steps", [0, 3])
def test_plan_cost_equals_the_forwards_a_request_makes(steps):
    """``work`` (what ``evo-eval plan`` counts) is the sampler's own count: every step one forward
    over prompt + canvas, however early the answer settles."""
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=3)
    sampler = get_sampler("dream")
    config = sampler.Config.from_dict({"max_new_tokens": 6, "steps": steps, "eos_token_id": TINY_SHAPE["eos_token_id"]})
    prompt = torch.tensor([5, 6, 7, 8, 9])
    out = sampler.sample(model, prompt, config, generator=make_generator(0, "cpu"))
    work = sampler.work(config, prompt.numel(), TINY_SHAPE)
    assert work.exact and work.nfe == work.calls == out.stats.nfe == (steps or 6)
    assert work.positions == out.stats.active_token_steps == (steps or 6) * (5 + 6)
