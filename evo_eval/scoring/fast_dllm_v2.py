"""Fast-dLLM v2's conditional likelihood: the one-forward score of NVlabs/Fast-dLLM ``v2/eval.py``.

Facts from ``eval.py`` (commit 8292f3c: ``_encode_pair``, ``_forward_process``, ``get_logits``,
``get_loglikelihood``, ``loglikelihood``), read, not copied. The authors score likelihood tasks
(``eval_script.sh``: MMLU 5-shot and GPQA, with the chat template) neither autoregressively nor by a
Monte-Carlo ELBO, but with one deterministic forward:

* the sequence is context ⊕ continuation (length L); only the continuation's *first* token is
  replaced by [MASK], the rest of the continuation stays visible;
* it is padded with [MASK] to the next multiple of the block (``bd_size - L % bd_size``: a whole
  extra block when L is already a multiple), and the first padded position holds EOS;
* ``model(x).logits`` (the block-causal forward, no cache), shifted right by one; the score is minus
  the cross-entropy of the continuation's first token at its masked position (the padded [MASK]
  positions have target -100, so they add nothing): ``log p(first token | everything else)``;
* the cross-entropy is computed in the logits' dtype (bf16 for the published weights), as there;
* ``is_greedy`` is always False (``loglikelihood`` returns ``(ll, 0.0)``); ``loglikelihood_rolling``
  is not implemented.

Because the one masked position hides the only token that differs between one-token options after
the same context, all such options are read from one forward (``score_choices``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..work import Work
from .base import Scorer, ScorerConfig, ScoreOutput


@dataclass
class FastDLLMv2ScorerConfig(ScorerConfig):
    block_size: int = 32  # eval.py's bd_size: the padding's block
    mask_token_id: int | None = None  # None: the model config's
    eos_token_id: int | None = None  # None: the model config's (the tokenizer's EOS in eval.py)

    def __post_init__(self) -> None:
        for name in ("mask_token_id", "eos_token_id"):
            if getattr(self, name) is not None:
                setattr(self, name, int(getattr(self, name)))
        if self.block_size < 1:
            raise ValueError("block_size must be at least 1")


class FastDLLMv2Scorer(Scorer):
    method = "fast_dllm_v2_first_token"
    Config = FastDLLMv2ScorerConfig

    def work(self, config: FastDLLMv2ScorerConfig, context_len: int, continuation_len: int, shape: dict) -> Work:
        length = context_len + continuation_len
        padded = length + config.block_size - length % config.block_size
        return Work().add(1 if continuation_len else 0, padded, padded * padded)

    def _logits(self, model, context: torch.Tensor, first: torch.Tensor, rest: torch.Tensor,
                config: FastDLLMv2ScorerConfig) -> torch.Tensor:
        """Shifted logits (vocab,) at the continuation's first position, in the weights' dtype (the
        authors' cross-entropy runs in it: bf16 for the published weights)."""
        mask = config.mask_token_id if config.mask_token_id is not None else int(model.config.mask_token_id)
        eos = config.eos_token_id if config.eos_token_id is not None else int(model.config.eos_token_id)
        length = context.numel() + 1 + rest.numel()
        pad = config.block_size - length % config.block_size
        x = torch.cat([context, first.new_tensor([mask]), rest, first.new_tensor([eos]), first.new_full((pad - 1,), mask)])
        logits = model(x[None], block_size=config.block_size).logits[0]
        # row i of the shifted logits is position i-1's output (row 0 its own)
        row = context.numel() - 1 if context.numel() > 0 else 0
        return logits[row]

    @torch.inference_mode()
    def score(self, model, context_ids: torch.Tensor, continuation_ids: torch.Tensor, config: FastDLLMv2ScorerConfig,
              *, generator: torch.Generator | None = None) -> ScoreOutput:
        ctx, cont = context_ids.reshape(-1), continuation_ids.reshape(-1)
        if cont.numel() == 0:
            return ScoreOutput(0.0, False, self.method, nfe=0)
        logits = self._logits(model, ctx, cont[:1], cont[1:], config)
        return ScoreOutput(float(-F.cross_entropy(logits[None], cont[:1])), False, self.method, nfe=1)

    def shares_choices(self, config: FastDLLMv2ScorerConfig) -> bool:
        return True

    @torch.inference_mode()
    def score_choices(self, model, context_ids: torch.Tensor, candidates: torch.Tensor,
                      config: FastDLLMv2ScorerConfig) -> list[ScoreOutput]:
        ctx, candidates = context_ids.reshape(-1), candidates.reshape(-1)
        logprobs = torch.log_softmax(self._logits(model, ctx, candidates[:1], candidates[:0], config), dim=-1)
        return [ScoreOutput(float(logprobs[c]), False, self.method, nfe=1 if i == 0 else 0)
                for i, c in enumerate(candidates.tolist())]
