"""lm-eval backend "mdlm": MDLM through the shared adapter base, and what the two DiT families share.

``DiTAdapter`` is the part MDLM and BD3-LM have in common: the published checkpoint layout through
``models/dit.py``'s one loader (hub id with revision, or a local folder), the tokenizer from
model_args, the card's ``tokenizer`` field or the checkpoint folder (GPT-2's for the published OWT
checkpoints, which ship none), [MASK] resolved against that tokenizer, and a BOS token in front
of every context: the authors' OWT training chunks all begin with BOS (``wrap`` with
``insert_train_special``), and GPT-2's tokenizer never adds one itself. Requests, stop strings,
chat templates, seeds, data parallelism and per-request records are the base's.

MDLM generates with ``decoding.mdlm`` (ancestral + no-change cache) over a canvas of exactly
``max_gen_toks`` masks after the prompt, and scores with ``scoring.mdlm`` (NELBO, continuation
masked only).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar

import lm_eval.models  # noqa: F401  (lm-eval's built-in backends first, see adapters/__init__.py)
import torch
from lm_eval.api.registry import register_model

from ..models import dit
from ..models import mdlm as mdlm_model
from .base import EvalAdapter


class DiTAdapter(EvalAdapter):
    model_module: ClassVar[ModuleType]  # models.mdlm or models.bd3lm: load_pretrained(...)

    def load(self, checkpoint: str, revision: str | None, tokenizer: str | None, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
        model = self.model_module.load_pretrained(checkpoint, revision=revision, dtype=dtype, device=device)
        named = tokenizer or (self.card.tokenizer if self.card else None)
        tok = dit.load_tokenizer(checkpoint, revision, named, model.config.vocab_size)
        model.config.mask_token_id = dit.resolve_mask_token_id(model.config, tok)
        return model, tok

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        ids = super().tok_encode(string, add_special_tokens)
        return self._with_bos(ids) if add_special_tokens else ids

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        context_ids, continuation_ids = super()._encode_pair(context, continuation)
        return self._with_bos(context_ids), continuation_ids

    def _with_bos(self, ids: list[int]) -> list[int]:
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return ids if bos is None or ids[:1] == [bos] else [bos, *ids]


@register_model("mdlm")
class MDLMAdapter(DiTAdapter):
    family = "mdlm"
    model_module = mdlm_model
