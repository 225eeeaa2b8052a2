"""LLaDA 8B (GSAI-ML/LLaDA-8B-Base / -Instruct): its network and checkpoint loader, without remote code.

The published checkpoints ship ``configuration_llada.py`` / ``modeling_llada.py`` as remote code
(config.json: ``model_type: "llada"``, ``auto_map`` to ``LLaDAModelLM``); transformers has no class
for them. This module registers its own ``LLaDAConfig`` for model type ``llada`` and a
``LLaDAModelLM`` with the published weight names with transformers' Auto classes, so
``from_pretrained("GSAI-ML/LLaDA-8B-Base", revision=...)`` and ``from_pretrained(local_dir)`` load
through one path and never execute the checkpoint's code (its ``auto_map`` is kept in the config
and ignored).

Facts taken from the published layout (config.json and model.safetensors.index.json of the hub
repositories; ML-GSAI/LLaDA and NVlabs/Fast-dLLM ``modeling_llada.py``, read, not copied):

* weights ``model.transformer.wte``, ``model.transformer.blocks.N.{attn_norm, q_proj, k_proj,
  v_proj, attn_out, ff_norm, ff_proj, up_proj, ff_out}``, ``model.transformer.ln_f`` and the untied
  head ``model.transformer.ff_out`` (``weight_tying: false``); no biases (``include_bias: false``);
* the "llama" block: pre-norm RMSNorm (normalise in float32, cast back, then scale), rotary
  positions in full precision (``rope_full_precision``), half-split rotation, theta 500,000,
  bidirectional scaled-dot-product attention, a gated MLP ``ff_out(silu(ff_proj(x)) * up_proj(x))``
  (``activation_type: silu``; ``ff_proj`` is the gate);
* LLaDA-8B: d_model 4096, 32 layers, 32 heads (no GQA), mlp_hidden_size 12288, vocab = embedding
  size 126,464, ``[MASK]`` 126,336, EOS 126,081, 4096 positions: 8.02B parameters, 6.98B of them
  outside the two embedding tables.

Options of the remote code that LLaDA never uses (ALiBi, QK-norm, input-embedding norm, biases,
scaled logits, other block or norm types) raise a one-line ``CheckpointError`` instead of being
silently computed differently.

Inference primitives for the samplers and scorers (``denoise``, ``new_cache``): the head runs only on
the rows a caller asks for (a block, an answer), which is exact since every row's logits come from
the same bidirectional pass; a ``LLaDACache`` holds every layer's keys/values so the Fast-dLLM
prefix and dual caches (NVlabs/Fast-dLLM ``llada/generate.py``) are one primitive: a window of
positions writes its keys/values at its positions and attends to the whole cache.

Cost: the bidirectional pass is one ``scaled_dot_product_attention`` call per layer (flash kernels
for bf16 on GPUs, no mask) and plain GEMMs over all positions at once, with no Python loop over
tokens and no host synchronisation inside the forward; ``random_model`` builds any card's shape
directly on the target device in the target dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForMaskedLM, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from ..errors import CheckpointError
from .building import meta_parameter_count, normal_fill, random_weights, register_auto
from .checkpoints import load_weights, read_family_config, resolve_folder
from .layers import CastRMSNorm, rotary_cos_sin, rotate_half
from .shapes import CardShapeConfig

ARCHITECTURE = "LLaDAModelLM"
MASK_TOKEN_ID = 126336
EOS_TOKEN_ID = 126081
EOT_TOKEN_ID = 126348  # <|eot_id|>, the end of an Instruct turn

# A scaled-down LLaDA for CPU tests and CPU speed runs. The special ids sit at the top of the
# vocabulary, as the published ones do, so a proxy tokenizer keeps clear of them.
TINY_SHAPE: dict[str, Any] = dict(
    architecture=ARCHITECTURE, n_layers=2, d_model=64, n_heads=4, n_kv_heads=4, d_ff=128, vocab_size=512,
    max_seq_len=2048, rope_theta=500000.0, rms_norm_eps=1e-5, mask_token_id=511, eos_token_id=510,
    tie_embeddings=False,
)

# Card shape key -> config attribute.
SHAPE_KEYS = {
    "n_layers": "n_layers", "d_model": "d_model", "n_heads": "n_heads", "n_kv_heads": "n_kv_heads",
    "d_ff": "mlp_hidden_size", "vocab_size": "vocab_size", "max_seq_len": "max_sequence_length",
    "rope_theta": "rope_theta", "rms_norm_eps": "rms_norm_eps", "mask_token_id": "mask_token_id",
    "eos_token_id": "eos_token_id", "tie_embeddings": "weight_tying",
}
# The keys that decide whether a checkpoint's weights fit a card.
ARCHITECTURE_KEYS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_ff", "vocab_size", "tie_embeddings")


class LLaDAConfig(CardShapeConfig, PreTrainedConfig):
    """The published ``configuration_llada.py`` fields (defaults: LLaDA-8B's config.json)."""

    model_type = "llada"
    FAMILY = "LLaDA"
    ARCHITECTURE = ARCHITECTURE
    SHAPE_KEYS = SHAPE_KEYS
    ARCHITECTURE_KEYS = ARCHITECTURE_KEYS
    REQUIRED_SHAPE_KEYS = ("n_layers", "d_model", "n_heads", "d_ff", "vocab_size")
    attribute_map = {
        "hidden_size": "d_model", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers",
        "num_key_value_heads": "n_kv_heads", "intermediate_size": "mlp_hidden_size",
        "max_position_embeddings": "max_sequence_length",
    }

    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int | None = 32
    n_layers: int = 32
    mlp_ratio: int = 4
    mlp_hidden_size: int | None = 12288
    activation_type: str = "silu"
    block_type: str = "llama"
    block_group_size: int = 1
    alibi: bool = False
    alibi_bias_max: float = 8.0
    rope: bool = True
    rope_full_precision: bool = True
    flash_attention: bool = False
    attention_dropout: float = 0.0
    multi_query_attention: bool | None = None
    attention_layer_norm: bool = False
    residual_dropout: float = 0.0
    embedding_dropout: float = 0.0
    input_emb_norm: bool = False
    layer_norm_type: str = "rms"
    layer_norm_with_affine: bool = True
    rms_norm_eps: float = 1e-5
    attention_layer_norm_with_affine: bool = True
    max_sequence_length: int = 4096
    rope_theta: float = 500000.0
    include_qkv_bias: bool | None = False
    include_bias: bool = False
    bias_for_layer_norm: bool | None = False
    scale_logits: bool = False
    vocab_size: int = 126464
    embedding_size: int | None = 126464
    weight_tying: bool = False
    eos_token_id: int | None = EOS_TOKEN_ID
    pad_token_id: int | None = EOS_TOKEN_ID
    mask_token_id: int | None = MASK_TOKEN_ID
    init_device: str | None = "meta"
    init_fn: str = "mitchell"
    init_std: float = 0.02
    init_cutoff_factor: float | None = None
    precision: str | None = "amp_bf16"
    use_cache: bool = False

    def __post_init__(self, **kwargs):
        if self.n_kv_heads is None:
            self.n_kv_heads = 1 if self.multi_query_attention else self.n_heads
        if self.mlp_hidden_size is None:
            self.mlp_hidden_size = self.mlp_ratio * self.d_model
        if self.embedding_size is None:
            self.embedding_size = self.vocab_size
        kwargs.setdefault("architectures", [ARCHITECTURE])
        # The head is tied by reusing wte in the forward, never through transformers' tying.
        kwargs["tie_word_embeddings"] = False
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    # ---- what this implementation computes -------------------------------------------------------

    def problem(self) -> str | None:
        """The first option this network does not implement, as '<key>=<value>', or None."""
        wanted = dict(block_type="llama", activation_type="silu", layer_norm_type="rms", rope=True, alibi=False,
                      attention_layer_norm=False, input_emb_norm=False, include_bias=False, scale_logits=False,
                      layer_norm_with_affine=True)
        for key, value in wanted.items():
            if getattr(self, key) != value:
                return f"{key}={getattr(self, key)}"
        if self.include_qkv_bias or self.bias_for_layer_norm:
            return "biases"
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            return f"d_model={self.d_model} with n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}"
        return None

    # ---- card shapes (from_shape, check_fits: CardShapeConfig) ----------------------------------------

    @classmethod
    def _from_shape_values(cls, values: dict[str, Any], extra: dict[str, Any]) -> "LLaDAConfig":
        values["embedding_size"] = values["vocab_size"]
        return super()._from_shape_values(values, extra)

    def to_shape(self) -> dict[str, Any]:
        out = super().to_shape()
        out["vocab_size"] = self.embedding_size
        return out


# ---- the network ------------------------------------------------------------------------------------


class RotaryTables:
    """cos/sin tables in float32, computed on demand (no buffers, so meta-device builds stay exact)."""

    def __init__(self, head_dim: int, theta: float):
        self.head_dim, self.theta = head_dim, theta
        self._cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, start: int, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self._cache.get(device, (None, None))
        if cos is None or cos.shape[0] < start + length:
            size = max(start + length, 4096)
            cos, sin = rotary_cos_sin(torch.arange(size, device=device, dtype=torch.float32), self.head_dim, self.theta)
            self._cache[device] = (cos, sin)
        return cos[start:start + length], sin[start:start + length]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in full precision (LLaDA's ``rope_full_precision``), cast back."""
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


@dataclass
class LLaDACache:
    """Every layer's keys and values, (batch, kv_heads, length, head_dim), at their positions."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]


class LLaDABlock(nn.Module):
    """The published "llama" block, with its weight names."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        d, hd = config.d_model, config.head_dim
        self.n_heads, self.n_kv, self.head_dim = config.n_heads, config.n_kv_heads, hd
        self.attn_norm = CastRMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.attn_out = nn.Linear(self.n_heads * hd, d, bias=False)
        self.ff_norm = CastRMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, key_mask: torch.Tensor | None,
                cache: tuple[torch.Tensor, torch.Tensor] | None, start: int) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.attn_norm(x)
        q = rotate(self.q_proj(h).view(b, n, self.n_heads, self.head_dim).transpose(1, 2), cos, sin)
        k = rotate(self.k_proj(h).view(b, n, self.n_kv, self.head_dim).transpose(1, 2), cos, sin)
        v = self.v_proj(h).view(b, n, self.n_kv, self.head_dim).transpose(1, 2)
        if cache is not None:
            keys, values = cache
            keys[:, :, start:start + n] = k
            values[:, :, start:start + n] = v
            k, v = keys, values
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, enable_gqa=self.n_kv != self.n_heads)
        x = x + self.attn_out(out.transpose(1, 2).reshape(b, n, -1))
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class LLaDATransformer(nn.Module):
    """``model.transformer.*`` of the published layout."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        parts = dict(wte=nn.Embedding(config.embedding_size, config.d_model),
                     blocks=nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
                     ln_f=CastRMSNorm(config.d_model, config.rms_norm_eps))
        if not config.weight_tying:
            parts["ff_out"] = nn.Linear(config.d_model, config.embedding_size, bias=False)
        self.transformer = nn.ModuleDict(parts)


class LLaDAPreTrainedModel(PreTrainedModel):
    config_class = LLaDAConfig
    base_model_prefix = "model"
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True


class LLaDAModelLM(LLaDAPreTrainedModel):
    """LLaDA's mask predictor: a bidirectional Transformer returning token logits at every position."""

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        problem = config.problem()
        if problem:
            raise ValueError(f"LLaDA option {problem} is not implemented by evo_eval.models.llada")
        self.model = LLaDATransformer(config)
        self.rotary = RotaryTables(config.head_dim, config.rope_theta)
        self.post_init()

    @property
    def _parts(self) -> nn.ModuleDict:
        return self.model.transformer

    @property
    def mask_token_id(self) -> int:
        return int(self.config.mask_token_id)

    def head_weight(self) -> torch.Tensor:
        parts = self._parts
        return parts["wte"].weight if self.config.weight_tying else parts["ff_out"].weight

    def _hidden(self, ids: torch.Tensor, start: int, key_mask: torch.Tensor | None,
                cache: LLaDACache | None) -> torch.Tensor:
        parts = self._parts
        x = parts["wte"](ids)
        cos, sin = self.rotary(start, ids.shape[1], ids.device)
        for i, block in enumerate(parts["blocks"]):
            layer_cache = (cache.keys[i], cache.values[i]) if cache is not None else None
            x = block(x, cos, sin, key_mask, layer_cache, start)
        return x

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self._parts["ln_f"](h), self.head_weight()).float()

    # ---- inference primitives ----------------------------------------------------------------------

    def new_cache(self, length: int, batch: int = 1) -> LLaDACache:
        c, weight = self.config, self.head_weight()
        shape = (batch, c.n_kv_heads, int(length), c.head_dim)
        make = lambda: torch.zeros(shape, device=weight.device, dtype=weight.dtype)  # noqa: E731
        return LLaDACache([make() for _ in range(c.n_layers)], [make() for _ in range(c.n_layers)])

    def denoise(self, ids: torch.Tensor, rows: slice | torch.Tensor | None = None, *,
                cache: LLaDACache | None = None, start: int = 0, head_split: int = 0) -> torch.Tensor:
        """float32 logits (batch, rows, vocab) for ``ids`` (batch, n) at positions start..start+n-1.

        Without a cache the pass is the full bidirectional forward over ``ids``. With one, the window
        writes its keys/values into the cache at its positions and attends to all ``cache.length``
        positions (the rest as cached: Fast-dLLM's prefix cache when the window runs to the end,
        its dual cache when it is one block). ``rows`` index the window's own positions.
        ``head_split`` > 0 runs the head ``head_split`` sequences at a time: several requests stacked
        in one pass (adapters/request_batches.py) keep the head GEMM the shape it has for one request
        alone, since a GEMM over a few rows rounds differently from one over more.
        """
        if cache is None and start:
            raise ValueError("a window that does not start at position 0 needs a cache")
        h = self._hidden(ids, start, None, cache)
        h = h if rows is None else h[:, rows]
        if head_split <= 0 or head_split >= h.shape[0]:
            return self._logits(h)
        return torch.cat([self._logits(part) for part in h.split(head_split)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: Any) -> MaskedLMOutput:
        """All positions' logits, as the published ``model(x).logits``; ``attention_mask`` masks keys (padding)."""
        key_mask = None
        if attention_mask is not None:
            key_mask = attention_mask.bool()[:, None, None, :]
        return MaskedLMOutput(logits=self._logits(self._hidden(input_ids, 0, key_mask, None)))


register_auto(LLaDAConfig, LLaDAModelLM, AutoModel, AutoModelForMaskedLM)


# ---- random weights ----------------------------------------------------------------------------------


def random_model(shape: dict[str, Any], *, dtype: torch.dtype, device: torch.device | str,
                 seed: int = 0) -> LLaDAModelLM:
    """The card's shape with random weights, allocated on ``device`` in ``dtype`` directly.

    Built on the meta device and materialised with ``to_empty``, then filled in place from a seeded
    generator on the target device (N(0, init_std) matrices, unit norms): LLaDA-8B never exists as a
    float32 CPU copy. ``device="meta"`` returns the unmaterialised model (for counting).
    """
    config = LLaDAConfig.from_shape(shape)
    fill = normal_fill(config.init_std, ones=("norm.weight", "ln_f.weight"))
    return random_weights(lambda: LLaDAModelLM(config), dtype=dtype, device=device, seed=seed, fill=fill)


def parameter_count(shape: dict[str, Any]) -> int:
    """Parameters of the architecture a shape describes (counted on the meta device)."""
    return meta_parameter_count(random_model, shape)


# ---- checkpoints ---------------------------------------------------------------------------------------


def resolve(checkpoint: str | Path) -> str:
    """A local save_pretrained folder, or a hub id; anything else is a CheckpointError."""
    return resolve_folder(checkpoint, "pass a LLaDA checkpoint folder or a hub id such as GSAI-ML/LLaDA-8B-Base",
                          kind="checkpoint folder")


def read_config(checkpoint: str | Path, revision: str | None = None) -> LLaDAConfig:
    """The checkpoint's LLaDAConfig (its auto_map ignored); anything that is not LLaDA is a CheckpointError."""
    config = read_family_config(
        resolve(checkpoint), checkpoint, revision, LLaDAConfig, "LLaDA",
        unreadable_fix="pass a local checkpoint folder, or check the hub id, revision and network",
        other_fix="pass a LLaDA checkpoint (config.json with model_type llada)",
        problem_fix="use a checkpoint of the published LLaDA-8B architecture")
    if config.mask_token_id is None or not 0 <= config.mask_token_id < config.embedding_size:
        raise CheckpointError(f"{checkpoint} has mask_token_id={config.mask_token_id}, outside its "
                              f"{config.embedding_size} embeddings", "fix mask_token_id in its config.json")
    return config


def load_llada(checkpoint: str | Path, *, revision: str | None = None, card: Any = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> LLaDAModelLM:
    """A LLaDA checkpoint (hub id or folder in the published layout) on ``device`` in ``dtype``.

    A missing path, a non-LLaDA config, a shape other than the card's, or weights that do not fit
    the config each raise a one-line CheckpointError.
    """
    config = read_config(checkpoint, revision)
    return load_weights(LLaDAModelLM, resolve(checkpoint), checkpoint, config=config, card=card, revision=revision,
                        device=device, dtype=dtype)


# ---- a tiny checkpoint in the published layout, for tests and the demo -----------------------------------


# The published config.json's auto_map: kept so tiny checkpoints look like the real ones; never executed.
AUTO_MAP = {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"}
