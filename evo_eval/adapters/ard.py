"""lm-eval backend "ard": the decoder-only AR-Diffusion of ``models.ard`` through the shared adapter base.

Loads a ``save_pretrained`` folder of ``ARDiffusionLM`` (no public LM-scale weights exist), generates
with ARD's position-dependent skip sampler (``decoding.ard``) and scores with the NELBO of that
sampler's chain (``scoring.ard``); requests, stop strings, chat templates, seeds, data parallelism and
records are the base's.
"""

from __future__ import annotations

from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval's built-in backends first, see adapters/__init__.py)
import torch
from lm_eval.api.registry import register_model

from ..decoding.ard import ARDSampler
from ..errors import CheckpointError
from ..models.ard import load_ard
from ..scoring.ard import ARDScorer
from .base import EvalAdapter
from .llada import load_tokenizer


@register_model("ard")
class ARDAdapter(EvalAdapter):
    family = "ard"
    sampler_cls = ARDSampler
    scorer_cls = ARDScorer

    def load(self, checkpoint: str, revision: str | None, tokenizer: str | None, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
        model = load_ard(checkpoint, revision=revision, card=self.card, device=device, dtype=dtype)
        tok = load_tokenizer(tokenizer or checkpoint, None if tokenizer else revision)
        if len(tok) > model.config.vocab_size:
            raise CheckpointError(f"the tokenizer has {len(tok)} tokens but {checkpoint} embeds "
                                  f"{model.config.vocab_size}", "pass the checkpoint's own tokenizer")
        return model, tok
