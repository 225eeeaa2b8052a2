"""lm-eval backend "ard": the decoder-only AR-Diffusion of ``models.ard`` through the shared adapter base.

Loads a ``save_pretrained`` folder of ``ARDiffusionLM`` (no public LM-scale weights exist), generates
with ARD's position-dependent skip sampler (``decoding.ard``) and scores with the NELBO of that
sampler's chain (``scoring.ard``); requests, stop strings, chat templates, seeds, data parallelism and
records are the base's.
"""

from __future__ import annotations

import lm_eval.models  # noqa: F401  (lm-eval's built-in backends first, see adapters/__init__.py)
from lm_eval.api.registry import register_model

from ..models.ard import load_ard
from .base import FolderAdapter
from .llada import _tokenizer


@register_model("ard")
class ARDAdapter(FolderAdapter):
    family = "ard"
    load_model = staticmethod(load_ard)
    load_tokenizer = staticmethod(_tokenizer)  # LLaDA's: AutoTokenizer of a checkpoint folder or hub id
    embedding_rows = "vocab_size"
