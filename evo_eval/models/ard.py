"""AR-Diffusion (ARD, Wu et al., NeurIPS 2023) as a decoder-only language model: network, process, loader.

No LM-scale ARD exists: the authors' checkpoints (microsoft/ProphetNet ``AR-diffusion/``, read for
facts, not copied) are 6+6-layer encoder-decoders for summarisation and translation. This module keeps
ARD's algorithm and moves it onto the decoder-only backbone every 7-8B model of the comparison has.

What is ARD's (``model_utils/diffusion_lm.py``, ``gaussian_diffusion.py``, ``train_utils/resample.py``):

* Continuous diffusion over token embeddings (Diffusion-LM lineage): a ``word_embedding`` table of
  width ``embed_dim`` (their ``in_channels``: 64/128), the network predicts the clean embedding
  (``predict_xstart``), and tokens come back by rounding: ``lm_head`` is a linear map with a bias
  whose weight *is* the embedding table.
* The noisy embeddings enter through ``input_up_proj`` (Linear, Tanh, Linear to the hidden width),
  the timestep through a sinusoidal embedding of ``t·1000/T`` (``rescale_timesteps``) and
  ``time_trans`` (Linear, SiLU, Linear), summed and layer-normed; ``output_down_proj`` (Linear,
  Tanh, Linear) maps the last hidden state back to the embedding width.
* The ``sqrt`` noise schedule, ``ᾱ(s) = 1 − sqrt(s + 1e-4)``, discretised into ``T = 2000`` betas
  (capped at 0.999) whose cumulative product is ``alphas_cumprod``.
* The position-dependent schedule: a sentence-level index ``c`` runs from ``N + T − 1`` down to 0;
  token ``i`` sits at the timestep on the line through the moving point ``(max(N−1−c, 0),
  max(c−(N−1), 0))`` and the anchor ``(end_point_scale·N, T−1)`` (``end_point_scale`` 2), rounded
  and clamped to ``[0, T−1]``: left tokens are always less noisy than right ones.

What is ours (the LM-scale variant; the choices and why):

* **Backbone.** ARD's BERT encoder + cross-attention decoder becomes one stack of Llama blocks
  (RMSNorm, rotary positions, SwiGLU, no biases), as in the other 7B baselines. The prompt plays the
  encoder: its tokens are ordinary embeddings (``model.embed_tokens``) and attend causally, so its
  keys/values never depend on the answer and are computed once per request (an exact cache). The
  answer's latents attend to the whole prompt (ARD's cross-attention) and to each other in both
  directions (ARD's decoder self-attention). A latent predicts its own position's clean embedding.
* **Positions.** Rotary positions continue from the prompt into the answer, replacing ARD's learned
  absolute positions (their ``max_pos_len`` table does not extend to 4K contexts).
* **Shape of ``ard-7b``.** Llama-2-7B's trunk (32 × 4096, 32 heads, SwiGLU 11008) with the
  comparison's 64K vocabulary and ARD's 128-wide embeddings (their XSum/CNN-DM width): 6.82B
  parameters (``parameter_count``); ARD's own widths scale with the trunk (up/down projections
  through ``2·hidden``, time MLP through ``4·time_channels``).

The process (schedule tables, the line schedule and the skip grid) lives here because a checkpoint
is trained for it; ``decoding/ard.py`` samples it and ``scoring/ard.py`` bounds its likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from .building import meta_parameter_count, normal_fill, random_weights, register_auto
from .checkpoints import load_weights, read_family_config, resolve_folder
from .layers import CastRMSNorm, rotary_cos_sin, rotate_half, timestep_embedding
from .shapes import CardShapeConfig

ARCHITECTURE = "ARDiffusionLM"

TINY_SHAPE: dict[str, Any] = dict(
    architecture=ARCHITECTURE, n_layers=2, d_model=64, n_heads=4, n_kv_heads=4, d_ff=128, embed_dim=16,
    time_channels=16, vocab_size=512, max_seq_len=2048, rope_theta=10000.0, rms_norm_eps=1e-5,
    diffusion_steps=2000, end_point_scale=2.0,
)

SHAPE_KEYS = {
    "n_layers": "num_hidden_layers", "d_model": "hidden_size", "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads", "d_ff": "intermediate_size", "embed_dim": "embed_dim",
    "time_channels": "time_channels", "vocab_size": "vocab_size", "max_seq_len": "max_position_embeddings",
    "rope_theta": "rope_theta", "rms_norm_eps": "rms_norm_eps", "diffusion_steps": "diffusion_steps",
    "end_point_scale": "end_point_scale",
}
ARCHITECTURE_KEYS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_ff", "embed_dim", "time_channels",
                     "vocab_size")
NOISE_SCHEDULES = ("sqrt",)


class ARDConfig(CardShapeConfig, PreTrainedConfig):
    """Configuration of :class:`ARDiffusionLM` (model type ``ard``); defaults are the ``ard-7b`` card."""

    model_type = "ard"
    FAMILY = "ARD"
    ARCHITECTURE = ARCHITECTURE
    SHAPE_KEYS = SHAPE_KEYS
    ARCHITECTURE_KEYS = ARCHITECTURE_KEYS
    REQUIRED_SHAPE_KEYS = ("n_layers", "d_model", "n_heads", "d_ff", "embed_dim", "vocab_size")

    vocab_size: int = 64000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    embed_dim: int = 128
    time_channels: int = 128
    diffusion_steps: int = 2000
    noise_schedule: str = "sqrt"
    end_point_scale: float = 2.0
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        kwargs["tie_word_embeddings"] = False  # the rounding head reuses word_embedding in the forward
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def problem(self) -> str | None:
        if self.noise_schedule not in NOISE_SCHEDULES:
            return f"noise_schedule={self.noise_schedule}"
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            return (f"hidden_size={self.hidden_size} with {self.num_attention_heads} heads and "
                    f"{self.num_key_value_heads} key/value heads")
        if self.diffusion_steps < 2 or self.end_point_scale <= 1:
            return f"diffusion_steps={self.diffusion_steps}, end_point_scale={self.end_point_scale}"
        return None


# ---- the process: noise schedule, position-dependent timesteps, skip grid --------------------------------


def alphas_cumprod(steps: int) -> torch.Tensor:
    """ᾱ for timesteps 0..T−1 of the sqrt schedule, float64, as ARD discretises it (betas capped at 0.999)."""
    def alpha_bar(s: torch.Tensor) -> torch.Tensor:
        return 1 - torch.sqrt(s + 1e-4)

    s = torch.arange(steps + 1, dtype=torch.float64) / steps
    betas = torch.clamp(1 - alpha_bar(s[1:]) / alpha_bar(s[:-1]), max=0.999)
    return torch.cumprod(1 - betas, dim=0)


def token_timesteps(c: int, length: int, steps: int, end_point_scale: float) -> torch.Tensor:
    """Each of ``length`` tokens' timestep at sentence-level index ``c`` (ARD's line through the anchor)."""
    xs = torch.arange(length, dtype=torch.float32)
    x_e, y_e = float(int(end_point_scale * length)), float(steps - 1)
    x_m, y_m = float(max(length - 1 - c, 0)), float(max(c - (length - 1), 0))
    t = (xs - x_e) / (x_m - x_e) * (y_m - y_e) + y_e
    return t.round().clamp(0, steps - 1).long()


def skip_indices(length: int, steps: int, gen_timesteps: int) -> list[int]:
    """The sentence-level indices visited: ``gen_timesteps`` evenly skipped from N+T−1, then 0."""
    total = steps + length
    if not 1 <= gen_timesteps <= total:
        raise ValueError(f"gen_timesteps {gen_timesteps} must lie in 1..{total} (diffusion steps + length)")
    indices = list(range(total))[::-1][:: total // gen_timesteps][:gen_timesteps]
    return indices if indices[-1] == 0 else indices + [0]


@dataclass(frozen=True)
class Schedule:
    """The decoding grid of one answer length: per step, every token's source and target timestep."""

    src: torch.Tensor  # (steps, N) long
    tgt: torch.Tensor  # (steps, N) long

    @property
    def steps(self) -> int:
        return self.src.shape[0]

    @classmethod
    def build(cls, length: int, diffusion_steps: int, end_point_scale: float, gen_timesteps: int) -> "Schedule":
        indices = skip_indices(length, diffusion_steps, gen_timesteps)
        rows = [token_timesteps(c, length, diffusion_steps, end_point_scale) for c in indices]
        return cls(torch.stack(rows[:-1]), torch.stack(rows[1:]))

    def committed(self, step: int) -> int:
        """How many leading tokens are final after ``step``: at timestep 0 from then on."""
        zero = (self.tgt[step:] == 0).all(dim=0)
        return int(zero.long().cumprod(0).sum())


# ---- the network -----------------------------------------------------------------------------------------


class ARDBlock(nn.Module):
    def __init__(self, config: ARDConfig):
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.n_heads, self.n_kv, self.head_dim = config.num_attention_heads, config.num_key_value_heads, hd
        self.input_layernorm = CastRMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)
        self.post_attention_layernorm = CastRMSNorm(d, config.rms_norm_eps)
        self.gate_proj = nn.Linear(d, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(d, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, causal: bool = False,
                mask: torch.Tensor | None = None, past: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One block; returns the output and this call's own keys/values (to cache a prompt)."""
        b, n, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, n, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, n, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = (t * cos + rotate_half(t) * sin for t in (q, k))
        own = (k, v)
        if past is not None:
            k = torch.cat([past[0].expand(b, -1, -1, -1), k], dim=2)
            v = torch.cat([past[1].expand(b, -1, -1, -1), v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                             enable_gqa=self.n_kv != self.n_heads)
        x = x + self.o_proj(out.transpose(1, 2).reshape(b, n, -1))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h)), own


class ARDBackbone(nn.Module):
    def __init__(self, config: ARDConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(ARDBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = CastRMSNorm(config.hidden_size, config.rms_norm_eps)


@dataclass
class ARDCache:
    """The prompt's keys/values per layer, (1, kv_heads, prompt_len, head_dim)."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    length: int


@dataclass
class ARDOutput(ModelOutput):
    pred_x0: torch.Tensor | None = None  # (batch, N, embed_dim) float32: the predicted clean embeddings
    logits: torch.Tensor | None = None  # (batch, N, vocab) float32: their rounding logits


class ARDPreTrainedModel(PreTrainedModel):
    config_class = ARDConfig
    base_model_prefix = "model"
    _no_split_modules = ["ARDBlock"]
    _supports_sdpa = True


class ARDiffusionLM(ARDPreTrainedModel):
    """ARD's denoiser on a decoder-only trunk: clean prompt tokens, then noisy answer embeddings."""

    def __init__(self, config: ARDConfig):
        super().__init__(config)
        if config.problem():
            raise ValueError(f"ARD option {config.problem()} is not implemented by evo_eval.models.ard")
        h, e, tc = config.hidden_size, config.embed_dim, config.time_channels
        self.model = ARDBackbone(config)
        self.word_embedding = nn.Embedding(config.vocab_size, e)
        self.lm_head_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.input_up_proj = nn.Sequential(nn.Linear(e, 2 * h), nn.Tanh(), nn.Linear(2 * h, h))
        self.time_trans = nn.Sequential(nn.Linear(tc, 4 * tc), nn.SiLU(), nn.Linear(4 * tc, h))
        self.input_layer_norm = nn.LayerNorm(h)
        self.output_down_proj = nn.Sequential(nn.Linear(h, 2 * h), nn.Tanh(), nn.Linear(2 * h, e))
        self._alphas: dict[torch.device, torch.Tensor] = {}
        self.post_init()

    # ---- the process tables ----------------------------------------------------------------------

    def alphas_cumprod(self, device: torch.device | str | None = None) -> torch.Tensor:
        device = torch.device(device or self.word_embedding.weight.device)
        if device not in self._alphas:
            self._alphas[device] = alphas_cumprod(self.config.diffusion_steps).to(device)
        return self._alphas[device]

    def schedule(self, length: int, gen_timesteps: int) -> Schedule:
        c = self.config
        return Schedule.build(length, c.diffusion_steps, c.end_point_scale, gen_timesteps)

    # ---- pieces -----------------------------------------------------------------------------------

    def embed_latent(self, ids: torch.Tensor) -> torch.Tensor:
        """Clean embeddings (ARD's ``get_embeds``) in float32."""
        return self.word_embedding(ids).float()

    def round_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Rounding logits ``z·Eᵀ + b`` (ARD's tied ``lm_head``), float32."""
        weight = self.word_embedding.weight
        return F.linear(z.to(weight.dtype), weight, self.lm_head_bias).float()

    def nearest(self, x0: torch.Tensor) -> torch.Tensor:
        """Each row replaced by the nearest embedding in L2 (ARD's ``denoised_fn_round``), float32."""
        table = self.word_embedding.weight.float()
        scores = 2 * x0.float() @ table.T - table.pow(2).sum(-1)
        return table[scores.argmax(-1)]

    def _rotary(self, start: int, length: int, device: torch.device, dtype: torch.dtype):
        positions = torch.arange(start, start + length, device=device, dtype=torch.float32)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
        return cos.to(dtype), sin.to(dtype)

    def _latent_inputs(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dtype = self.word_embedding.weight.dtype
        steps = t.float() * (1000.0 / self.config.diffusion_steps)  # ARD's rescale_timesteps
        time = self.time_trans(timestep_embedding(steps, self.config.time_channels).to(dtype))
        return self.input_layer_norm(self.input_up_proj(z.to(dtype)) + time)

    def _readout(self, h: torch.Tensor) -> torch.Tensor:
        return self.output_down_proj(self.model.norm(h)).float()

    # ---- inference primitives ---------------------------------------------------------------------

    def encode_prompt(self, ids: torch.Tensor) -> ARDCache:
        """Run the prompt once (causal attention) and keep its keys/values; exact for every later step."""
        ids = ids.reshape(1, -1)
        x = self.model.embed_tokens(ids)
        cos, sin = self._rotary(0, ids.shape[1], ids.device, x.dtype)
        layers = []
        for block in self.model.layers:
            x, own = block(x, cos, sin, causal=True)
            layers.append(own)
        return ARDCache(layers, ids.shape[1])

    def denoise(self, cache: ARDCache, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted clean embeddings (batch, N, embed_dim), float32, for latents ``z`` at timesteps ``t`` (batch, N)."""
        x = self._latent_inputs(z, t)
        cos, sin = self._rotary(cache.length, z.shape[1], z.device, x.dtype)
        for block, past in zip(self.model.layers, cache.layers):
            x, _ = block(x, cos, sin, past=past)
        return self._readout(x)

    def forward(self, input_ids: torch.Tensor, latents: torch.Tensor, timesteps: torch.Tensor,
                **kwargs: Any) -> ARDOutput:
        """One joint pass over [prompt ; latents] (batch of prompts), as in training: the prompt attends
        causally, the latents to the whole prompt and to each other."""
        b, p = input_ids.shape
        n = latents.shape[1]
        x = torch.cat([self.model.embed_tokens(input_ids), self._latent_inputs(latents, timesteps)], dim=1)
        cos, sin = self._rotary(0, p + n, x.device, x.dtype)
        mask = torch.ones(p + n, p + n, dtype=torch.bool, device=x.device)
        mask[:p, :p] = torch.ones(p, p, dtype=torch.bool, device=x.device).tril()
        mask[:p, p:] = False
        for block in self.model.layers:
            x, _ = block(x, cos, sin, mask=mask)
        pred = self._readout(x[:, p:])
        return ARDOutput(pred_x0=pred, logits=self.round_logits(pred))


register_auto(ARDConfig, ARDiffusionLM, AutoModel)


# ---- random weights ---------------------------------------------------------------------------------------


def random_model(shape: dict[str, Any], *, dtype: torch.dtype, device: torch.device | str,
                 seed: int = 0) -> ARDiffusionLM:
    """The card's shape with random weights, built on the meta device and filled on ``device`` in ``dtype``.

    Matrices and tables N(0, 0.02) from a seeded generator on the device, norms one, biases zero;
    ``device="meta"`` returns the unmaterialised model (for counting).
    """
    config = ARDConfig.from_shape(shape)
    # "norm.weight" ends the name of every norm's scale (the RMSNorms' and the input LayerNorm's);
    # "bias" covers the rounding head's lm_head_bias as well as the layers' biases.
    fill = normal_fill(config.initializer_range, ones=("norm.weight",), zeros=("bias",))
    return random_weights(lambda: ARDiffusionLM(config), dtype=dtype, device=device, seed=seed, fill=fill)


def parameter_count(shape: dict[str, Any]) -> int:
    return meta_parameter_count(random_model, shape)


# ---- checkpoints ------------------------------------------------------------------------------------------


def resolve(checkpoint: str | Path) -> str:
    return resolve_folder(checkpoint,
                          "pass a save_pretrained folder of ARDiffusionLM (there are no public ARD LM weights)")


def read_config(checkpoint: str | Path, revision: str | None = None) -> ARDConfig:
    return read_family_config(
        resolve(checkpoint), checkpoint, revision, ARDConfig, "ARD",
        unreadable_fix="pass a save_pretrained folder of ARDiffusionLM",
        other_fix="pass a save_pretrained folder of ARDiffusionLM (model_type ard)",
        problem_fix=f"train with noise_schedule one of {', '.join(NOISE_SCHEDULES)}")


def load_ard(checkpoint: str | Path, *, revision: str | None = None, card: Any = None,
             device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> ARDiffusionLM:
    """An ARDiffusionLM ``save_pretrained`` folder (or hub id) on ``device`` in ``dtype``, checked against a card."""
    config = read_config(checkpoint, revision)
    return load_weights(ARDiffusionLM, resolve(checkpoint), checkpoint, config=config, card=card, revision=revision,
                        device=device, dtype=dtype)
