"""BD3-LM's NELBO as a conditional log-likelihood, one ``x_t ⊕ x_0`` forward per Monte-Carlo sample.

Facts from kuleshov-group/bd3lms ``diffusion.py`` (``_sample_t``, ``q_xt``, ``_forward_pass_diffusion``,
``_check_val_sampling_intvl``) and ``noise_schedule.py`` (``LogLinearNoise``), read, not copied
(mirror: zhihanyang2022/bd3lms):

* log p(x) = sum over blocks of log p(x^b | x^{<b}), each bounded by a masked-diffusion NELBO; one
  forward over the noisy copy x_t and the clean copy x_0 under the block-diff mask gives every
  block's denoiser at once (``models/bd3lm.py``);
* t is drawn per block, antithetically across batch and blocks, in a clipped interval
  [t_min, t_max]; a token is masked with probability t (log-linear move chance) and a masked
  token's loss is ``-log p_theta(x_0 | x_t) / t``;
* the authors report the NELBO with the interval [1e-3, 1] (the only clip they accept as a valid
  bound; a trained checkpoint's learned ``sampling_eps_min/max`` clip lowers training variance but
  biases the estimate). ``t_min``/``t_max`` default to that interval; pass a checkpoint's clip to
  reproduce its training loss instead.

Cost: the clean copy attends only to clean blocks, so its keys/values are computed once per
request (``nelbo_prefix``) and every draw runs only its noisy blocks against them -- the same
numbers as the authors' full forward at a fraction of the cost for long few-shot contexts.

Conditioning: the context is never masked. Blocks that hold only context are clean and appear only
in x_0; a block straddling the boundary keeps its context tokens clean inside x_t, exactly like the
tokens a block has already unmasked during sampling. A block holding a single continuation token
is scored exactly (t = 1: masked with weight 1), which makes block_size 1 the exact autoregressive
log-likelihood in one forward, as the authors evaluate it. ``is_greedy``: the argmax at every
continuation position with all of them masked and earlier blocks clean (one extra forward).
``nfe`` counts x_t ⊕ x_0 sequences evaluated (the shared clean prefix rides with the first);
``stderr`` is the sample standard deviation over sqrt(mc_num).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import math

from ..work import Work, causal_pairs
from .base import Scorer, ScoreOutput, ScorerConfig
from .mdlm import stratified_times, summarize, target_logprobs


@dataclass
class BD3LMScoringConfig(ScorerConfig):
    mc_num: int = 128
    batch: int = 16
    t_min: float = 1e-3  # the authors' NELBO interval (_check_val_sampling_intvl)
    t_max: float = 1.0

    def __post_init__(self):
        if self.mc_num < 1 or self.batch < 1:
            raise ValueError(f"mc_num and batch must be positive, got {self.mc_num} and {self.batch}")
        if not 0.0 < self.t_min <= self.t_max <= 1.0:
            raise ValueError(f"need 0 < t_min <= t_max <= 1, got {self.t_min} and {self.t_max}")


class BD3LMScorer(Scorer):
    method = "bd3lm_nelbo"
    Config = BD3LMScoringConfig

    def score(self, model, context_ids: torch.Tensor, continuation_ids: torch.Tensor, config: BD3LMScoringConfig,
              *, generator: torch.Generator | None = None) -> ScoreOutput:
        size = model.block_size
        p, m = int(context_ids.numel()), int(continuation_ids.numel())
        if m == 1:  # one block term holding one token: exact, from one forward
            return self.score_choices(model, context_ids, continuation_ids, config)[0]
        x0 = torch.cat((context_ids, continuation_ids)).to(torch.long)
        device, mask = x0.device, model.mask_token_id
        noisy_start = (p // size) * size
        clean = x0[None, :((p + m - 1) // size) * size]  # x_0 blocks before the last one
        offset = p - noisy_start  # where the continuation starts inside the noisy span
        block_of = (torch.arange(p, p + m, device=device) // size) - noisy_start // size
        counts = torch.bincount(block_of)
        singleton = (counts == 1).tolist()

        prefix = model.nelbo_prefix(clean)  # the clean copy's keys/values, shared by every draw
        greedy_input = x0[None, noisy_start:].clone()
        greedy_input[:, offset:] = mask
        logits = model.nelbo_logits(greedy_input, clean, noisy_start, prefix=prefix)[0, offset:]
        is_greedy = bool((logits.argmax(-1) == continuation_ids).all())
        if all(singleton):  # every block term is exact (block_size 1, or one token per block)
            exact = target_logprobs(logits, continuation_ids).double().sum().reshape(1)
            return summarize(exact, self.method, is_greedy, nfe=1)

        t = config.t_min + (config.t_max - config.t_min) * stratified_times(config.mc_num, len(singleton), generator, device)
        t[:, torch.tensor(singleton, device=device)] = 1.0
        t_token = t[:, block_of]  # (mc_num, m): each token's block time
        masked = torch.rand(config.mc_num, m, generator=generator, device=device, dtype=torch.float64) < t_token
        values = torch.zeros(config.mc_num, dtype=torch.float64, device=device)
        rows = masked.any(-1).nonzero()[:, 0]
        for chunk in rows.split(config.batch):
            noisy = x0[noisy_start:].expand(chunk.numel(), -1).clone()
            noisy[:, offset:] = torch.where(masked[chunk], mask, noisy[:, offset:])
            logits = model.nelbo_logits(noisy, clean, noisy_start, prefix=prefix)[:, offset:]
            logp = target_logprobs(logits, continuation_ids).double()
            values[chunk] = (logp * masked[chunk] / t_token[chunk]).sum(-1)
        return summarize(values, self.method, is_greedy, nfe=1 + int(rows.numel()))

    def work(self, config: BD3LMScoringConfig, context_len: int, continuation_len: int, shape: dict) -> Work:
        size, p, m = int(shape.get("block_size", 1)), context_len, continuation_len
        clean = ((p + max(m, 1) - 1) // size) * size
        span = p + m - (p // size) * size  # the noisy copy: from the block holding the first answer token
        work = Work().add(1, clean + span, causal_pairs(clean) + span * (clean + span))
        blocks = {(p + i) // size for i in range(m)}
        if m <= 1 or len(blocks) == m:  # one token per block: every term exact, one forward
            return work
        work.add(math.ceil(config.mc_num / config.batch), config.batch * span, config.batch * span * (clean + span),
                 nfe=config.mc_num)
        return work.bound("upper bound: every Monte-Carlo row masks a token")

    def batch_key(self, config: BD3LMScoringConfig, context_len: int, continuation_len: int):
        # One request at a time (adapters/request_batches.py): every draw attends to its own request's
        # clean-copy keys/values (nelbo_prefix), and the DiT's adaLN conditioning rounds by row count.
        return None

    def shares_choices(self, config: BD3LMScoringConfig) -> bool:
        return True

    def score_choices(self, model, context_ids: torch.Tensor, candidates: torch.Tensor, config: BD3LMScoringConfig
                      ) -> list[ScoreOutput]:
        """One-token continuations: the forward sees the clean context blocks and the noisy block with
        the continuation's one position masked, the same input for every candidate, so one forward
        scores them all exactly (the block term of a lone token has t = 1)."""
        size, p = model.block_size, int(context_ids.numel())
        x0 = torch.cat((context_ids, candidates[:1])).to(torch.long)
        noisy_start = (p // size) * size
        clean = x0[None, :noisy_start]
        noisy = x0[None, noisy_start:].clone()
        noisy[:, p - noisy_start:] = model.mask_token_id
        logits = model.nelbo_logits(noisy, clean, noisy_start, prefix=model.nelbo_prefix(clean))[0, p - noisy_start:]
        best = logits.argmax(-1)
        return [summarize(target_logprobs(logits, candidates[i:i + 1]).double().sum().reshape(1), self.method,
                          bool((best == candidates[i:i + 1]).all()), nfe=1 if i == 0 else 0)
                for i in range(candidates.numel())]
