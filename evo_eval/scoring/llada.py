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

from ..decoding.base import MIN_STACK_ROWS
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
        return self.score_batch(model, [(context_ids, continuation_ids)], config, [generator])[0]

    def batch_key(self, config: LLaDAScorerConfig, context_len: int, continuation_len: int):
        # Rows of one length and one answer slice stack into the same forward (no padding), when the
        # one-request forward is long enough (MIN_STACK_ROWS).
        rows = (context_len + 1) if continuation_len == 1 else config.batch * (context_len + continuation_len)
        return (context_len, continuation_len) if continuation_len and rows >= MIN_STACK_ROWS else None

    def score_batch(self, model, requests, config: LLaDAScorerConfig, generators) -> list[ScoreOutput]:
        """Requests of one (context, answer) length: each forward holds every request's ``batch`` rows
        of one draw, each request's rows drawn from its own generator first, in ``score``'s order."""
        mask = mask_id_for(model, config)
        ctxs = [ctx.reshape(-1) for ctx, _ in requests]
        conts = [cont.reshape(-1) for _, cont in requests]
        p, length = ctxs[0].numel(), conts[0].numel()
        if length == 0:
            return [ScoreOutput(0.0, True, self.method, nfe=0, stderr=0.0) for _ in requests]
        if length == 1:
            return [outs[0] for outs in self.choices_batch(model, ctxs, conts, config)]
        seqs = [torch.cat([ctx, cont])[None] for ctx, cont in zip(ctxs, conts)]
        rows_per_pass = 2 if config.cfg > 0 else 1
        draws: list[list[torch.Tensor]] = [[] for _ in requests]
        for _ in range(config.mc_num // config.batch):
            counts, masks, noisy = [], [], []
            for seq, generator in zip(seqs, generators):
                c = stratified_counts(length, config.batch, generator, seq.device, config.mask_counts)
                masked = random_masks(c, length, generator)
                rows = seq.repeat(config.batch, 1)
                rows[:, p:] = torch.where(masked, mask, rows[:, p:])
                counts.append(c)
                masks.append(masked)
                noisy.append(rows)
            logits = self._logits(model, torch.cat(noisy), p, mask, config.cfg, len(requests))
            for r, (cont, c, masked) in enumerate(zip(conts, counts, masks)):
                mine = logits[r * config.batch:(r + 1) * config.batch]
                nll = F.cross_entropy(mine.flatten(0, 1), cont.repeat(config.batch), reduction="none")
                nll = (nll.view(config.batch, length) * masked).sum(1)
                draws[r].append(-nll * (length / c.to(nll.dtype)))
        outs = []
        for seq, mine in zip(seqs, draws):
            values = torch.cat(mine).double()
            nfe = config.mc_num * rows_per_pass
            # Treating the stratified rows as independent overstates the error (stratification lowers it).
            stderr = float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else None
            greedy = False
            if config.check_greedy:  # L forwards per request, one request at a time
                greedy = self._greedy(model, seq, p, length, mask, config.cfg)
                nfe += length * rows_per_pass
            outs.append(ScoreOutput(float(values.mean()), greedy, self.method, nfe=nfe, stderr=stderr))
        return outs

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
        return self.choices_batch(model, [context_ids], [candidates], config)[0]

    def choices_batch(self, model, contexts, candidates, config: LLaDAScorerConfig) -> list[list[ScoreOutput]]:
        """``score_choices`` for contexts of one length: one row per context in the same forward."""
        mask = mask_id_for(model, config)
        ctxs = [ctx.reshape(-1) for ctx in contexts]
        noisy = torch.stack([torch.cat([ctx, ctx.new_full((1,), mask)]) for ctx in ctxs])
        logits = self._logits(model, noisy, ctxs[0].numel(), mask, config.cfg, len(ctxs))
        nfe = 2 if config.cfg > 0 else 1
        outs = []
        for r, cands in enumerate(candidates):
            row = logits[r, 0]
            logp, best = torch.log_softmax(row, -1), row.argmax()
            # eval_llada.py's suffix_greedy_prediction returns False unless is_check_greedy is set.
            outs.append([ScoreOutput(float(logp[c]), config.check_greedy and bool(best == c), self.method,
                                     nfe=nfe if i == 0 else 0, stderr=0.0)
                         for i, c in enumerate(cands.reshape(-1))])
        return outs

    @staticmethod
    def _logits(model, noisy: torch.Tensor, p: int, mask: int, cfg: float, requests: int = 1) -> torch.Tensor:
        """Answer-row logits (rows, L, vocab), guided when cfg > 0. ``noisy`` may stack the rows of
        several ``requests`` (equal counts): each request's rows (with their unconditional twins) stay
        together and the head runs per request, so its numbers are those of the request alone."""
        answer = slice(p, noisy.shape[1])
        own = noisy.shape[0] // requests
        split = {"head_split": (2 if cfg > 0 else 1) * own} if requests > 1 else {}
        if cfg <= 0:
            return model.denoise(noisy, answer, **split)
        unconditional = noisy.clone()
        unconditional[:, :p] = mask
        both = torch.cat([part for r in range(requests)
                          for part in (noisy[r * own:(r + 1) * own], unconditional[r * own:(r + 1) * own])])
        out = model.denoise(both, answer, **split).unflatten(0, (requests, 2, own))
        cond, uncond = out[:, 0].flatten(0, 1), out[:, 1].flatten(0, 1)
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
