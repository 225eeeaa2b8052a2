"""LLaDA's conditional likelihood: the Monte-Carlo ELBO its authors score multiple choice with.

Facts from ML-GSAI/LLaDA ``get_log_likelihood.py`` and ``eval_llada.py`` (paper Eq. 14, App.
B.5–B.6), read, not copied:

* The sequence is prompt ⊕ answer (``L`` answer tokens); the prompt is never masked.
* A draw masks ``l`` answer tokens, a uniformly random subset, and scores
  ``(L / l) · Σ_masked log p(x_i | masked sequence)``. The estimator is unbiased for the ELBO when
  ``l`` is uniform on 1..L. The authors stratify ``l`` within a mini-batch of ``b`` rows as
  ``l_j = round(k + j·L/b)`` wrapped into 1..L, with ``k`` uniform on 1..L and ``torch.round``
  rounding halves to even. That rounding makes ``l`` *not* uniform when ``L/b`` has halves: for
  ``L = 2``, ``b = 8``, ``P(l = 2) = 0.625``, so the reference estimate is slightly biased for small
  ``L``. ``mask_counts: reference`` (the default) keeps it, for parity with the published numbers;
  ``mask_counts: uniform`` is the unbiased stratified draw: ``u_j = (u + j/b) mod 1`` with ``u``
  uniform on [0, 1), ``l_j = floor(L·u_j) + 1`` — each row's ``l`` exactly uniform, and a batch
  whose ``b`` is a multiple of ``L`` holds every count equally often.
* The estimate is the mean over ``mc_num`` draws (``mc_num / batch`` forward calls of ``batch``
  rows); it estimates the ELBO, a lower bound on ``log p(answer | prompt)``.
* Optional unsupervised CFG (``cfg`` > 0): a second row with the prompt masked,
  ``logits = un + (cfg + 1)(cond - un)``.
* ``is_greedy`` (``suffix_greedy_prediction``): starting from a fully masked answer, commit the
  single most confident prediction per forward, L forwards, and compare with the answer. With
  ``check_greedy`` off (the authors' recommended setting) it is False for every answer, one-token
  answers included, as ``eval_llada.py`` returns.

Exactness for one-token answers: with ``L = 1`` every draw masks that token with weight 1, so the
estimate is the exact ``log p(answer | prompt)`` and one forward gives it (the authors set
``mc_num = 1`` for MMLU, CMMLU and C-Eval for this reason). NFE counts sequence forwards (rows),
the unit an AR model spends one of per answer; a CFG row pair counts two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..decoding.masked import mask_id_for
from ..work import Work
from .base import Scorer, ScorerConfig, ScoreOutput


MASK_COUNTS = ("reference", "uniform")


@dataclass
class LLaDAScorerConfig(ScorerConfig):
    mc_num: int = 128  # Monte-Carlo draws (eval_llada.py default)
    batch: int = 8  # rows per forward; mc_num must be a multiple
    cfg: float = 0.0  # unsupervised classifier-free guidance scale (eval_llada.py's `cfg`)
    check_greedy: bool = False  # L extra forwards for is_greedy on multi-token answers (authors: off)
    mask_token_id: int | None = None  # None: the model config's
    mask_counts: str = "reference"  # reference (round-half-to-even, as published) | uniform (unbiased)

    def __post_init__(self) -> None:
        if self.mask_token_id is not None:
            self.mask_token_id = int(self.mask_token_id)
        if self.mask_counts not in MASK_COUNTS:
            raise ValueError(f"mask_counts '{self.mask_counts}' is not one of {', '.join(MASK_COUNTS)}")
        if self.mc_num < 1 or self.batch < 1:
            raise ValueError("mc_num and batch must be at least 1")
        if self.mc_num % self.batch:
            raise ValueError(f"mc_num {self.mc_num} is not a multiple of batch {self.batch}")
        if self.cfg < 0:
            raise ValueError("cfg must be >= 0")


def stratified_counts(length: int, rows: int, generator: torch.Generator | None, device,
                      draw: str = "reference") -> torch.Tensor:
    """How many answer tokens each row masks: 1..length, stratified over the rows with a random offset.

    ``reference``: the authors' ``round(linspace(k, k + (rows-1)·length/rows))`` wrapped into 1..length
    (round half to even: not uniform for small lengths). ``uniform``: every row's count exactly uniform.
    """
    if draw == "uniform":
        u = torch.rand((), generator=generator, device=device, dtype=torch.float64)
        shifted = torch.remainder(u + torch.arange(rows, device=device, dtype=torch.float64) / rows, 1.0)
        return (shifted * length).floor().long().clamp(max=length - 1) + 1
    k = int(torch.randint(1, length + 1, (1,), generator=generator, device=device))
    return reference_counts(k, length, rows, device)


def reference_counts(k: int, length: int, rows: int, device=None) -> torch.Tensor:
    """The authors' stratified counts for offset ``k`` (get_log_likelihood.py's forward_process)."""
    counts = torch.round(torch.linspace(float(k), k + (rows - 1) * (length / rows), rows, device=device)).long()
    return (counts - 1) % length + 1


def random_masks(counts: torch.Tensor, length: int, generator: torch.Generator | None) -> torch.Tensor:
    """(rows, length) booleans: row j masks a uniformly random subset of counts[j] positions."""
    noise = torch.rand(counts.numel(), length, generator=generator, device=counts.device)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < counts[:, None]


class LLaDAScorer(Scorer):
    method = "llada_mc_elbo"
    Config = LLaDAScorerConfig

    def score(self, model, context_ids: torch.Tensor, continuation_ids: torch.Tensor, config: LLaDAScorerConfig,
              *, generator: torch.Generator | None = None) -> ScoreOutput:
        mask = mask_id_for(model, config)
        ctx, cont = context_ids.reshape(-1), continuation_ids.reshape(-1)
        p, length = ctx.numel(), cont.numel()
        if length == 0:
            return ScoreOutput(0.0, True, self.method, nfe=0, stderr=0.0)
        seq = torch.cat([ctx, cont])[None]
        rows_per_pass = 2 if config.cfg > 0 else 1
        if length == 1:
            return self.score_choices(model, ctx, cont, config)[0]

        draws = []
        for _ in range(config.mc_num // config.batch):
            counts = stratified_counts(length, config.batch, generator, seq.device, config.mask_counts)
            masked = random_masks(counts, length, generator)
            noisy = seq.repeat(config.batch, 1)
            noisy[:, p:] = torch.where(masked, mask, noisy[:, p:])
            logits = self._logits(model, noisy, p, mask, config.cfg)
            nll = F.cross_entropy(logits.flatten(0, 1), cont.repeat(config.batch), reduction="none")
            nll = (nll.view(config.batch, length) * masked).sum(1)
            draws.append(-nll * (length / counts.to(nll.dtype)))
        values = torch.cat(draws).double()
        nfe = config.mc_num * rows_per_pass
        # Treating the stratified rows as independent overstates the error (stratification lowers it).
        stderr = float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else None
        greedy = False
        if config.check_greedy:
            greedy = self._greedy(model, seq, p, length, mask, config.cfg)
            nfe += length * rows_per_pass
        return ScoreOutput(float(values.mean()), greedy, self.method, nfe=nfe, stderr=stderr)

    def work(self, config: LLaDAScorerConfig, context_len: int, continuation_len: int, shape: dict) -> Work:
        n, rows = context_len + continuation_len, (2 if config.cfg > 0 else 1)
        if continuation_len <= 1:
            return Work().add(1, rows * n, rows * n * n, nfe=rows)
        work = Work().add(config.mc_num // config.batch, config.batch * rows * n, config.batch * rows * n * n,
                          nfe=config.mc_num * rows)
        if config.check_greedy:
            work.add(continuation_len, rows * n, rows * n * n, nfe=continuation_len * rows)
        return work

    def shares_choices(self, config: LLaDAScorerConfig) -> bool:
        return True

    def score_choices(self, model, context_ids: torch.Tensor, candidates: torch.Tensor, config: LLaDAScorerConfig
                      ) -> list[ScoreOutput]:
        """One-token answers: the input is the context and one [MASK] whatever the answer, so one
        forward (a row pair with CFG) scores every candidate exactly."""
        mask = mask_id_for(model, config)
        ctx = context_ids.reshape(-1)
        noisy = torch.cat([ctx, ctx.new_full((1,), mask)])[None]
        logits = self._logits(model, noisy, ctx.numel(), mask, config.cfg)[0, 0]
        logp, best = torch.log_softmax(logits, -1), logits.argmax()
        nfe = 2 if config.cfg > 0 else 1
        # eval_llada.py's suffix_greedy_prediction returns False unless is_check_greedy is set.
        return [ScoreOutput(float(logp[c]), config.check_greedy and bool(best == c), self.method,
                            nfe=nfe if i == 0 else 0, stderr=0.0)
                for i, c in enumerate(candidates.reshape(-1))]

    @staticmethod
    def _logits(model, noisy: torch.Tensor, p: int, mask: int, cfg: float) -> torch.Tensor:
        """Answer-row logits (rows, L, vocab), guided when cfg > 0."""
        answer = slice(p, noisy.shape[1])
        if cfg <= 0:
            return model.denoise(noisy, answer)
        unconditional = noisy.clone()
        unconditional[:, :p] = mask
        both = model.denoise(torch.cat([noisy, unconditional]), answer)
        cond, uncond = both.chunk(2)
        return uncond + (cfg + 1.0) * (cond - uncond)

    def _greedy(self, model, seq: torch.Tensor, p: int, length: int, mask: int, cfg: float) -> bool:
        """Whether committing the most confident prediction one token at a time yields the answer."""
        x = seq.clone()
        x[0, p:] = mask
        for _ in range(length):
            logits = self._logits(model, x, p, mask, cfg)[0]
            masked = x[0, p:] == mask
            x0 = logits.argmax(-1)
            confidence = torch.softmax(logits, -1).gather(-1, x0[:, None])[:, 0].masked_fill(~masked, -1.0)
            best = int(confidence.argmax())
            x[0, p + best] = x0[best]
        return bool((x[0, p:] == seq[0, p:]).all())
