"""The exact autoregressive log-likelihood: one causal forward, the chain rule, no estimate.

``log p(continuation | context) = sum_j log p(c_j | context, c_<j)`` from the next-token logits of a
single forward over ``context + continuation[:-1]``; ``is_greedy`` says whether every ``c_j`` is the
argmax, as lm-eval's HF backend reports it. Any family with a causal view can reuse it: a model
exposing ``ar_logits(ids)`` (Evo's AR limit), a module whose call returns logits (the fast Llama
decoder), or a transformers causal LM (its output's ``.logits``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..decoding.base import MIN_STACK_ROWS
from ..work import Work, causal_pairs
from .base import Scorer, ScoreOutput, ScorerConfig


def causal_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Next-token logits (n, vocab) for 1-D ids under the model's causal (AR) view."""
    return causal_logits_rows(model, ids[None])[0]


def causal_logits_rows(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Next-token logits (rows, n, vocab) for (rows, n) ids of one length (no padding)."""
    if hasattr(model, "ar_logits"):
        out = model.ar_logits(ids)
    else:
        out = model(ids)
        out = getattr(out, "logits", out)
    return out.float()


def continuation_logprob(logits: torch.Tensor, continuation_ids: torch.Tensor) -> tuple[float, bool]:
    """Sum of log-probabilities of ``continuation_ids`` under the rows of ``logits`` that predict them."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, continuation_ids[:, None]).squeeze(-1)
    greedy = bool((logp.argmax(-1) == continuation_ids).all())
    return float(picked.sum()), greedy


@torch.inference_mode()
def ar_logprob(model: torch.nn.Module, context_ids: torch.Tensor, continuation_ids: torch.Tensor) -> tuple[float, bool]:
    if context_ids.numel() == 0:
        raise ValueError("the exact AR log-likelihood needs at least one context token (lm-eval passes BOS/EOS)")
    n = continuation_ids.numel()
    if n == 0:
        return 0.0, True
    ids = torch.cat([context_ids, continuation_ids])[:-1]
    logits = causal_logits(model, ids)[-n:]
    return continuation_logprob(logits, continuation_ids)


def ar_choices(model: torch.nn.Module, context_ids: torch.Tensor, candidates: torch.Tensor,
               method: str) -> list[ScoreOutput] | None:
    """One-token continuations read off the context's last causal position: one forward for all,
    each equal to ``ar_logprob`` of that continuation alone."""
    if context_ids.numel() == 0:
        return None
    logits = causal_logits(model, context_ids)[-1:]
    return [ScoreOutput(*continuation_logprob(logits, candidates[i:i + 1]), method, nfe=1 if i == 0 else 0)
            for i in range(candidates.numel())]


def ar_batch_key(context_len: int, continuation_len: int):
    """Requests of one context and one continuation length stack into one causal pass (no padding),
    when that pass is long enough (decoding.base.MIN_STACK_ROWS)."""
    positions = context_len if continuation_len == 1 else context_len + continuation_len - 1
    return (context_len, continuation_len) if continuation_len and positions >= MIN_STACK_ROWS else None


def ar_score_batch(model: torch.nn.Module, requests: list[tuple[torch.Tensor, torch.Tensor]],
                   method: str) -> list[ScoreOutput]:
    """``ar_logprob`` of requests of one shape from one pass over all of them (nothing is drawn)."""
    n = requests[0][1].numel()
    ids = torch.stack([torch.cat([ctx.reshape(-1), cont.reshape(-1)])[:-1] for ctx, cont in requests])
    logits = causal_logits_rows(model, ids)[:, -n:]
    return [ScoreOutput(*continuation_logprob(logits[r], cont.reshape(-1)), method, nfe=1)
            for r, (_, cont) in enumerate(requests)]


def ar_choices_batch(model: torch.nn.Module, contexts: list[torch.Tensor], candidates: list[torch.Tensor],
                     method: str) -> list[list[ScoreOutput]]:
    """``ar_choices`` of contexts of one length from one pass over all of them."""
    logits = causal_logits_rows(model, torch.stack([ctx.reshape(-1) for ctx in contexts]))[:, -1:]
    return [[ScoreOutput(*continuation_logprob(logits[r], cands[i:i + 1]), method, nfe=1 if i == 0 else 0)
             for i in range(cands.numel())]
            for r, cands in enumerate(candidates)]


@dataclass
class ARScorerConfig(ScorerConfig):
    """No knobs: the exact score needs one forward (mc_num and batch are ignored)."""


class ARScorer(Scorer):
    method = "ar_exact"
    Config = ARScorerConfig

    def work(self, config, context_len: int, continuation_len: int, shape: dict) -> Work:
        n = context_len + continuation_len - 1
        return Work().add(1, n, causal_pairs(n))

    def shares_choices(self, config) -> bool:
        return True  # lm-eval's HF backend reads one-token options off one forward (Collator group_by contexts)

    @torch.inference_mode()
    def score_choices(self, model, context_ids, candidates, config) -> list[ScoreOutput] | None:
        return ar_choices(model, context_ids, candidates, self.method)

    def batch_key(self, config, context_len: int, continuation_len: int):
        return ar_batch_key(context_len, continuation_len)

    @torch.inference_mode()
    def score_batch(self, model, requests, config, generators) -> list[ScoreOutput]:
        return ar_score_batch(model, requests, self.method)

    @torch.inference_mode()
    def choices_batch(self, model, contexts, candidates, config) -> list[list[ScoreOutput]]:
        return ar_choices_batch(model, contexts, candidates, self.method)

    @torch.inference_mode()
    def score(self, model, context_ids, continuation_ids, config, *, generator=None) -> ScoreOutput:
        logprob, greedy = ar_logprob(model, context_ids, continuation_ids)
        return ScoreOutput(logprob=logprob, is_greedy=greedy, method=self.method, nfe=1)
