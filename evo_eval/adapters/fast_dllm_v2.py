"""lm-eval backend "fast_dllm_v2": Fast-dLLM v2 7B, a public stand-in for the paper's block-diffusion BD3-LM column.

Loads the published layout without remote code (``models.fast_dllm_v2``), generates with the authors'
block-wise parallel decoding (``decoding.fast_dllm_v2``) and scores with their one-forward likelihood
(``scoring.fast_dllm_v2``). As their harness (NVlabs/Fast-dLLM ``v2/eval.py``, read, not copied) does:

* a continuation is split off by tokenising context and context + continuation (``_encode_pair``),
  without lm-eval's moving of the context's trailing whitespace onto the continuation: with the chat
  template a context ends in ``"assistant\\n"``, and the masked first token must be the answer's;
* the answer is the decoded text up to the stop token, special tokens skipped, not cut at the task's
  ``until`` strings (the sampler's ``cut_at_until: true`` cuts it as the other backends do);
* ``loglikelihood_rolling`` is not offered (the authors' raises ``NotImplementedError``): the
  first-token score is not a sequence's likelihood.
"""

from __future__ import annotations

import lm_eval.models  # noqa: F401  (lm-eval's built-in backends first, see adapters/__init__.py)
import torch
from lm_eval.api.registry import register_model

from ..errors import UserError
from ..models.fast_dllm_v2 import load_for_card
from .base import FolderAdapter, qwen2_tokenizer


@register_model("fast_dllm_v2")
class FastDLLMv2Adapter(FolderAdapter):
    family = "fast_dllm_v2"
    load_model = staticmethod(load_for_card)
    load_tokenizer = staticmethod(qwen2_tokenizer)
    embedding_rows = "vocab_size"

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        # tokenizer(text)["input_ids"] as eval.py calls it: the tokenizer's own special tokens included.
        whole = self.tok_encode(context + continuation, add_special_tokens=True)
        context_ids = self.tok_encode(context, add_special_tokens=True)
        return context_ids, whole[len(context_ids):]

    def answer_text(self, tokens: torch.Tensor, until: list[str]) -> str:
        if self.sampler_config.cut_at_until:
            return super().answer_text(tokens, until)
        return self.tok_decode(tokens)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise UserError("Fast-dLLM v2 scores a continuation's first token only; it has no rolling (perplexity) likelihood",
                        "run generation and multiple-choice benchmarks with this card")
