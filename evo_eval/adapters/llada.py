"""lm-eval backend "llada": LLaDA 8B through the shared adapter base.

Loads the published checkpoint layout without remote code (``models.llada``), generates with the
authors' masked-diffusion sampler (``decoding.masked``; Fast-dLLM options through model_args or
the card) and scores with their Monte-Carlo ELBO (``scoring.llada``). Everything else — requests,
stop strings, chat templates, seeds, data parallelism, per-request records — is the base's.
"""

from __future__ import annotations

from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval's built-in backends first, see adapters/__init__.py)
from lm_eval.api.registry import register_model

from ..models.llada import load_llada, resolve
from .base import FolderAdapter, load_tokenizer


def _tokenizer(name: str, revision: str | None) -> Any:
    return load_tokenizer(resolve(name), revision)  # LLaDA's is a plain fast tokenizer


@register_model("llada")
class LLaDAAdapter(FolderAdapter):
    family = "llada"
    load_model = staticmethod(load_llada)
    load_tokenizer = staticmethod(_tokenizer)
    embedding_rows = "embedding_size"
