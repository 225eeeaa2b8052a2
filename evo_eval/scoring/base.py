"""The one log-likelihood interface every estimator implements.

``score(model, context_ids, continuation_ids, config) -> ScoreOutput``: the (estimated) log-probability
of the continuation given the context, whether greedy decoding would produce it, the estimator's name
(recorded in results, so a table can tell an exact AR score from a Monte-Carlo ELBO) and its cost.

Several requests at once (``--batch-size N``, adapters/request_batches.py): ``batch_key`` says which
requests an estimator can stack into the same forwards exactly, ``score_batch`` and ``choices_batch``
answer such a bucket. The defaults answer one request at a time, so an estimator that cannot batch
a case exactly simply keeps its key None for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from ..work import Work

from ..decoding.base import Settings


@dataclass
class ScoreOutput:
    logprob: float
    is_greedy: bool
    method: str
    nfe: int = 0
    stderr: float | None = None  # Monte-Carlo standard error of the estimate, where there is one

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScorerConfig(Settings):
    """Estimator settings; each estimator subclasses it with its own knobs."""

    mc_num: int = 1
    batch: int = 1
    seed: int = 1234


class Scorer(ABC):
    method: ClassVar[str]
    Config: ClassVar[type[ScorerConfig]] = ScorerConfig

    @abstractmethod
    def score(self, model: torch.nn.Module, context_ids: torch.Tensor, continuation_ids: torch.Tensor,
              config: ScorerConfig, *, generator: torch.Generator | None = None) -> ScoreOutput:
        ...

    def work(self, config: ScorerConfig, context_len: int, continuation_len: int, shape: dict[str, Any]) -> "Work":
        """The forwards one request costs, for ``plan`` (evo_eval/work.py)."""
        raise NotImplementedError(f"estimator {self.method} states no cost")

    def shares_choices(self, config: ScorerConfig) -> bool:
        """Whether ``score_choices`` answers one-token options after one context from one forward."""
        return False

    def score_choices(self, model: torch.nn.Module, context_ids: torch.Tensor, candidates: torch.Tensor,
                      config: ScorerConfig) -> list[ScoreOutput] | None:
        """The scores of several one-token continuations of one context from a single forward, each
        equal to ``score(model, context_ids, candidates[i:i+1], config)``, or None where the estimator's
        forward depends on the continuation itself (the default). The first output carries the NFE,
        the others 0, so a sum over requests counts the forward once."""
        return None

    def batch_key(self, config: ScorerConfig, context_len: int, continuation_len: int) -> Any:
        """Requests with equal (non-None) keys may be answered together by ``score_batch`` (and
        one-token groups with ``continuation_len`` 1 by ``choices_batch``), each result equal to its
        own ``score`` bit for bit; None (the default): this request is answered alone."""
        return None

    def score_batch(self, model: torch.nn.Module, requests: list[tuple[torch.Tensor, torch.Tensor]],
                    config: ScorerConfig, generators: list[torch.Generator | None]) -> list[ScoreOutput]:
        """``score`` of each (context, continuation) with its own generator; an estimator that batches
        overrides this, drawing from each request's generator exactly what ``score`` would, in order."""
        return [self.score(model, ctx, cont, config, generator=gen)
                for (ctx, cont), gen in zip(requests, generators, strict=True)]

    def choices_batch(self, model: torch.nn.Module, contexts: list[torch.Tensor], candidates: list[torch.Tensor],
                      config: ScorerConfig) -> list[list[ScoreOutput]]:
        """``score_choices`` of each context (all of one ``batch_key``) with its candidates."""
        return [self.score_choices(model, ctx, cands, config) for ctx, cands in zip(contexts, candidates, strict=True)]
