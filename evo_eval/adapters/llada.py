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

from ..errors import CheckpointError, first_line
from ..models.llada import load_llada, resolve
from .base import FolderAdapter


def load_tokenizer(name: str, revision: str | None) -> Any:
    """A checkpoint's tokenizer through AutoTokenizer (LLaDA's is a plain fast tokenizer)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve(name), revision=revision)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the tokenizer of {name}: {first_line(exc)}",
                              "pass tokenizer=DIR (model_args) with the checkpoint's tokenizer files") from None


@register_model("llada")
class LLaDAAdapter(FolderAdapter):
    family = "llada"
    load_model = staticmethod(load_llada)
    load_tokenizer = staticmethod(load_tokenizer)
    embedding_rows = "embedding_size"
