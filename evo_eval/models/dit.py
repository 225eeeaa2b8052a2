"""The diffusion transformer (DiT) that MDLM and BD3-LM share, and the one loader for their checkpoints.

Facts read (not copied) from kuleshov-group/mdlm ``models/dit.py`` @06dd29f and the Hugging Face
``modeling_mdlm.py`` / ``modeling_bd3lm.py`` of kuleshov-group/mdlm-owt and
kuleshov-group/bd3lm-owt-block_size{4,8,16} (mirrored in zhihanyang2022/bd3lms ``models/hf/``):

* weight names, which a checkpoint must match: ``backbone.vocab_embed.embedding`` (a bare
  ``(vocab, d)`` parameter), ``backbone.sigma_map.mlp.{0,2}`` (timestep MLP: 256 sinusoidal
  frequencies -> cond_dim -> SiLU -> cond_dim), ``backbone.blocks.N.{norm1, attn_qkv, attn_out, norm2,
  mlp.0, mlp.2, adaLN_modulation}`` and ``backbone.output_layer.{norm_final, linear,
  adaLN_modulation}``;
* a block is ``x + gate_msa * attn_out(attn(modulate(norm1(x))))`` then
  ``x + gate_mlp * mlp(modulate(norm2(x)))`` with ``modulate(h) = h * (1 + scale) + shift`` and the
  six adaLN chunks in the order shift/scale/gate (attention), shift/scale/gate (MLP);
  ``c = silu(sigma_map(sigma))`` with sigma zeroed when ``time_conditioning`` is false;
* LayerNorm without bias, normalising in float32; MLP ratio 4 with tanh-GELU and biases; q/k/v
  without bias, split ``(three, heads, head_dim)``; rotary on q and k in the half-split layout, base
  10000, over ``hidden_dim / n_heads``; unscaled-softmax attention scaled by ``1/sqrt(head_dim)``;
* the authors run the blocks under bfloat16 autocast on float32 weights, so the residual stream
  stays float32 while matrix products run in bfloat16; with bfloat16 weights we keep that split
  (float32 residual, products in the weight dtype).

Attention goes through PyTorch's ``scaled_dot_product_attention`` with an explicit boolean mask only
where one is needed (BD3-LM's block masks); MDLM attends bidirectionally without a mask. An optional
per-layer key/value cache (``layers.KVCache``) serves BD3-LM's block-by-block decoding.

The published configs carry ``model_type`` and an ``auto_map`` to remote code; ``models/mdlm.py`` and
``models/bd3lm.py`` register our own config/model classes for those model types with transformers'
Auto classes, so ``AutoModelForMaskedLM.from_pretrained`` loads them without ``trust_remote_code``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init

from ..errors import CheckpointError, UserError, first_line
from .building import inference_only, random_weights
from .checkpoints import looks_like_hub_id
from .layers import KVCache, apply_rotary, rotary_cos_sin, timestep_embedding
from .shapes import reject_unknown_keys, require_keys

FREQUENCY_DIM = 256  # sinusoidal features fed to the timestep MLP (DiT's frequency_embedding_size)
ROPE_BASE = 10000.0
MLP_RATIO = 4
# The published OWT checkpoints: GPT-2's 50257 ids plus [MASK] appended at id 50257 (diffusion.py
# sets mask_index = vocab_size when the tokenizer has no mask token).
GPT2_VOCAB_WITH_MASK = 50258
GPT2_TOKENIZER = "gpt2"
# Buffers the published modeling files register (rotary frequencies, the clipped noise interval);
# we derive them from the config, so a checkpoint that stores them loads with those keys ignored.
DERIVED_BUFFERS = [r"rotary_emb\.inv_freq", r"^sampling_eps_min$", r"^sampling_eps_max$"]


# ---- the architecture's shape: card <-> config ------------------------------------------------------------


@dataclass(frozen=True)
class DiTShape:
    """A DiT's size in the cards' vocabulary; ``to_config`` gives the published config keys."""

    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int
    cond_dim: int
    vocab_size: int
    max_seq_len: int
    time_conditioning: bool = False
    mask_token_id: int | None = None  # None: the last id (the authors append [MASK] to the tokenizer)
    block_size: int | None = None  # BD3-LM only

    @classmethod
    def from_card(cls, shape: dict[str, Any], architecture: str, needs_block: bool) -> "DiTShape":
        known = {f.name for f in fields(cls)}
        reject_unknown_keys(shape, sorted(known), architecture)
        if shape.get("architecture", architecture) != architecture:
            raise UserError(f"the card's shape describes a '{shape['architecture']}', not a {architecture}",
                            f"set architecture: {architecture} in the card's shape block")
        required = ["n_layers", "d_model", "n_heads", "d_ff", "cond_dim", "vocab_size", "max_seq_len"]
        required += ["block_size"] if needs_block else []
        require_keys(shape, required)
        if not needs_block and "block_size" in shape:
            raise UserError(f"a {architecture} has no block_size", "remove block_size from the card's shape block")
        out = cls(**{k: v for k, v in shape.items() if k in known})
        out.check(UserError, "the card's shape", "fix the card's shape block")
        return out

    @classmethod
    def from_config(cls, config) -> "DiTShape":
        return cls(
            n_layers=config.n_blocks, d_model=config.hidden_dim, n_heads=config.n_heads,
            d_ff=MLP_RATIO * config.hidden_dim, cond_dim=config.cond_dim, vocab_size=config.vocab_size,
            max_seq_len=config.model_length, time_conditioning=bool(config.time_conditioning),
            mask_token_id=getattr(config, "mask_token_id", None), block_size=getattr(config, "block_size", None),
        )

    def check(self, error: type[UserError], where: str, fix: str) -> None:
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise error(f"{where}: d_model {self.d_model} does not split into {self.n_heads} heads of even size", fix)
        if self.d_ff != MLP_RATIO * self.d_model:
            raise error(f"{where}: d_ff {self.d_ff} is not {MLP_RATIO} x d_model (the DiT's fixed MLP ratio)", fix)
        if self.mask_token_id is not None and not 0 <= self.mask_token_id < self.vocab_size:
            raise error(f"{where}: mask_token_id {self.mask_token_id} is outside the vocabulary of {self.vocab_size}", fix)
        if self.block_size is not None and (self.block_size < 1 or self.max_seq_len % self.block_size):
            raise error(f"{where}: block_size {self.block_size} does not divide max_seq_len {self.max_seq_len}", fix)

    def to_config(self) -> dict[str, Any]:
        out = dict(vocab_size=self.vocab_size, model_length=self.max_seq_len, hidden_dim=self.d_model,
                   cond_dim=self.cond_dim, n_blocks=self.n_layers, n_heads=self.n_heads,
                   time_conditioning=self.time_conditioning)
        if self.mask_token_id is not None:
            out["mask_token_id"] = self.mask_token_id
        if self.block_size is not None:
            out["block_size"] = self.block_size
        return out

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


# ---- layers (names are the published weight names) --------------------------------------------------------


class LayerNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), (x.shape[-1],)) * self.weight.float()


class EmbeddingLayer(nn.Module):
    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding[ids]


class TimestepEmbedder(nn.Module):
    def __init__(self, cond_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQUENCY_DIM, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        dtype = self.mlp[0].weight.dtype
        return self.mlp(timestep_embedding(t, FREQUENCY_DIM).to(dtype)).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class DDiTBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, cond_dim: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, MLP_RATIO * dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(MLP_RATIO * dim, dim))
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, cache: KVCache | None, start: int, write: bool = True) -> torch.Tensor:
        """x: (batch, L, d) float32 residual. With ``cache``, x attends to the cached keys before
        ``start`` as well as to itself: ``write`` stores its own keys at [start, start + L) first (x
        continues the cached sequence), otherwise the cached prefix is only read (x is a batch of
        sequences that all share it)."""
        dtype = self.attn_qkv.weight.dtype
        mods = self.adaLN_modulation(c.to(dtype)).float()[:, None]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods.chunk(6, dim=-1)
        b, length, dim = x.shape
        hd = dim // self.n_heads
        qkv = self.attn_qkv(modulate(self.norm1(x), shift_msa, scale_msa).to(dtype))
        q, k, v = qkv.view(b, length, 3, self.n_heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = apply_rotary(q, cos.to(dtype), sin.to(dtype)), apply_rotary(k, cos.to(dtype), sin.to(dtype))
        if cache is not None and write:
            # The block's own keys go into the cache (as the authors' kv_cache does on every call), so
            # attention reads one contiguous prefix; a later call overwrites them until the block is final.
            k, v = cache.write(start, k, v)
        elif cache is not None:
            k = torch.cat((cache.k[:, :, :start].expand(b, -1, -1, -1), k), dim=2)
            v = torch.cat((cache.v[:, :, :start].expand(b, -1, -1, -1), v), dim=2)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + gate_msa * self.attn_out(attn.transpose(1, 2).reshape(b, length, dim)).float()
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp).to(dtype)).float()


class DDitFinalLayer(nn.Module):
    def __init__(self, dim: int, vocab_size: int, cond_dim: int):
        super().__init__()
        self.norm_final = LayerNorm(dim)
        self.linear = nn.Linear(dim, vocab_size)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        dtype = self.linear.weight.dtype
        shift, scale = self.adaLN_modulation(c.to(dtype)).float()[:, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale).to(dtype)).float()


def rotary_tables(positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (L, head_dim) in float32 for absolute positions; computed, not stored, so no buffer
    can be left uninitialised by meta-device construction."""
    return rotary_cos_sin(positions, head_dim, ROPE_BASE)


class DiTBackbone(nn.Module):
    """``backbone`` of the published MDLM / BD3LM classes."""

    def __init__(self, config):
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.hidden_dim // config.n_heads
        self.time_conditioning = bool(config.time_conditioning)
        self.vocab_embed = EmbeddingLayer(config.hidden_dim, config.vocab_size)
        self.sigma_map = TimestepEmbedder(config.cond_dim)
        self.blocks = nn.ModuleList(DDiTBlock(config.hidden_dim, config.n_heads, config.cond_dim)
                                    for _ in range(config.n_blocks))
        self.output_layer = DDitFinalLayer(config.hidden_dim, config.vocab_size, config.cond_dim)

    def condition(self, sigma: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """c = silu(sigma_map(sigma)); an unconditioned model sees sigma = 0 (diffusion.py _process_sigma)."""
        if sigma is None or not self.time_conditioning:
            sigma = torch.zeros(batch, device=device)
        return F.silu(self.sigma_map(sigma.reshape(-1).expand(batch)))

    def hidden(self, ids: torch.Tensor, positions: torch.Tensor, c: torch.Tensor, *,
               mask: torch.Tensor | None = None, caches: list[KVCache] | None = None, start: int = 0,
               write: bool = True) -> torch.Tensor:
        x = self.vocab_embed(ids).float()
        cos, sin = rotary_tables(positions, self.head_dim)
        for i, block in enumerate(self.blocks):
            x = block(x, c, cos, sin, mask, caches[i] if caches is not None else None, start, write)
        return x

    def new_cache(self, capacity: int, device: torch.device, dtype: torch.dtype) -> list[KVCache]:
        return [KVCache(1, self.n_heads, capacity, self.head_dim, dtype, device) for _ in self.blocks]


def subs_logits(logits: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """The SUBS parameterisation's zero-masking: the denoiser never predicts [MASK] (diffusion.py
    ``_subs_parameterization``). Carry-over of unmasked tokens is left to the callers, which only
    read the rows of masked positions."""
    logits[..., mask_token_id] = float("-inf")
    return logits


# ---- what the published MDLM and BD3LM classes share ----------------------------------------------------------


class DiTConfig(PretrainedConfig):
    """The config keys of the DiT itself, as both published configurations name them (defaults: the
    published classes'); ``models/mdlm.py`` and ``models/bd3lm.py`` give the model types."""

    vocab_size: int = 50258
    model_length: int = 1024
    hidden_dim: int = 768
    cond_dim: int = 128
    n_blocks: int = 12
    n_heads: int = 12
    dropout: float = 0.1
    time_conditioning: bool = False


class DiTModel(PreTrainedModel):
    """The ``backbone`` under its published name, its weight init, its shape and its [MASK] id; a
    family class adds ``config_class``, ``base_model_prefix``, ``hub_example`` and its forwards."""

    _keys_to_ignore_on_load_unexpected = DERIVED_BUFFERS

    def __init__(self, config: DiTConfig):
        super().__init__(config)
        self.backbone = DiTBackbone(config)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, EmbeddingLayer):
            init.normal_(module.embedding, mean=0.0, std=0.02)

    @classmethod
    def check_config(cls, config, where: str) -> None:
        DiTShape.from_config(config).check(CheckpointError, where, "fix the checkpoint's config.json")

    @property
    def shape(self) -> DiTShape:
        return DiTShape.from_config(self.config)

    @property
    def mask_token_id(self) -> int:
        explicit = getattr(self.config, "mask_token_id", None)
        return int(explicit) if explicit is not None else self.config.vocab_size - 1


# ---- building: random weights on the target device, or a checkpoint ------------------------------------------


def random_fill(name: str, param: nn.Parameter, gen: torch.Generator) -> None:
    """Seeded weights that keep every path live: unit-variance linears (so adaLN gates and attention
    matter, unlike the authors' zero init of adaLN, which makes a fresh DiT ignore its input),
    unit norms, zero biases, a standard-normal embedding table."""
    if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.endswith("norm_final.weight"):
        param.fill_(1.0)
    elif param.dim() == 1:
        param.zero_()
    elif name.endswith("vocab_embed.embedding"):
        param.normal_(0.0, 1.0, generator=gen)
    else:
        param.normal_(0.0, 1.0 / math.sqrt(param.shape[1]), generator=gen)


def build_random(model_cls, config, *, dtype: torch.dtype, device: torch.device | str, seed: int) -> nn.Module:
    """The architecture with random weights, allocated once on ``device`` in ``dtype`` (meta + to_empty:
    a 7B model never exists as a float32 copy on the CPU)."""
    return random_weights(lambda: model_cls(config), dtype=dtype, device=device, seed=seed, fill=random_fill)


def load_pretrained(model_cls, name_or_path: str, *, revision: str | None, dtype: torch.dtype,
                    device: torch.device | str, family: str):
    """A published-layout checkpoint (hub id or local folder) through transformers' Auto classes.

    Every way a checkpoint can fail to be this architecture ends in one CheckpointError line: a
    missing folder, an unreachable hub id, another model type, unsupported flags, weights that
    are missing, extra, or of another shape than the checkpoint's own config.
    """
    from transformers import AutoConfig, AutoModelForMaskedLM

    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.exists():
        name = str(local)
        if not (local / "config.json").is_file():
            raise CheckpointError(f"{name} has no config.json, so it is not a save_pretrained folder",
                                  "point at the folder that holds config.json and the weights")
    elif not looks_like_hub_id(name):
        raise CheckpointError(f"checkpoint folder {name} does not exist",
                              f"pass a save_pretrained folder or a hub id such as {model_cls.hub_example}")
    try:
        config = AutoConfig.from_pretrained(name, revision=revision)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the config of {name} ({type(exc).__name__}: {first_line(exc, 200, '')})",
                              "check the hub id / revision and your network, or pass a local folder") from None
    expected = model_cls.config_class.model_type
    if getattr(config, "model_type", None) != expected:
        raise CheckpointError(f"{name} holds a '{config.model_type}' checkpoint, not {family}",
                              f"pass a {family} checkpoint (config.json model_type '{expected}')")
    model_cls.check_config(config, name)
    kwargs: dict[str, Any] = {"dtype": dtype}
    target = torch.device(device)
    if target.type == "cuda":  # straight onto the GPU, never a full copy in host memory
        kwargs["device_map"] = {"": target.index if target.index is not None else torch.cuda.current_device()}
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            name, revision=revision, config=config, ignore_mismatched_sizes=True, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the weights of {name} ({type(exc).__name__}: {first_line(exc, 200, '')})",
                              "the folder needs model.safetensors (save_pretrained) next to config.json") from None
    _check_loading_info(info, name)
    if not isinstance(model, model_cls):
        raise CheckpointError(f"{name} loaded as {type(model).__name__}, not {model_cls.__name__}",
                              "import evo_eval.models before other code registers the same model type")
    return inference_only(model.to(target))


def _check_loading_info(info: dict[str, Any], name: str) -> None:
    mismatched = sorted(info.get("mismatched_keys") or [], key=str)
    if mismatched:
        key, *shapes = mismatched[0] if isinstance(mismatched[0], tuple) else (mismatched[0],)
        detail = f" ({' vs '.join(str(tuple(s)) for s in shapes)})" if shapes else ""
        raise CheckpointError(f"{name}: weight {key} has the wrong shape{detail}",
                              "the weights were saved from a model of another size than config.json says")
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise CheckpointError(f"{name} lacks {len(missing)} weight(s), e.g. {missing[0]}",
                              "pass a complete checkpoint of this architecture")
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        raise CheckpointError(f"{name} has weight(s) this architecture lacks, e.g. {unexpected[0]}",
                              "pass a checkpoint of this architecture")
