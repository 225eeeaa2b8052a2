"""Evo (arXiv 2603.06617): the family contract — build, load, initialise from Llama.

* ``random_model(shape, dtype=, device=, seed=)``: a card's shape with random weights, built on the
  meta device and materialised directly on ``device`` in ``dtype`` (an 8.5B model never exists as a
  float32 CPU copy).
* ``load_evo(checkpoint, card=..., device=, dtype=)``: a ``save_pretrained`` folder (or hub id) of
  the Evo architecture; a missing path, a non-Evo checkpoint, a shape other than the card's or
  missing/mis-shaped weights each raise a one-line ``CheckpointError``.
* ``init_from_llama(llama)``: the paper's "pretrained init" (§2.3: "initialize Evo from pretrained
  language models by mapping their token embeddings to latent initializations"): a Llama-family
  checkpoint's embeddings, blocks, final norm and head are copied under the same names; the time
  embedding starts at zero, so the mapped model's AR limit is the Llama model exactly.
  ``training.freeze_backbone`` gives the "frozen AR backbone" variant.
* a tiny random Evo with a tokenizer, for tests and the demo: ``evo_eval.tiny.build_tiny_checkpoint("evo", DIR)``.

Importing this module registers ``EvoConfig``/``EvoForLatentFlow`` with transformers' ``AutoConfig``,
``AutoModel`` and ``AutoModelForCausalLM`` (the causal-LM view is Evo's exact AR limit), so
``AutoModel.from_pretrained(DIR)`` works once ``evo_eval.models.evo`` is imported. The XL shape of
the ``evo-8b`` card is derived in ``evo_config``'s docstring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from ..errors import CheckpointError
from .building import normal_fill, random_weights, register_auto
from .checkpoints import load_weights, looks_like_hub_id, resolve_folder
from .evo_config import EvoConfig
from .evo_modeling import EvoForLatentFlow

TINY_SHAPE: dict[str, Any] = dict(
    architecture="EvoForLatentFlow", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128,
    vocab_size=512, max_seq_len=2048, rope_theta=10000.0, rms_norm_eps=1e-5, tie_embeddings=True,
    time_embed_dim=32,
)


register_auto(EvoConfig, EvoForLatentFlow, AutoModel, AutoModelForCausalLM)


# ---- random weights ----------------------------------------------------------------------------------


def random_model(shape: dict[str, Any], *, dtype: torch.dtype, device: torch.device | str,
                 seed: int = 0) -> EvoForLatentFlow:
    """The card's shape with random weights, allocated on ``device`` in ``dtype`` directly.

    Every matrix (the time embedding's output layer included, which a trained init would zero) is
    drawn from N(0, 0.02) by a seeded generator on the device, norms are one and biases zero, so no
    pathway is inert when tests or timings run on synthetic weights.
    """
    config = EvoConfig.from_shape(shape)
    fill = normal_fill(config.initializer_range, ones=("norm.weight",), zeros=(".bias",))
    return random_weights(lambda: EvoForLatentFlow(config), dtype=dtype, device=device, seed=seed, fill=fill)


# ---- checkpoints ---------------------------------------------------------------------------------------


def _resolve(checkpoint: str | Path) -> str:
    return resolve_folder(checkpoint, "pass a save_pretrained folder of the Evo architecture (or a hub id owner/name)")


def read_config(checkpoint: str | Path, revision: str | None = None) -> EvoConfig:
    """The checkpoint's EvoConfig; anything that is not an Evo checkpoint is a CheckpointError."""
    where = _resolve(checkpoint)
    try:
        config = AutoConfig.from_pretrained(where, revision=revision)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the config of {checkpoint} ({type(exc).__name__})",
                              "pass a local save_pretrained folder, or log in / check the hub id") from None
    if not isinstance(config, EvoConfig):
        raise CheckpointError(
            f"{checkpoint} is a '{getattr(config, 'model_type', '?')}' checkpoint, not Evo",
            "convert a Llama checkpoint with evo_eval.models.evo.init_from_llama(...).save_pretrained(DIR)")
    return config


def load_evo(checkpoint: str | Path, *, revision: str | None = None, card: Any = None,
             device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> EvoForLatentFlow:
    """An Evo ``save_pretrained`` folder (or hub id) on ``device`` in ``dtype``, checked against a card."""
    config = read_config(checkpoint, revision)
    return load_weights(EvoForLatentFlow, _resolve(checkpoint), checkpoint, config=config, card=card, revision=revision,
                        device=device, dtype=dtype)


# ---- pretrained init from a Llama-family checkpoint ---------------------------------------------------


def _llama(source: Any):
    from transformers import LlamaForCausalLM

    if isinstance(source, LlamaForCausalLM):
        return source
    if isinstance(source, torch.nn.Module):
        raise CheckpointError(f"init_from_llama got a {type(source).__name__}, not a LlamaForCausalLM",
                              "pass a Llama checkpoint folder or a transformers LlamaForCausalLM")
    where = Path(source).expanduser()
    if not where.exists() and not looks_like_hub_id(str(source)):
        raise CheckpointError(f"Llama checkpoint {source} does not exist", "pass a Llama save_pretrained folder")
    try:
        config = AutoConfig.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the config of {source} ({type(exc).__name__})",
                              "pass a Llama save_pretrained folder") from None
    if config.model_type != "llama":
        raise CheckpointError(f"{source} is a '{config.model_type}' checkpoint, not Llama",
                              "pass a Llama-family checkpoint (Evo's blocks have Llama's shape and names)")
    return LlamaForCausalLM.from_pretrained(str(source), dtype=torch.float32)


def init_from_llama(llama: Any, *, tie_word_embeddings: bool | None = None,
                    time_embed_dim: int = 256) -> EvoForLatentFlow:
    """Evo with a Llama model's embeddings, blocks, norm and head; new time modules (trainable, float32).

    ``tie_word_embeddings=None`` keeps the source's choice (an untied Llama head is copied, so the AR
    limit equals the source); ``True`` ties the output to the input table as the paper's Evo does.
    """
    src = _llama(llama)
    c = src.config
    rope = dict(getattr(c, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise CheckpointError(f"the Llama checkpoint uses rope type '{rope.get('rope_type')}', which Evo's "
                              "rotary embedding does not implement", "use a checkpoint with default rotary embeddings")
    if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
        raise CheckpointError("the Llama checkpoint has attention or MLP biases, which Evo's blocks do not",
                              "use a standard Llama checkpoint")
    table = src.get_input_embeddings().weight.detach().float()
    tie = bool(c.tie_word_embeddings) if tie_word_embeddings is None else bool(tie_word_embeddings)
    config = EvoConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, max_position_embeddings=c.max_position_embeddings,
        rope_theta=float(rope.get("rope_theta", 10000.0)), rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=tie,
        time_embed_dim=time_embed_dim, latent_scale=float(1.0 / table.pow(2).mean().sqrt()),
        initializer_range=getattr(c, "initializer_range", 0.02),
        bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id,
    )
    model = EvoForLatentFlow(config)
    state = {k: v for k, v in src.state_dict().items() if not k.endswith("rotary_emb.inv_freq")}
    if tie:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if k != "lm_head.weight"]
    backbone_missing = [k for k in missing if not k.startswith(("time_embed.", "time_head."))]
    if backbone_missing or unexpected:
        bad = (backbone_missing or unexpected)[0]
        raise CheckpointError(f"the Llama checkpoint does not map onto Evo's backbone (e.g. {bad})",
                              "pass a plain LlamaForCausalLM checkpoint")
    return model
