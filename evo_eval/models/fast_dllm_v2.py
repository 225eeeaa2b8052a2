"""Fast-dLLM v2 7B (Efficient-Large-Model/Fast_dLLM_v2_7B): network and loader, no remote code.

The published checkpoint ships ``configuration.py`` / ``modeling.py`` as remote code (config.json:
``model_type: "Fast_dLLM_Qwen"``, ``architectures: ["Fast_dLLM_QwenForCausalLM"]``, an ``auto_map`` to
``configuration.Fast_dLLM_QwenConfig`` / ``modeling.Fast_dLLM_QwenModel`` /
``modeling.Fast_dLLM_QwenForCausalLM``). Facts from that ``modeling.py`` / ``configuration.py`` (the
hub repository's files, read in a public copy: Satgoy152/DualDiffusion
``FastDLLM_inferencing/Fast_dLLM_v2_7B/modeling.py``, which adds logging hooks to ``generate``; the
hub's ``configuration.py`` page for the config class; the config.json keys via the SGLang and
conversion scripts that name them), the model card, and NVlabs/Fast-dLLM ``v2/`` (commit 8292f3c:
``generation_functions.py``, ``eval.py``), read, not copied. The 7B config.json itself was not read:
its values below are Qwen2.5-7B-Instruct's, which the model card's shape matches.

* the network is Qwen2.5-7B-Instruct's (the model card: 28 layers, 28 query / 4 key-value heads, QKV
  bias, RoPE, SwiGLU, RMSNorm): ``Fast_dLLM_QwenForCausalLM`` holds ``model.{embed_tokens,
  layers.N.{input_layernorm, self_attn.{q,k,v}_proj`` (biases) ``, self_attn.o_proj,
  post_attention_layernorm, mlp.{gate,up,down}_proj}, norm}`` and an untied ``lm_head``: Qwen2's
  weight names exactly; the config is Qwen2's keys plus ``bd_size`` (32, the block);
* at inference the attention is block-causal (``eval_block_diff_mask``: query q sees key k iff
  ``q // block_size >= k // block_size`` over absolute positions, cache included): bidirectional
  within a block of 32, causal between blocks; RoPE positions continue after the cached length;
* the [MASK] id 151665 (``|<MASK>|``, a token added after Qwen2.5's) and the stop token 151645
  (``<|im_end|>``) are constants of the code (``FAST_DLLM_MASK_ID``, ``FAST_DLLM_STOP_TOKEN``), not
  config keys; masked positions are read through the token shift (position i's prediction from
  position i-1's output, ``torch.cat([logits[:, :1], logits[:, :-1]], 1)``), while the token after a
  finished block is the plain next-token prediction of its last position;
* the forward's ``block_size`` argument defaults to 32 (= ``bd_size``) and the authors' calls inside a
  block do not pass it; here the block comes from the caller (the sampler's), ``bd_size`` when none.

``FastDLLMv2Model`` is transformers' ``Qwen2ForCausalLM`` under the ``Fast_dLLM_Qwen`` config type,
given the block-causal mask; ``load_fast_dllm_v2`` reads a hub id or a local folder in the published
layout (the class is named explicitly, so the config's ``auto_map`` is never executed). The published
config has no ``mask_token_id``; ours defaults to 151665 and a tiny checkpoint stores its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, DynamicCache, Qwen2Config, Qwen2ForCausalLM

from ..errors import CheckpointError
from .building import hf_random_model, register_auto
from .checkpoints import check_card_fit, load_qwen2_layout

MASK_TOKEN_ID = 151665
STOP_TOKEN_ID = 151645  # <|im_end|>: Qwen2.5-Instruct's end of turn, the authors' stop_token
ARCHITECTURE = "Fast_dLLM_QwenForCausalLM"
BLOCK = 32

# Qwen2.5-7B-Instruct's config.json (the model card's shape) plus bd_size.
SHAPE_7B: dict[str, Any] = dict(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
    num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=False, bd_size=BLOCK, mask_token_id=MASK_TOKEN_ID, bos_token_id=151643,
    eos_token_id=STOP_TOKEN_ID, pad_token_id=151643,
)
# The same layout scaled down (GQA kept), the block kept at 32 so tiny runs decode whole blocks.
TINY_SHAPE: dict[str, Any] = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=2048, rope_theta=1000000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=False, bd_size=BLOCK, mask_token_id=511, bos_token_id=510, eos_token_id=509,
    pad_token_id=510,
)


class FastDLLMv2Config(Qwen2Config):
    model_type = "Fast_dLLM_Qwen"

    def __init__(self, bd_size: int = BLOCK, mask_token_id: int = MASK_TOKEN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bd_size = int(bd_size)
        self.mask_token_id = int(mask_token_id)


def block_causal_mask(n: int, past: int, block: int, device: torch.device | str) -> torch.Tensor:
    """(1, 1, n, past + n) booleans: query ``past + i`` sees key k iff their blocks satisfy
    ``q // block >= k // block`` (the published ``eval_block_diff_mask``)."""
    q = torch.arange(past, past + n, device=device)
    k = torch.arange(past + n, device=device)
    return ((q[:, None] // block) >= (k[None, :] // block))[None, None]


class FastDLLMv2Model(Qwen2ForCausalLM):
    config_class = FastDLLMv2Config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, block_size: int | None = None,
                cache: DynamicCache | None = None, **kwargs: Any):
        """The published inference forward: block-causal over the cache and ``input_ids`` (placed after
        the cache), logits unshifted in the weights' dtype. Without a cache, ``model(x).logits`` as
        the authors' likelihood code calls it. ``attention_mask`` is not used (one unpadded row)."""
        kwargs.pop("use_cache", None)
        kwargs.pop("past_key_values", None)
        past = cache.get_seq_length() if cache is not None else 0
        n = input_ids.shape[1]
        mask = block_causal_mask(n, past, block_size or self.config.bd_size, input_ids.device)
        positions = torch.arange(past, past + n, device=input_ids.device)[None]
        return super().forward(input_ids=input_ids, attention_mask=mask.expand(input_ids.shape[0], 1, n, past + n),
                               position_ids=positions, cache=cache, use_cache=cache is not None, **kwargs)

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.config)

    def extend(self, ids: torch.Tensor, cache: DynamicCache, block_size: int, *, keep: bool) -> torch.Tensor:
        """Logits (batch, n, vocab) of ``ids`` after ``cache``. ``keep``: their keys and values stay in
        the cache (the authors' ``update_past_key_values=True``); otherwise the cache is as before."""
        before = cache.get_seq_length()
        logits = self(ids, cache=cache, block_size=block_size).logits
        if not keep:
            cache.crop(before - cache.get_seq_length())  # negative: drop what this call appended
        return logits


register_auto(FastDLLMv2Config, FastDLLMv2Model, AutoModelForCausalLM)


def random_model(shape: dict[str, Any], *, dtype: torch.dtype, device: torch.device | str,
                 seed: int = 0) -> FastDLLMv2Model:
    """A FastDLLMv2Model of ``shape`` (config keys; a card's ``architecture`` key is ignored), seeded random weights."""
    config = FastDLLMv2Config(**{k: v for k, v in shape.items() if k != "architecture"})
    return hf_random_model(FastDLLMv2Model, config, dtype=dtype, device=device, seed=seed)


def load_fast_dllm_v2(checkpoint: str | Path, *, revision: str | None = None, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.bfloat16) -> FastDLLMv2Model:
    """Efficient-Large-Model/Fast_dLLM_v2_7B (any revision) or a local folder in that layout."""
    def validate(config: FastDLLMv2Config) -> None:
        if config.model_type != FastDLLMv2Config.model_type and ARCHITECTURE not in (config.architectures or []):
            raise CheckpointError(f"{checkpoint} is not a Fast-dLLM v2 checkpoint (no {ARCHITECTURE})",
                                  "pass Efficient-Large-Model/Fast_dLLM_v2_7B or a folder in its layout")

    return load_qwen2_layout(FastDLLMv2Model, FastDLLMv2Config, checkpoint, revision=revision, device=device,
                             dtype=dtype, name="Fast-dLLM v2", source="Efficient-Large-Model/Fast_dLLM_v2_7B",
                             validate=validate)


# ---- the card's shape, and a tiny checkpoint in the published layout ---------------------------------------

ARCHITECTURE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "tie_word_embeddings", "bd_size")
# The published config.json's auto_map: kept so tiny checkpoints look like the real one; never executed.
AUTO_MAP = {"AutoConfig": "configuration.Fast_dLLM_QwenConfig", "AutoModel": "modeling.Fast_dLLM_QwenModel",
            "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM"}


def load_for_card(checkpoint: str | Path, *, revision: str | None = None, card: Any = None,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16) -> FastDLLMv2Model:
    """``load_fast_dllm_v2``, then the checkpoint's shape checked against the card's (one line if they differ)."""
    model = load_fast_dllm_v2(checkpoint, revision=revision, device=device, dtype=dtype)
    if card is not None:
        check_card_fit(model.config, card, ARCHITECTURE_KEYS, checkpoint)
    return model
