"""lm-eval backend "dream": Dream-v0 7B, a public stand-in for the paper's masked-diffusion MDLM column.

Loads the published layout without remote code (``models.dream``), generates with Dream's
``diffusion_generate`` (``decoding.dream``) and scores with DreamLM/Dream ``eval/eval.py``'s
Monte-Carlo estimate (``scoring.dream``). As the authors' harness runs with ``add_bos_token=true``,
every context starts with the tokenizer's BOS (for generation and for likelihood); the EOS their
``_encode_pair`` appends to a continuation is the scorer's (``append_eos``).
"""

from __future__ import annotations


import lm_eval.models  # noqa: F401  (lm-eval's built-in backends first, see adapters/__init__.py)
from lm_eval.api.registry import register_model

from ..models.dream import load_for_card
from .base import FolderAdapter, qwen2_tokenizer


@register_model("dream")
class DreamAdapter(FolderAdapter):
    family = "dream"
    load_model = staticmethod(load_for_card)
    load_tokenizer = staticmethod(qwen2_tokenizer)
    embedding_rows = "vocab_size"

    def _bos(self) -> list[int]:
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return [int(bos)] if bos is not None else []

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # add_bos_token=true: the BOS text before the prompt (Qwen's tokenizer adds none itself).
        ids = self.tokenizer.encode(string, add_special_tokens=False)
        return self._bos() + ids if add_special_tokens and ids[:1] != self._bos() else ids

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        context_ids, continuation_ids = super()._encode_pair(context, continuation)
        return self._bos() + list(context_ids), list(continuation_ids)
