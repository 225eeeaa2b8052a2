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

from ..errors import CheckpointError, first_line
from ..models.dit import GPT2_TOKENIZER, GPT2_VOCAB_WITH_MASK
from ..models import mdlm as mdlm_model
from .base import EvalAdapter


def load_tokenizer(checkpoint: str, revision: str | None, tokenizer: str | None, vocab_size: int):
    """The tokenizer named (model_args / card), else the checkpoint folder's, else -- for the published
    OWT checkpoints, which ship none -- GPT-2's, which they were trained with."""
    from transformers import AutoTokenizer

    source, rev = (tokenizer, None) if tokenizer else (checkpoint, revision)
    # trust_remote_code=False: the checkpoints' auto_map would otherwise make transformers ask on stdin.
    try:
        return _checked(AutoTokenizer.from_pretrained(source, revision=rev, trust_remote_code=False), source, vocab_size)
    except (OSError, ValueError, TypeError) as exc:
        if tokenizer is not None or vocab_size != GPT2_VOCAB_WITH_MASK:
            raise CheckpointError(f"cannot load a tokenizer from {source} ({type(exc).__name__}: {first_line(exc, 200, '')})",
                                  "pass tokenizer=NAME_OR_DIR in model_args or set the card's tokenizer field") from None
    try:
        return _checked(AutoTokenizer.from_pretrained(GPT2_TOKENIZER), GPT2_TOKENIZER, vocab_size)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint} ships no tokenizer and GPT-2's, which it was trained with, cannot be "
                              f"loaded ({type(exc).__name__}: {first_line(exc, 200, '')})",
                              "pass tokenizer=DIR (model_args) with GPT-2's tokenizer files, or go online once") from None


def _checked(tokenizer, source: str, vocab_size: int):
    if len(tokenizer) > vocab_size:
        raise CheckpointError(f"tokenizer {source} has {len(tokenizer)} ids but the checkpoint's vocabulary holds {vocab_size}",
                              "pass the tokenizer the checkpoint was trained with")
    if tokenizer.eos_token_id is None:
        raise CheckpointError(f"tokenizer {source} defines no end-of-sequence token",
                              "pass the tokenizer the checkpoint was trained with")
    return tokenizer


def resolve_mask_token_id(config, tokenizer) -> int:
    """[MASK]: the checkpoint's own ``mask_token_id`` if its config names one, else the tokenizer's
    mask token, else the last id (diffusion.py appends [MASK] after a tokenizer that has none)."""
    explicit = getattr(config, "mask_token_id", None)
    if explicit is not None:
        mask = int(explicit)
    elif getattr(tokenizer, "mask_token_id", None) is not None:
        mask = int(tokenizer.mask_token_id)
    else:
        mask = config.vocab_size - 1
        if len(tokenizer) > mask:
            raise CheckpointError(f"the tokenizer has no mask token and fills the whole vocabulary of {config.vocab_size}",
                                  "pass the tokenizer the checkpoint was trained with, or set mask_token_id in config.json")
    if not 0 <= mask < config.vocab_size:
        raise CheckpointError(f"mask token id {mask} is outside the checkpoint's vocabulary of {config.vocab_size}",
                              "pass the tokenizer the checkpoint was trained with")
    return mask


class DiTAdapter(EvalAdapter):
    model_module: ClassVar[ModuleType]  # models.mdlm or models.bd3lm: load_pretrained(...)

    def load(self, checkpoint: str, revision: str | None, tokenizer: str | None, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
        model = self.model_module.load_pretrained(checkpoint, revision=revision, dtype=dtype, device=device)
        named = tokenizer or (self.card.tokenizer if self.card else None)
        tok = load_tokenizer(checkpoint, revision, named, model.config.vocab_size)
        model.config.mask_token_id = resolve_mask_token_id(model.config, tok)
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
