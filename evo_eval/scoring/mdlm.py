"""MDLM's NELBO as a conditional log-likelihood: log p(continuation | context) >= its Monte-Carlo estimate.

Facts from kuleshov-group/mdlm ``diffusion.py`` @06dd29f (``_sample_t``, ``q_xt``,
``_forward_pass_diffusion``) and ``noise_schedule.py`` (``LogLinearNoise``), read, not copied:

* continuous time (T = 0), t ~ U[sampling_eps, 1] with antithetic stratification over the batch,
  ``sampling_eps = 1e-3``;
* log-linear schedule: sigma(t) = -log(1 - (1 - eps) t), so a token is masked with probability
  ``1 - exp(-sigma) = (1 - eps) t`` (``eps = 1e-3``) and the loss weight ``sigma'(t) / expm1(sigma(t))``
  is exactly ``1 / t``;
* SUBS: only masked positions contribute, ``-log p_theta(x_0 | x_t) / t``.

Conditioning (the authors' repository has no lm-eval adapter; this is how LLaDA and SMDM evaluate
multiple choice): the context is never masked, only continuation tokens are, and the sum runs over
the continuation. Each Monte-Carlo sample is one forward over context + continuation; samples are
batched ``batch`` at a time, and a sample in which no token was masked contributes 0 without a
forward. With exact conditionals the expectation equals log p(continuation | context) times
(1 - eps) (the schedule never masks quite everything), which ``noise_eps = 0`` removes.

Choices: a one-token continuation is scored exactly (the estimator's limit, one forward, no
variance); ``is_greedy`` is whether the argmax at every continuation position, all masked at once,
is the continuation (one extra forward). ``nfe`` counts sequences evaluated; ``stderr`` is the
sample standard deviation over sqrt(mc_num), conservative for stratified times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..work import Work
from .base import ScoreOutput, Scorer, ScorerConfig

NOISE_EPS = 1e-3


@dataclass
class MDLMScoringConfig(ScorerConfig):
    mc_num: int = 128
    batch: int = 16
    sampling_eps: float = 1e-3  # training.sampling_eps: t ~ U[sampling_eps, 1]
    noise_eps: float = NOISE_EPS  # LogLinearNoise eps: mask probability (1 - eps) t

    def __post_init__(self):
        if self.mc_num < 1 or self.batch < 1:
            raise ValueError(f"mc_num and batch must be positive, got {self.mc_num} and {self.batch}")
        if not 0.0 <= self.sampling_eps < 1.0 or not 0.0 <= self.noise_eps < 1.0:
            raise ValueError("sampling_eps and noise_eps must lie in [0, 1)")


def stratified_times(samples: int, columns: int, generator: torch.Generator | None,
                     device: torch.device) -> torch.Tensor:
    """(samples, columns) in [0, 1): each column stratified over the samples (one draw per 1/samples
    stratum, in a random order per column so columns are not comonotone)."""
    jitter = torch.rand(samples, columns, generator=generator, device=device, dtype=torch.float64)
    strata = torch.argsort(torch.rand(samples, columns, generator=generator, device=device), dim=0)
    return (strata.double() + jitter) / samples


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per row, without materialising a second (.., V) tensor."""
    picked = logits.gather(-1, targets.expand(logits.shape[:-1])[..., None])[..., 0]
    return picked - torch.logsumexp(logits, dim=-1)


def summarize(values: torch.Tensor, method: str, is_greedy: bool, nfe: int) -> ScoreOutput:
    n = values.numel()
    stderr = float(values.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0
    return ScoreOutput(logprob=float(values.mean()), is_greedy=is_greedy, method=method, nfe=nfe, stderr=stderr)


class MDLMScorer(Scorer):
    method = "mdlm_nelbo"
    Config = MDLMScoringConfig

    def score(self, model, context_ids: torch.Tensor, continuation_ids: torch.Tensor, config: MDLMScoringConfig,
              *, generator: torch.Generator | None = None) -> ScoreOutput:
        p, m = int(context_ids.numel()), int(continuation_ids.numel())
        x0 = torch.cat((context_ids, continuation_ids)).to(torch.long)
        device, mask = x0.device, model.mask_token_id
        conditioned = bool(model.config.time_conditioning)

        if m == 1:
            return self.score_choices(model, context_ids, continuation_ids, config)[0]
        logits = self._all_masked_logits(model, x0, p)
        is_greedy = bool((logits.argmax(-1) == continuation_ids).all())

        t = config.sampling_eps + (1.0 - config.sampling_eps) * stratified_times(config.mc_num, 1, generator, device)[:, 0]
        masked = torch.rand(config.mc_num, m, generator=generator, device=device, dtype=torch.float64) \
            < ((1.0 - config.noise_eps) * t)[:, None]
        values = torch.zeros(config.mc_num, dtype=torch.float64, device=device)
        rows = masked.any(-1).nonzero()[:, 0]
        for chunk in rows.split(config.batch):
            xt = x0.expand(chunk.numel(), -1).clone()
            xt[:, p:] = torch.where(masked[chunk], mask, xt[:, p:])
            logits = model.denoiser_logits(xt, start=p, sigma=self._sigma(t[chunk], conditioned))
            logp = target_logprobs(logits, continuation_ids).double()
            values[chunk] = (logp * masked[chunk]).sum(-1) / t[chunk]
        return summarize(values, self.method, is_greedy, nfe=1 + int(rows.numel()))

    def work(self, config: MDLMScoringConfig, context_len: int, continuation_len: int, shape: dict) -> Work:
        n = context_len + continuation_len
        work = Work().add(1, n, n * n)  # the all-masked forward (is_greedy; the exact score of one token)
        if continuation_len <= 1:
            return work
        # Rows whose draw masks nothing cost nothing; counted as if every row masked something.
        work.add(math.ceil(config.mc_num / config.batch), config.batch * n, config.batch * n * n, nfe=config.mc_num)
        return work.bound("upper bound: every Monte-Carlo row masks a token")

    def batch_key(self, config: MDLMScoringConfig, context_len: int, continuation_len: int):
        # One request at a time (adapters/request_batches.py): the DiT's adaLN conditioning is a GEMM
        # over one row per sequence, and its rounding depends on how many sequences share it (on MKL,
        # 1 row differs from 2+; measured on the tiny DiT: logits differ by 1e-6), so stacking
        # requests would change the all-masked forward's last bits.
        return None

    def shares_choices(self, config: MDLMScoringConfig) -> bool:
        return True

    def score_choices(self, model, context_ids: torch.Tensor, candidates: torch.Tensor, config: MDLMScoringConfig
                      ) -> list[ScoreOutput]:
        """One-token continuations are scored exactly from the all-masked forward, whose input (the
        context and one [MASK]) is the same for every candidate: one forward for all of them."""
        x0 = torch.cat((context_ids, candidates[:1])).to(torch.long)
        logits = self._all_masked_logits(model, x0, int(context_ids.numel()))
        best = logits.argmax(-1)
        return [summarize(target_logprobs(logits, candidates[i:i + 1]).double(), self.method,
                          bool((best == candidates[i:i + 1]).all()), nfe=1 if i == 0 else 0)
                for i in range(candidates.numel())]

    def _all_masked_logits(self, model, x0: torch.Tensor, p: int) -> torch.Tensor:
        """Denoiser logits at the continuation positions with all of them masked, at t = 1."""
        all_masked = x0.clone()
        all_masked[p:] = model.mask_token_id
        sigma = self._sigma(torch.ones(1, device=x0.device), bool(model.config.time_conditioning))
        return model.denoiser_logits(all_masked[None], start=p, sigma=sigma)[0]

    @staticmethod
    def _sigma(t: torch.Tensor, conditioned: bool) -> torch.Tensor | None:
        if not conditioned:
            return None
        return (-torch.log1p(-(1.0 - NOISE_EPS) * t.double())).float()
