"""lm-eval backend "bd3lm": BD3-LM through the DiT adapter (``adapters/mdlm.py``).

Generates with ``decoding.block`` (blocks left to right, KV cache, first hitting or ancestral,
nucleus) and scores with ``scoring.bd3lm`` (the block NELBO in one ``x_t ⊕ x_0`` forward). The block
size is the checkpoint's own.

Length: generation covers whole blocks, so prompt + ``max_gen_toks`` may grow by up to
block_size - 1 positions before it reaches the trained context; the default ``max_length`` is
therefore ``model_length - block_size + 1``, which makes the base's left-truncation of the prompt
keep the rounded-up canvas inside the context.
"""

from __future__ import annotations

import lm_eval.models  # noqa: F401  (lm-eval's built-in backends first, see adapters/__init__.py)
from lm_eval.api.registry import register_model

from ..models import bd3lm as bd3lm_model
from .mdlm import DiTAdapter


@register_model("bd3lm")
class BD3LMAdapter(DiTAdapter):
    family = "bd3lm"
    model_module = bd3lm_model

    def _default_max_length(self) -> int:
        return int(self.model.config.model_length) - self.model.block_size + 1
