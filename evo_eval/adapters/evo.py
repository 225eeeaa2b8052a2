"""lm-eval backend ``evo``: Evo checkpoints through the shared adapter base.

Everything request-shaped (batching, ``until``, chat templates, data parallelism, per-request seeds
and records) is the base's; this file only loads the network and tokenizer and names the sampler
(``decoding.evo``) and the likelihood estimator (``scoring.evo``). Settings come from the card's
decoding/likelihood blocks and ``model_args``, e.g. ``schedule=fixed:0.5`` or ``estimator=ar``.

lm-eval's own CLI reaches it through ``evo_eval.lm_eval_cli`` (which imports the adapters first):

    python -m evo_eval.lm_eval_cli run --model evo --device cuda \\
        --model_args pretrained=DIR,card=evo-8b,schedule=learned --tasks evo_gsm8k --include_path tasks

(checked offline with a tiny checkpoint: ``--tasks evo_ppl,evo_gsm8k --limit 2 --metadata
'{"data_dir": MIRROR}'``). The device goes in ``--device``, not in ``model_args``.
"""

from __future__ import annotations

from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval's built-in backends register before ours; see adapters/__init__)
import torch
from lm_eval.api.registry import register_model

from ..errors import CheckpointError
from ..models.evo import load_evo
from .base import EvalAdapter


@register_model("evo")
class EvoAdapter(EvalAdapter):
    family = "evo"

    def load(self, checkpoint: str, revision: str | None, tokenizer: str | None, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
        model = load_evo(checkpoint, revision=revision, card=self.card, device=device, dtype=dtype)
        tok = _tokenizer(tokenizer or checkpoint, revision if tokenizer is None else None)
        if len(tok) > model.config.vocab_size:
            raise CheckpointError(
                f"the tokenizer of {tokenizer or checkpoint} has {len(tok)} tokens but the model only "
                f"{model.config.vocab_size}", "pass the tokenizer the checkpoint was trained with (tokenizer=DIR)")
        if tok.eos_token_id is None:
            raise CheckpointError(f"the tokenizer of {tokenizer or checkpoint} defines no end-of-sequence token",
                                  "save the tokenizer with eos_token set")
        return model, tok


def _tokenizer(name: str, revision: str | None):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(name), revision=revision)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"cannot load a tokenizer from {name} ({type(exc).__name__})",
                              "save the tokenizer into the checkpoint folder or pass tokenizer=DIR") from None
