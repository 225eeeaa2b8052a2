"""Dream-v0 7B (Dream-org/Dream-v0-Base-7B / Dream-v0-Instruct-7B): network and loader, no remote code.

The published checkpoints ship ``configuration_dream.py`` / ``modeling_dream.py`` as remote code
(config.json: ``model_type: "Dream"``, ``architectures: ["DreamModel"]``, an ``auto_map``). Facts
from those files (as vendored in NVlabs/Fast-dLLM ``dream/model/``) and DreamLM/Dream ``eval/eval.py``,
read, not copied:

* the network is Qwen2.5-7B's: weights ``model.embed_tokens``, ``model.layers.N.{input_layernorm,
  self_attn.{q,k,v}_proj`` (with biases) ``, self_attn.o_proj, post_attention_layernorm,
  mlp.{gate,up,down}_proj}``, ``model.norm`` and an untied ``lm_head``; the config keys are
  Qwen2's plus ``mask_token_id`` (151666; pad = bos = eos = 151643);
* attention is bidirectional (``is_causal = False``, the "full" mask);
* the logits are shifted right by one, as the model was adapted from an autoregressive one:
  position i's prediction is read from position i-1's output (``torch.cat([logits[:, :1],
  logits[:, :-1]], 1)`` in ``generation_utils.py`` and ``eval.py``).

So ``DreamModel`` is transformers' ``Qwen2ForCausalLM`` under the ``Dream`` config type with a full
attention mask; ``DreamModel.from_pretrained`` loads a hub id or a local folder in the published
layout (the class is named explicitly, so the config's ``auto_map`` is never executed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, Qwen2Config, Qwen2ForCausalLM

from ..errors import CheckpointError
from .building import hf_random_model, register_auto
from .checkpoints import check_card_fit, load_qwen2_layout

MASK_TOKEN_ID = 151666
ARCHITECTURE = "DreamModel"

# Dream-v0-Base-7B's config.json (Qwen2.5-7B's shape).
SHAPE_7B: dict[str, Any] = dict(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
    num_key_value_heads=4, max_position_embeddings=131072, rope_theta=1000000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=False, mask_token_id=MASK_TOKEN_ID, pad_token_id=151643, bos_token_id=151643,
    eos_token_id=151643,
)
# The same layout scaled down (GQA kept: 4 query heads per key/value head, as the 7B's 28/4... 7).
TINY_SHAPE: dict[str, Any] = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=2048, rope_theta=1000000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=False, mask_token_id=511, pad_token_id=510, bos_token_id=510, eos_token_id=510,
)


class DreamConfig(Qwen2Config):
    model_type = "Dream"

    def __init__(self, mask_token_id: int = MASK_TOKEN_ID, **kwargs: Any) -> None:
        kwargs.setdefault("use_cache", False)  # a diffusion model keeps no cache
        super().__init__(**kwargs)
        self.mask_token_id = mask_token_id


class DreamModel(Qwen2ForCausalLM):
    config_class = DreamConfig

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        """``model(x).logits`` as published: unshifted, in the weights' dtype, every position seeing
        every other (``attention_mask`` (batch, n), if given, masks padded keys)."""
        kwargs.pop("use_cache", None)
        return super().forward(input_ids=input_ids, attention_mask=self._full_mask(input_ids, attention_mask),
                               use_cache=False, **kwargs)

    @staticmethod
    def _full_mask(ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        b, n = ids.shape
        if attention_mask is None:
            return torch.ones(b, 1, n, n, dtype=torch.bool, device=ids.device)
        keys = attention_mask.bool()
        return (keys[:, None, :, None] & keys[:, None, None, :]).expand(b, 1, n, n)

    def denoise(self, ids: torch.Tensor, rows: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Shifted logits (batch, rows, vocab) in the weights' dtype: row i from position i-1's output
        (row 0 from its own). The head runs over every position, as the published forward does: a
        GEMM over fewer rows can round differently, and the samplers compare confidences exactly."""
        logits = self(ids).logits
        shifted = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return shifted if rows is None else shifted[:, rows]


register_auto(DreamConfig, DreamModel, AutoModel)


def random_model(shape: dict[str, Any], *, dtype: torch.dtype, device: torch.device | str, seed: int = 0) -> DreamModel:
    """A DreamModel of ``shape`` (config keys; a card's ``architecture`` key is ignored) with seeded random weights."""
    config = DreamConfig(**{k: v for k, v in shape.items() if k != "architecture"})
    return hf_random_model(DreamModel, config, dtype=dtype, device=device, seed=seed)


def load_dream(checkpoint: str | Path, *, revision: str | None = None, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.bfloat16) -> DreamModel:
    """Dream-org/Dream-v0-{Base,Instruct}-7B (any revision) or a local folder in that layout."""
    def validate(config: DreamConfig) -> None:
        if getattr(config, "mask_token_id", None) is None:
            raise CheckpointError(f"{checkpoint} has no mask_token_id: not a Dream checkpoint",
                                  "pass a Dream-org/Dream-v0-* checkpoint")

    return load_qwen2_layout(DreamModel, DreamConfig, checkpoint, revision=revision, device=device, dtype=dtype,
                             name="Dream", source="a Dream-org/Dream-v0-* hub id", validate=validate)


# ---- the card's shape, and a tiny checkpoint in the published layout ---------------------------------------

# The keys that decide whether a checkpoint's weights fit a card (config.json names).
ARCHITECTURE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "tie_word_embeddings")
# The published config.json's auto_map: kept so tiny checkpoints look like the real ones; never executed.
AUTO_MAP = {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"}


def load_for_card(checkpoint: str | Path, *, revision: str | None = None, card: Any = None,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16) -> DreamModel:
    """``load_dream``, then the checkpoint's shape checked against the card's (one line if they differ)."""
    model = load_dream(checkpoint, revision=revision, device=device, dtype=dtype)
    if card is not None:
        check_card_fit(model.config, card, ARCHITECTURE_KEYS, checkpoint)
    return model
