"""lm-eval backend ``evo``: Evo checkpoints through the shared adapter base.

Everything request-shaped (batching, ``until``, chat templates, data parallelism, per-request seeds
and records) is the base's; this file only loads the network and tokenizer and names the sampler
(``decoding.evo``) and the likelihood estimator (``scoring.evo``). Settings come from the card's
decoding/likelihood blocks and ``model_args``, e.g. ``schedule=fixed:0.5`` or ``estimator=ar``; the
results' decoding record lists every setting in force that is not the paper's (``departures``).

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
from .base import EvalAdapter, load_tokenizer


@register_model("evo")
class EvoAdapter(EvalAdapter):
    family = "evo"

    def load(self, checkpoint: str, revision: str | None, tokenizer: str | None, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
        model = load_evo(checkpoint, revision=revision, card=self.card, device=device, dtype=dtype)
        tok = load_tokenizer(tokenizer or checkpoint, revision if tokenizer is None else None)
        if len(tok) > model.config.vocab_size:
            raise CheckpointError(
                f"the tokenizer of {tokenizer or checkpoint} has {len(tok)} tokens but the model only "
                f"{model.config.vocab_size}", "pass the tokenizer the checkpoint was trained with (tokenizer=DIR)")
        if tok.eos_token_id is None:
            raise CheckpointError(f"the tokenizer of {tokenizer or checkpoint} defines no end-of-sequence token",
                                  "save the tokenizer with eos_token set")
        return model, tok

    def decoding_settings(self) -> dict[str, Any]:
        """The base's record, plus every departure from the paper and from the card in force, named."""
        out = super().decoding_settings()
        out["departures"] = departures(self.sampler_config, self.scorer_config, self.card)
        return out


def departures(sampler: Any, scorer: Any, card: Any = None) -> list[str]:
    """Each setting in force that is not the paper's Evo, in words (stored in the results' decoding
    record; ``table`` footnotes them). The card's own ablation schedule (a separately trained
    variant's) is that variant, not a departure; the same schedule on the full model's checkpoint is
    the labelled inference-time fallback."""
    from ..ablation import FALLBACK_LABEL, trained_variant

    out = []
    own = trained_variant(card) if card is not None else None
    if int(sampler.block_length) > 0:
        out.append(f"block_length={sampler.block_length}: decoded in blocks (the paper refines the whole answer canvas)")
    if sampler.schedule != (own.schedule if own else "learned"):
        out.append(f"schedule={sampler.schedule}: {FALLBACK_LABEL} (the paper trains each Figure 3 variant)")
    if int(scorer.block_length) > 0:
        out.append(f"likelihood block_length={scorer.block_length}: ELBO in blocks (the paper's is over the whole sequence)")
    if scorer.estimator != "elbo":
        out.append(f"likelihood estimator={scorer.estimator}: the exact AR limit (t = 0), not the ELBO")
    if not scorer.time_conditioning and not (own and own.training.get("time_conditioning") is False):
        out.append(f"likelihood time_conditioning=false: {FALLBACK_LABEL}")
    if int(sampler.k_max) != 20:
        out.append(f"k_max={sampler.k_max} (the paper: 20)")
    return out
