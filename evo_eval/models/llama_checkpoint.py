"""Loading Hugging Face Llama and Qwen2 checkpoints into the fast decoder of ``models/llama.py``:
q/k/v and gate/up fused row-wise, every tensor checked for name and shape (a one-line
CheckpointError otherwise), from a local folder or a hub id with revision."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import CheckpointError
from .building import inference_only
from .checkpoints import looks_like_hub_id
from .llama import LlamaDecoder, LlamaShape

def _hf_key_map(s: LlamaShape) -> dict[str, tuple[str, ...]]:
    """Our parameter name -> the transformers names it is made of (concatenated along rows)."""
    out = {"embed.weight": ("model.embed_tokens.weight",), "norm": ("model.norm.weight",)}
    if not s.tie_embeddings:
        out["lm_head.weight"] = ("lm_head.weight",)
    for i in range(s.n_layers):
        p, a, m = f"layers.{i}.", f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
        out[p + "attn_norm"] = (f"model.layers.{i}.input_layernorm.weight",)
        out[p + "ffn_norm"] = (f"model.layers.{i}.post_attention_layernorm.weight",)
        out[p + "wqkv.weight"] = (a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight")
        if s.qkv_bias:
            out[p + "wqkv.bias"] = (a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias")
        out[p + "wo.weight"] = (a + "o_proj.weight",)
        out[p + "w13.weight"] = (m + "gate_proj.weight", m + "up_proj.weight")
        out[p + "w2.weight"] = (m + "down_proj.weight",)
    return out


def load_hf_state_dict(model: LlamaDecoder, tensors: dict[str, torch.Tensor], where: str = "checkpoint") -> LlamaDecoder:
    """Copy a transformers Llama/Qwen2 state dict into ``model`` (fusing q/k/v and gate/up)."""
    key_map = _hf_key_map(model.shape)
    wanted = {name for parts in key_map.values() for name in parts}
    missing = sorted(wanted - set(tensors))
    if missing:
        raise CheckpointError(f"{where} lacks {len(missing)} weight(s), e.g. {missing[0]}",
                              "pass a complete Llama/Qwen2 checkpoint whose config.json matches its weights")
    # Rotary inverse frequencies are derived, not learned; older checkpoints store them.
    extra = sorted(k for k in set(tensors) - wanted if not k.endswith("rotary_emb.inv_freq"))
    if extra:
        raise CheckpointError(f"{where} has weight(s) this architecture lacks, e.g. {extra[0]}",
                              "pass a plain Llama/Qwen2 causal-LM checkpoint")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for ours, parts in key_map.items():
            value = torch.cat([tensors[p] for p in parts], dim=0) if len(parts) > 1 else tensors[parts[0]]
            target = params[ours]
            if tuple(value.shape) != tuple(target.shape):
                raise CheckpointError(
                    f"{where}: {parts[0]} has shape {tuple(tensors[parts[0]].shape)}, which does not fit the "
                    f"config's architecture", "check that config.json belongs to these weights")
            target.copy_(value.to(device=target.device, dtype=target.dtype))
    return model


def resolve_checkpoint(name_or_path: str, revision: str | None = None) -> Path:
    """A local folder as is; otherwise a hub id, fetched (config, weights, tokenizer) to the HF cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    # A hub id is "owner/name"; anything else that is not a folder is a mistyped local path.
    if not looks_like_hub_id(name_or_path):
        raise CheckpointError(f"checkpoint folder {name_or_path} does not exist",
                              "pass a save_pretrained folder or a hub id such as meta-llama/Meta-Llama-3-8B")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, revision=revision, allow_patterns=[
            "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
            "tokenizer*", "special_tokens_map.json"]))
    except Exception as exc:  # hub errors come in many classes; all mean "not reachable as given"
        raise CheckpointError(f"cannot fetch {name_or_path} from the hub ({type(exc).__name__})",
                              "log in / accept the licence, or pass a local save_pretrained folder") from None


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors weights in {folder}",
                              "save the model with save_pretrained(safe_serialization=True)")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(str(file)))
    return tensors


def load_pretrained(name_or_path: str, *, revision: str | None = None, dtype: torch.dtype,
                    device: torch.device | str) -> LlamaDecoder:
    """A transformers Llama/Qwen2 checkpoint (local folder or hub id) as a fast decoder."""
    folder = resolve_checkpoint(str(name_or_path), revision)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder} has no config.json", "pass a save_pretrained folder")
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{config_path} is not valid JSON", "restore the checkpoint's config.json") from None
    shape = LlamaShape.from_hf_config(cfg, str(config_path))
    with torch.device("meta"):
        model = LlamaDecoder(shape).to(dtype)
    model.to_empty(device=torch.device(device))
    load_hf_state_dict(model, _read_safetensors(folder), str(folder))
    return inference_only(model)
