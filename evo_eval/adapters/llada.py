"""lm-eval backend "llada": LLaDA 8B through the shared adapter base.

Loads the published checkpoint layout without remote code (``models.llada``), generates with the
authors' masked-diffusion sampler (``decoding.masked``; Fast-dLLM options through model_args or
the card) and scores with their Monte-Carlo ELBO (``scoring.llada``). Everything else — requests,
stop strings, chat templates, seeds, data parallelism, per-request records — is the base's.
"""

from __future__ import annotations

from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval's built-in backends first, see adapters/__init__.py)
import torch
from lm_eval.api.registry import register_model

from ..decoding.masked import LLaDASampler
from ..errors import CheckpointError
from ..models.llada import load_llada, resolve
from ..scoring.llada import LLaDAScorer
from .base import EvalAdapter


def load_tokenizer(name: str, revision: str | None) -> Any:
    """A checkpoint's tokenizer through AutoTokenizer (LLaDA's is a plain fast tokenizer)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve(name), revision=revision)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load the tokenizer of {name}: {first}",
                              "pass tokenizer=DIR (model_args) with the checkpoint's tokenizer files") from None


@register_model("llada")
class LLaDAAdapter(EvalAdapter):
    family = "llada"
    sampler_cls = LLaDASampler
    scorer_cls = LLaDAScorer

    def load(self, checkpoint: str, revision: str | None, tokenizer: str | None, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
        model = load_llada(checkpoint, revision=revision, card=self.card, device=device, dtype=dtype)
        tok = load_tokenizer(tokenizer or checkpoint, None if tokenizer else revision)
        if len(tok) > model.config.embedding_size:
            raise CheckpointError(f"the tokenizer has {len(tok)} tokens but {checkpoint} embeds "
                                  f"{model.config.embedding_size}", "pass the checkpoint's own tokenizer")
        return model, tok
