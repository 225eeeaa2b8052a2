"""Evo's network: one time-conditioned Transformer shared by the whole latent trajectory.

What the paper fixes (arXiv 2603.06617 §2.2–2.4, Appendix 7.1): a decoder-only Transformer with
parameters shared across the trajectory; every generated position carries a latent ``z_i`` and a
progression time ``t_i`` in [0, 1], injected by a sinusoidal embedding added to the token's hidden
state; full self-attention among the latents; prompts enter as ordinary token embeddings; a shared
vector field ``F_theta(z, t)`` refines latents, ``z <- z + dt·F_theta(z, t_i)``; Gaussian latent noise
``z_t = sqrt(a_t)·z_0 + sqrt(1 - a_t)·eps`` with ``a_t = cos²(pi·t/2)``; a time head (two-layer MLP,
GELU, sigmoid) on each token's initial latent; tied token embeddings; decoding by a linear
projection or by nearest neighbour over the embedding table.

Where the paper is silent, this implementation chooses (and says why):

* **Latent space.** ``z = kappa·e(x)``: the token embedding scaled by the config's ``latent_scale``
  (1/RMS of the table), so a clean latent has unit RMS and the unit Gaussian noise is on its scale.
  A latent enters the Transformer as ``z/kappa + TimeEmbed(t)``: at ``t = 0`` that is the token's own
  embedding plus the time signal, which is what lets a Llama checkpoint map in unchanged.
* **Time embedding.** Sinusoid (256 wide) -> Linear -> SiLU -> Linear, the last layer zero-initialised
  so that a freshly mapped pretrained backbone computes exactly what it computed before.
* **The field.** The network predicts the clean token distribution at each latent position through
  the tied head; its expectation over the embedding table, ``z_hat = kappa·softmax(logits)·E``, is the
  clean-latent estimate (score interpolation, Dieleman et al. 2022, CDCD). ``F_theta(z, t)`` is the
  deterministic DDIM step of the cosine schedule built on that estimate, written as a velocity
  (``ddim_step``); it is exact for the estimate, which the plain Euler step near ``t = 0`` is not.
* **Which positions attend causally.** Clean tokens (prompt and committed answer) attend causally,
  so their keys/values never depend on later text and can be cached exactly, and a causal pass over
  clean tokens is the exact autoregressive limit (``ar_logits``, ``clean_step``; ``t = 0``): the AR
  pathway, which realises tokens with ``K_i = 0``. Latents form a canvas: every latent attends to the
  clean tokens before the canvas and bidirectionally to every other latent of it (the paper's
  full-sequence self-attention; by default the canvas is the whole answer, and ``block_start``
  groups it into blocks only where a caller asks for the block option). A latent's output predicts
  its own token (no shift); a clean token's output predicts the next token (the AR head).
* **Dropout** 0.1 on each residual branch and on the feed-forward activation (Appendix 7.1), active
  in training mode only.
* **Time head input.** The final (normed) hidden state of the sketch pass at that position: the
  state the latent prior is read from, so it can say how uncertain the sketch is.

Inference primitives (``new_cache``, ``encode_step``, ``refine_step``, ``clean_step``) run over exactly the rows
given and write their keys/values into a static per-layer cache at their positions, so a sampler can
drop finished tokens from the forward while active ones still attend to their cached keys/values.
Llama block numerics and weight names follow transformers' ``modeling_llama.py`` (read for names and
the order of operations, not copied).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast

from .evo_config import EvoConfig
from .layers import RMSNorm, SwiGLU, rotary_cos_sin, rotate_half, timestep_embedding

# A mask value meaning "causal over the rows themselves" (queries and keys are the same positions).
CAUSAL = "causal"


# ---- rotary positions (tables computed on demand: no buffers, so meta-device builds stay exact) -----


class RotaryTables:
    def __init__(self, head_dim: int, theta: float, max_len: int):
        self.head_dim, self.theta, self.max_len = head_dim, theta, max_len
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (positions.device, dtype)
        cos, sin = self._cache.get(key, (None, None))
        # Sized once to the model's context; beyond it (CPU only, where reading positions is free)
        # the table grows, so a long input fails on the sampler's length check, not on an index.
        need = int(positions.max()) + 1 if positions.device.type == "cpu" and positions.numel() else 0
        if cos is None or cos.shape[0] < need:
            size = max(need, self.max_len)
            cos, sin = rotary_cos_sin(torch.arange(size, device=positions.device, dtype=torch.float32),
                                      self.head_dim, self.theta)
            cos, sin = cos.to(dtype), sin.to(dtype)
            self._cache[key] = (cos, sin)
        return cos[positions], sin[positions]


# ---- blocks ---------------------------------------------------------------------------------------


class EvoAttention(nn.Module):
    def __init__(self, config: EvoConfig):
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.n_heads, self.n_kv, self.head_dim = config.num_attention_heads, config.num_key_value_heads, hd
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | str | None,
                cache: tuple[torch.Tensor, torch.Tensor] | None, slots: torch.Tensor | None,
                valid: int | None) -> torch.Tensor:
        """With ``slots``, write this pass's keys/values into ``cache`` and attend to its first ``valid``
        slots; without, ``cache`` is a read-only prefix the rows attend to before their own keys."""
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.n_kv, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None and slots is not None:
            ck, cv = cache
            ck.index_copy_(2, slots, k.to(ck.dtype))
            cv.index_copy_(2, slots, v.to(cv.dtype))
            k, v = ck[:, :, :valid], cv[:, :, :valid]
        elif cache is not None:
            pk, pv = (c[:, :, :valid].expand(b, -1, -1, -1) for c in cache)
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        if isinstance(mask, str):  # CAUSAL over exactly these rows: the fused kernels' causal path, no mask
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv != self.n_heads)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.n_kv != self.n_heads)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class EvoBlock(nn.Module):
    """A Llama block with the appendix's dropout: on each residual branch before it is added, and on
    the feed-forward hidden activation (the SwiGLU product), both at ``config.dropout``."""

    def __init__(self, config: EvoConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = EvoAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)
        self.dropout = nn.Dropout(getattr(config, "dropout", 0.0))

    def forward(self, x, cos, sin, mask, cache, slots, valid):
        x = x + self.dropout(self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, slots, valid))
        if not self.training:
            return x + self.mlp(self.post_attention_layernorm(x))
        h = self.post_attention_layernorm(x)
        mlp = self.mlp
        inner = self.dropout(F.silu(mlp.gate_proj(h)) * mlp.up_proj(h))
        return x + self.dropout(mlp.down_proj(inner))


class EvoBackbone(nn.Module):
    """Token embeddings, the blocks and the final norm, under Llama's names (``model.*``)."""

    def __init__(self, config: EvoConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(EvoBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class TimeEmbedding(nn.Module):
    """t in [0, 1] -> a vector added to the hidden state (sinusoid, then a two-layer SiLU MLP)."""

    def __init__(self, config: EvoConfig):
        super().__init__()
        self.freq_dim = config.time_embed_dim
        self.fc1 = nn.Linear(config.time_embed_dim, config.hidden_size)
        self.fc2 = nn.Linear(config.hidden_size, config.hidden_size)
        self.fc2._evo_zero_init = True

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # Times are scaled to [0, 1000] before the sinusoid, as DiT-style embeddings expect.
        emb = timestep_embedding(t * 1000.0, self.freq_dim).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(emb)))


class TimeHead(nn.Module):
    """Progression time from a latent's state: Linear -> GELU -> Linear -> sigmoid (Appendix 7.1)."""

    def __init__(self, config: EvoConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.hidden_size)
        self.fc2 = nn.Linear(config.hidden_size, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.gelu(self.fc1(h))).squeeze(-1).float())


# ---- the model ------------------------------------------------------------------------------------


@dataclass
class EvoCache:
    """Static keys/values per layer, (1, kv_heads, capacity, head_dim); slot i holds position i."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    ar_layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # the AR module's, two-module only

    @property
    def capacity(self) -> int:
        return self.layers[0][0].shape[2]


@dataclass
class LatentOutput:
    logits: torch.Tensor  # (..., vocab) float32: the clean-token distribution at each latent
    hidden: torch.Tensor  # (..., d) final normed hidden state (the time head's input)
    # encode_step only: the AR head's next-token logits (vocab,) at the last clean token appended
    next_logits: torch.Tensor | None = None


class EvoPreTrainedModel(PreTrainedModel):
    config_class = EvoConfig
    base_model_prefix = "model"
    _no_split_modules = ["EvoBlock"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if getattr(module, "_evo_zero_init", False):
            init.zeros_(module.weight)
            init.zeros_(module.bias)


class EvoForLatentFlow(EvoPreTrainedModel, GenerationMixin):
    """Evo: latent-flow decoding over a Llama-style backbone; ``forward`` is the AR limit (t = 0).

    ``generate`` (from transformers) therefore decodes the AR limit, recomputing the whole prefix at
    every step: Evo keeps no transformers cache, its own sampler is ``decoding.evo``.
    """

    def __init__(self, config: EvoConfig):
        super().__init__(config)
        self.model = EvoBackbone(config)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size,
                                                                         bias=False)
        # Two-module ablation: a separate AR network (its head tied to its own table).
        self.ar_model = EvoBackbone(config) if getattr(config, "two_module", False) else None
        self.time_embed = TimeEmbedding(config)
        self.time_head = TimeHead(config)
        self.rotary = RotaryTables(config.head_dim, config.rope_theta, config.max_position_embeddings)
        self.post_init()

    # ---- pieces -----------------------------------------------------------------------------------

    @property
    def kappa(self) -> float:
        return self.config.latent_scale

    @property
    def embedding(self) -> torch.Tensor:
        return self.model.embed_tokens.weight

    @property
    def head_weight(self) -> torch.Tensor:
        return self.embedding if self.lm_head is None else self.lm_head.weight

    @torch.no_grad()
    def refresh_latent_scale(self) -> float:
        """Set kappa to 1/RMS of the current table, so clean latents keep unit RMS as training moves it."""
        self.config.latent_scale = float(1.0 / self.embedding.float().pow(2).mean().sqrt())
        return self.config.latent_scale

    def clean_latents(self, ids: torch.Tensor) -> torch.Tensor:
        """kappa·e(x): the latent a token settles at (float32)."""
        return self.embedding[ids].float() * self.kappa

    def latent_inputs(self, z: torch.Tensor, t: torch.Tensor, time_conditioning: bool = True) -> torch.Tensor:
        x = (z / self.kappa).to(self.embedding.dtype)
        return x + self.time_embed(t) if time_conditioning else x

    def readout(self, h: torch.Tensor) -> LatentOutput:
        h = self.model.norm(h)
        return LatentOutput(F.linear(h, self.head_weight).float(), h)

    def expected_latent(self, logits: torch.Tensor) -> torch.Tensor:
        """The clean-latent estimate kappa·E[e(x)] under softmax(logits) (float32)."""
        probs = torch.softmax(logits.float(), dim=-1).to(self.embedding.dtype)
        return (probs @ self.embedding).float() * self.kappa

    def decode_latents(self, z: torch.Tensor, mode: str = "projection") -> torch.Tensor:
        """Token ids of final latents: linear projection onto the tied table, or its nearest row.

        Scores are computed in the table's dtype (no float32 copy of a 64K x d table per block).
        """
        table = self.embedding
        scores = (z.to(table.dtype) @ table.T).float()
        if mode == "nearest":
            # argmin |z - kappa e_v|² = argmax z·e_v - kappa |e_v|² / 2
            scores = scores - 0.5 * self.kappa * torch.linalg.vector_norm(table, dim=-1, dtype=torch.float32) ** 2
        elif mode != "projection":
            raise ValueError(f"unknown latent decoding '{mode}'; choose projection or nearest")
        return scores.argmax(-1)

    def kv_bytes_per_position(self) -> int:
        """Bytes of keys and values one cached position holds across all layers."""
        c = self.config
        return 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * self.embedding.element_size()

    def _layers(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | str | None,
                cache: EvoCache | None = None, slots: torch.Tensor | None = None,
                valid: int | None = None, ar: bool = False) -> torch.Tensor:
        """The blocks over ``x``; ``ar=True`` runs the AR pathway's (the AR module's in a two-module
        model, the shared backbone otherwise) with its cache."""
        cos, sin = self.rotary(positions, x.dtype)
        backbone, layers = self.model, (cache.layers if cache is not None else None)
        if ar and self.ar_model is not None:
            backbone, layers = self.ar_model, (cache.ar_layers if cache is not None else None)
        for i, layer in enumerate(backbone.layers):
            x = layer(x, cos, sin, mask, layers[i] if layers is not None else None, slots, valid)
        return x

    def _ar_embed(self, ids: torch.Tensor) -> torch.Tensor:
        return (self.ar_model or self.model).embed_tokens(ids)

    def _ar_readout(self, h: torch.Tensor) -> torch.Tensor:
        """Next-token logits of the AR pathway's final hidden states (float32)."""
        if self.ar_model is None:
            return self.readout(h).logits
        return F.linear(self.ar_model.norm(h), self.ar_model.embed_tokens.weight).float()

    # ---- the AR limit (t = 0): clean tokens, causal attention ---------------------------------------

    def ar_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (batch, n, vocab) of clean tokens under causal attention."""
        ids = input_ids if input_ids.dim() == 2 else input_ids[None]
        positions = torch.arange(ids.shape[1], device=ids.device)
        h = self._layers(self._ar_embed(ids), positions, CAUSAL, ar=True)
        return self._ar_readout(h)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> CausalLMOutputWithPast:
        """The AR-limit language model, so Auto classes and HF tooling can call Evo like a causal LM.

        ``attention_mask`` may only mark right padding (pads after the text never reach earlier
        positions under causal attention); left padding is refused rather than silently misread.
        """
        if attention_mask is not None and bool((attention_mask[:, 0] == 0).any()):
            raise ValueError("Evo's AR-limit forward does not support left padding; pad on the right")
        logits = self.ar_logits(input_ids)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, **kwargs) -> dict:
        # No transformers cache: every step sees the full sequence (generate would otherwise pass only
        # the tokens it believes are not cached yet).
        return {"input_ids": input_ids, "attention_mask": kwargs.get("attention_mask")}

    # ---- clean stream + latent blocks, no cache (training and likelihood) ---------------------------

    def latent_forward(self, clean_ids: torch.Tensor, z: torch.Tensor, t: torch.Tensor,
                       latent_positions: torch.Tensor, block_start: torch.Tensor,
                       time_conditioning: bool = True, prefix: EvoCache | None = None
                       ) -> tuple[torch.Tensor, LatentOutput]:
        """One pass over [clean tokens ; latents]: (AR logits of the clean stream, latent readout).

        ``clean_ids`` (b, nc) sit at positions p..p+nc-1 and attend causally, where p is the length of
        ``prefix`` (clean tokens already encoded by ``encode_prefix``, shared by every row; 0 without
        one). Latent j (``z[:, j]`` at ``t[:, j]``) sits at ``latent_positions[j]`` and attends to clean
        positions before ``block_start[j]`` and to every latent with the same block start.
        """
        b, nc = clean_ids.shape
        nz = z.shape[1]
        device = clean_ids.device
        p = prefix.capacity if prefix is not None else 0
        clean_pos = torch.arange(p, p + nc, device=device)
        x = torch.cat([self.model.embed_tokens(clean_ids), self.latent_inputs(z, t, time_conditioning)], dim=1)
        positions = torch.cat([clean_pos, latent_positions])
        mask = torch.zeros(nc + nz, p + nc + nz, dtype=torch.bool, device=device)
        mask[:, :p] = True  # the prefix precedes every row, and every block starts after it
        mask[:nc, p:p + nc] = clean_pos[:, None] >= clean_pos[None, :]
        mask[nc:, p:p + nc] = clean_pos[None, :] < block_start[:, None]
        mask[nc:, p + nc:] = block_start[:, None] == block_start[None, :]
        h = self._layers(x, positions, mask, prefix, None, p)
        if self.ar_model is None:
            ar = self.readout(h[:, :nc]).logits
        else:  # the AR module reads the clean stream itself (the diffusion module's pass is its context)
            ar = None if prefix is not None else self.ar_logits(clean_ids)
        return ar, self.readout(h[:, nc:])

    def encode_prefix(self, clean_ids: torch.Tensor) -> EvoCache:
        """Keys/values of clean tokens (1-D) under causal attention, for ``latent_forward(prefix=)``."""
        n = clean_ids.shape[0]
        cache = self.new_cache(n)
        positions = torch.arange(n, device=clean_ids.device)
        self._layers(self.model.embed_tokens(clean_ids)[None], positions, CAUSAL, cache, positions, n)
        return cache

    # ---- cached inference primitives (the sampler's) -------------------------------------------------

    def new_cache(self, capacity: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> EvoCache:
        c = self.config
        device = device or self.embedding.device
        dtype = dtype or self.embedding.dtype
        shape = (1, c.num_key_value_heads, capacity, c.head_dim)

        def layers():
            return [(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))
                    for _ in range(c.num_hidden_layers)]

        return EvoCache(layers(), layers() if self.ar_model is not None else None)

    def encode_step(self, cache: EvoCache, clean_ids: torch.Tensor, clean_start: int, z: torch.Tensor,
                    t: torch.Tensor, z_start: int, time_conditioning: bool = True) -> LatentOutput:
        """Append clean tokens at ``clean_start`` (causal) and a canvas of latents at ``z_start``.

        Writes both into the cache; the latents attend to everything up to the canvas's end. One
        forward: committing the previous block and sketching the next cost a single evaluation.
        Positions between the clean tokens and ``z_start`` must already be cached. ``next_logits`` is
        the AR head at the last clean token: the AR pathway's prediction of the canvas's first token.
        """
        nc, nz = clean_ids.shape[0], z.shape[0]
        device = z.device
        valid = z_start + nz
        pos = torch.cat([torch.arange(clean_start, clean_start + nc, device=device),
                         torch.arange(z_start, valid, device=device)])
        x = torch.cat([self.model.embed_tokens(clean_ids), self.latent_inputs(z, t, time_conditioning)])[None]
        keys = torch.arange(valid, device=device)
        mask = torch.ones(nc + nz, valid, dtype=torch.bool, device=device)
        mask[:nc] = keys[None, :] <= pos[:nc, None]
        h = self._layers(x, pos, mask, cache, pos, valid)[0]
        out = self.readout(h[nc:])
        if nc and self.ar_model is None:
            out.next_logits = self.readout(h[nc - 1:nc]).logits[0]
        elif nc:  # two modules: the AR one encodes the clean tokens too (a second network evaluation)
            out.next_logits = self.clean_step(cache, clean_ids, clean_start)
        return out

    def clean_step(self, cache: EvoCache, clean_ids: torch.Tensor, start: int, all_logits: bool = False
                   ) -> torch.Tensor:
        """The AR pathway over the cache: clean tokens at ``start``.. attend causally to the cached
        positions before them and to each other; their keys/values are written at their positions.

        Returns the AR head's next-token logits at the last token (vocab,), or at every token
        (n, vocab) with ``all_logits``. A KV-cached ``ar_logits``: the same numbers, one row at a time.
        """
        n = clean_ids.shape[0]
        device = clean_ids.device
        valid = start + n
        pos = torch.arange(start, valid, device=device)
        mask = torch.arange(valid, device=device)[None, :] <= pos[:, None]
        h = self._layers(self._ar_embed(clean_ids)[None], pos, mask, cache, pos, valid, ar=True)[0]
        logits = self._ar_readout(h if all_logits else h[-1:])
        return logits if all_logits else logits[0]

    def refine_step(self, cache: EvoCache, z: torch.Tensor, t: torch.Tensor, slots: torch.Tensor, valid: int,
                    time_conditioning: bool = True) -> LatentOutput:
        """One evaluation of the field over the given latents only (``slots`` = their positions).

        Their keys/values overwrite their cache slots; they attend to all ``valid`` cached positions
        (the clean prefix, and the block's finished latents at their last state).
        """
        h = self._layers(self.latent_inputs(z, t, time_conditioning)[None], slots, None, cache, slots, valid)
        return self.readout(h[0])
