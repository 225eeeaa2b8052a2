"""A Llama / Qwen2 decoder built for fast batch-1 decoding, loading Hugging Face Llama and Qwen2 weights.

``evo-eval speed`` times the AR cards here (lm-eval's HF backend runs them for accuracy): fused q/k/v
and gate/up weights, a static per-layer KV cache written at a device-side position (one decode step
of fixed shapes, captured as a CUDA graph), grouped-query attention by reshaping the queries, and a
per-layer step ``torch.compile`` compiles once. Numerics follow transformers' ``modeling_llama.py`` /
``modeling_qwen2.py``. Why each choice, and what it measured: docs/fast-decoder.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, UserError
from .building import normal_fill, random_weights
from .layers import apply_rotary, rotary_cos_sin
from .shapes import reject_unknown_keys, require_keys

# A scaled-down shape of the same architecture (keys as in the AR cards) for CPU tests and runs.
TINY_SHAPE: dict[str, Any] = dict(
    architecture="LlamaForCausalLM", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128,
    vocab_size=512, max_seq_len=2048, rope_theta=10000.0, rms_norm_eps=1e-5, qkv_bias=False,
    tie_embeddings=False,
)

@dataclass(frozen=True)
class LlamaShape:
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    vocab_size: int
    max_seq_len: int = 8192
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    qkv_bias: bool = False
    tie_embeddings: bool = False
    head_dim: int | None = None

    @property
    def hd(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @classmethod
    def from_card(cls, shape: dict[str, Any]) -> "LlamaShape":
        known = {f.name for f in fields(cls)}
        reject_unknown_keys(shape, sorted(known), "Llama/Qwen2")
        require_keys(shape, ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_ff", "vocab_size"))
        out = cls(**{k: v for k, v in shape.items() if k in known})
        if out.n_heads % out.n_kv_heads:
            raise UserError(f"n_heads {out.n_heads} is not a multiple of n_kv_heads {out.n_kv_heads}",
                            "fix the card's shape block")
        return out

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], where: str = "config.json") -> "LlamaShape":
        model_type = cfg.get("model_type")
        if model_type not in ("llama", "qwen2"):
            raise CheckpointError(f"{where} is a '{model_type}' model, not Llama or Qwen2",
                                  "pass a Llama- or Qwen2-architecture checkpoint")
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", None):
            raise CheckpointError(f"{where} uses rope type '{rope_type}', which the fast decoder does not implement",
                                  "use a checkpoint with default rotary embeddings (Llama 3, Qwen2.5)")
        if cfg.get("use_sliding_window"):
            raise CheckpointError(f"{where} enables sliding-window attention, which the fast decoder does not implement",
                                  "use a checkpoint with full attention")
        if cfg.get("mlp_bias"):
            raise CheckpointError(f"{where} has MLP biases, which Llama/Qwen2 checkpoints do not",
                                  "use a standard Llama or Qwen2 checkpoint")
        theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
        return cls(
            n_layers=cfg["num_hidden_layers"], d_model=cfg["hidden_size"], n_heads=cfg["num_attention_heads"],
            n_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"], d_ff=cfg["intermediate_size"],
            vocab_size=cfg["vocab_size"], max_seq_len=cfg.get("max_position_embeddings", 8192),
            rope_theta=float(theta), rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            qkv_bias=model_type == "qwen2" or bool(cfg.get("attention_bias", False)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            head_dim=cfg.get("head_dim") if cfg.get("head_dim") not in (None, cfg["hidden_size"] // cfg["num_attention_heads"]) else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- the functional pieces: shared by the full forward, prefill and the one-token step ----------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # transformers' order: normalise in float32, cast back, then scale (so bf16 logits match it).
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rope_tables(shape: LlamaShape, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (length, head_dim), computed in float32 and cast, as transformers does."""
    cos, sin = rotary_cos_sin(torch.arange(length, device=device, dtype=torch.float32), shape.hd, shape.rope_theta)
    return cos.to(dtype), sin.to(dtype)


def mlp(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, gemv: str = "mm") -> torch.Tensor:
    gate, up = matvec(x, w13, None, gemv).chunk(2, dim=-1)
    return matvec(F.silu(gate) * up, w2, None, gemv)


def matvec(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gemv: str) -> torch.Tensor:
    """``x @ weight.T + bias``. ``gemv="reduce"`` writes it as a float32 multiply-and-sum, which
    ``torch.compile`` turns into one generated, tuned reduction kernel per product (reading the
    weight once) instead of a cuBLAS call; meant for one-token steps under compilation only, since
    run eagerly it would materialise the float32 product."""
    if gemv == "mm":
        return F.linear(x, weight, bias)
    out = (weight.float() * x.float().reshape(-1, 1, x.shape[-1])).sum(-1).reshape(*x.shape[:-1], weight.shape[0])
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)


def decode_layer(x: torch.Tensor, attn_norm: torch.Tensor, wqkv: torch.Tensor, bqkv: torch.Tensor | None,
                 wo: torch.Tensor, ffn_norm: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
                 k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor,
                 sin: torch.Tensor, valid: torch.Tensor, n_heads: int, n_kv_heads: int, eps: float,
                 gemv: str = "mm") -> torch.Tensor:
    """One layer for one token at device position ``pos`` (shape (1,)), against a static cache.

    x: (1, d); caches: (kv_heads, capacity, head_dim); cos/sin: (1, head_dim); valid: (capacity,) bool.
    Everything is a tensor argument (no module attributes), so one compiled artifact serves all layers.
    """
    hd = k_cache.shape[-1]
    group = n_heads // n_kv_heads
    qkv = matvec(rms_norm(x, attn_norm, eps), wqkv, bqkv, gemv)
    q, k, v = qkv.split([n_heads * hd, n_kv_heads * hd, n_kv_heads * hd], dim=-1)
    # Grouped-query attention by reshaping the queries: the cache is read once per kv head.
    q = apply_rotary(q.view(n_kv_heads, group, hd), cos, sin)
    k = apply_rotary(k.view(n_kv_heads, 1, hd), cos, sin)
    k_cache.index_copy_(1, pos, k)
    v_cache.index_copy_(1, pos, v.view(n_kv_heads, 1, hd))
    scores = torch.matmul(q, k_cache.transpose(1, 2)).float() * (1.0 / math.sqrt(hd))
    scores = scores.masked_fill(~valid, float("-inf"))
    attn = torch.matmul(torch.softmax(scores, dim=-1).to(v_cache.dtype), v_cache)
    x = x + matvec(attn.reshape(1, n_heads * hd), wo, None, gemv)
    return x + mlp(rms_norm(x, ffn_norm, eps), w13, w2, gemv)


def head_logits(x: torch.Tensor, norm: torch.Tensor, weight: torch.Tensor, eps: float, gemv: str = "mm") -> torch.Tensor:
    return matvec(rms_norm(x, norm, eps), weight, None, gemv)


# ---- the network -------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, s: LlamaShape):
        super().__init__()
        hd = s.hd
        self.attn_norm = nn.Parameter(torch.ones(s.d_model))
        self.wqkv = nn.Linear(s.d_model, (s.n_heads + 2 * s.n_kv_heads) * hd, bias=s.qkv_bias)
        self.wo = nn.Linear(s.n_heads * hd, s.d_model, bias=False)
        self.ffn_norm = nn.Parameter(torch.ones(s.d_model))
        self.w13 = nn.Linear(s.d_model, 2 * s.d_ff, bias=False)  # gate rows first, then up
        self.w2 = nn.Linear(s.d_ff, s.d_model, bias=False)

    def forward_seq(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, s: LlamaShape,
                    cache: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Causal attention over a whole sequence from position 0; x: (batch, T, d)."""
        b, t, _ = x.shape
        hd = s.hd
        qkv = self.wqkv(rms_norm(x, self.attn_norm, s.rms_norm_eps))
        q, k, v = qkv.split([s.n_heads * hd, s.n_kv_heads * hd, s.n_kv_heads * hd], dim=-1)
        q = apply_rotary(q.view(b, t, s.n_heads, hd).transpose(1, 2), cos, sin)
        k = apply_rotary(k.view(b, t, s.n_kv_heads, hd).transpose(1, 2), cos, sin)
        v = v.view(b, t, s.n_kv_heads, hd).transpose(1, 2)
        if cache is not None:  # prefill of a batch-1 session: keep k/v for the decode steps
            cache[0][:, :t] = k[0]
            cache[1][:, :t] = v[0]
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=s.n_kv_heads != s.n_heads)
        x = x + self.wo(attn.transpose(1, 2).reshape(b, t, s.n_heads * hd))
        return x + mlp(rms_norm(x, self.ffn_norm, s.rms_norm_eps), self.w13.weight, self.w2.weight)


class LlamaDecoder(nn.Module):
    """Llama / Qwen2 causal LM. ``forward(ids)`` gives logits for every position (tests, scoring);
    ``session(capacity, mode)`` gives the static-cache decoding state the AR sampler drives."""

    def __init__(self, shape: LlamaShape):
        super().__init__()
        self.shape = shape
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)
        self.layers = nn.ModuleList(Block(shape) for _ in range(shape.n_layers))
        self.norm = nn.Parameter(torch.ones(shape.d_model))
        self.lm_head = None if shape.tie_embeddings else nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        self._sessions: dict[tuple[str, int], Any] = {}

    @property
    def head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    @property
    def device(self) -> torch.device:
        return self.norm.device

    @property
    def dtype(self) -> torch.dtype:
        return self.norm.dtype

    def kv_bytes_per_position(self) -> int:
        s = self.shape
        return 2 * s.n_layers * s.n_kv_heads * s.hd * self.norm.element_size()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (batch, T, vocab) for ids (batch, T) or (T,), attending causally from position 0."""
        if ids.dim() == 1:
            ids = ids[None]
        cos, sin = rope_tables(self.shape, ids.shape[1], ids.device, self.dtype)
        x = self.embed(ids)
        for block in self.layers:
            x = block.forward_seq(x, cos, sin, self.shape)
        return head_logits(x, self.norm, self.head_weight, self.shape.rms_norm_eps)

    def prefill(self, ids: torch.Tensor, caches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Run the prompt (1-D ids) once, filling ``caches``; return the last position's logits (vocab,)."""
        cos, sin = rope_tables(self.shape, ids.numel(), ids.device, self.dtype)
        x = self.embed(ids[None])
        for block, cache in zip(self.layers, caches):
            x = block.forward_seq(x, cos, sin, self.shape, cache)
        return head_logits(x[0, -1:], self.norm, self.head_weight, self.shape.rms_norm_eps)[0]

    def session(self, capacity: int, mode: str) -> "DecodeSession":
        """The decoding state for a cache of at least ``capacity`` positions, built once and reused.

        A request may use any existing session up to 1024 positions larger than it needs, so a
        warm-up on the longest prompt prepares every shorter request: no capture or compilation
        happens inside a timed request (the masked extra positions cost < 1% of an 8B step).
        """
        fits = sorted(c for (m, c) in self._sessions if m == mode and capacity <= c <= capacity + 1024)
        if fits:
            return self._sessions[(mode, fits[0])]
        created = DecodeSession(self, capacity, mode)
        self._sessions[(mode, capacity)] = created
        return created

    def release_sessions(self) -> None:
        self._sessions.clear()


# ---- static-cache decoding state (driven by decoding/ar.py) --------------------------------------------

MODES = ("eager", "graph", "compile", "compile-reduce")
_COMPILED: dict[str, Any] = {}


def _compiled(name: str):
    """``decode_layer`` / ``head_logits`` compiled once per process, shared by every session and model.

    Static shapes give the best kernels; a new cache capacity or model shape recompiles, so the
    recompile limit is raised above the handful of (shape, capacity) pairs one speed run meets.
    Coordinate-descent tuning of the generated reductions is what gpt-fast enables too.
    """
    if name not in _COMPILED:
        import torch._dynamo.config as dynamo_config
        import torch._inductor.config as inductor_config

        for knob in ("cache_size_limit", "recompile_limit"):
            if hasattr(dynamo_config, knob):
                setattr(dynamo_config, knob, max(getattr(dynamo_config, knob), 64))
        inductor_config.coordinate_descent_tuning = True
        fn = {"layer": decode_layer, "head": head_logits}[name]
        _COMPILED[name] = torch.compile(fn, fullgraph=True, dynamic=False)
    return _COMPILED[name]


class DecodeSession:
    """One model's static decoding state for one cache capacity (batch 1).

    Buffers: per-layer KV caches, the token sequence ``seq`` (prompt then generated ids) and the
    device position ``pos`` of the newest committed token. One step runs the token at ``pos``
    through the network, writing its keys/values at ``pos``; the greedy step also writes the argmax
    to ``seq[pos + 1]`` and advances ``pos``, all on the device, so on CUDA the whole step is one
    graph replay with no host synchronisation. Modes: ``eager`` (plain kernels), ``graph`` (those
    kernels captured in a CUDA graph), ``compile`` (``torch.compile``d layer and head, cuBLAS for
    the matrix-vector products; captured in a CUDA graph on GPUs), ``compile-reduce`` (the same,
    with the products generated by inductor as reductions, see ``matvec``).
    """

    def __init__(self, model: LlamaDecoder, capacity: int, mode: str):
        if mode not in MODES:
            raise ValueError(f"unknown decode mode '{mode}'; choose one of {', '.join(MODES)}")
        device, dtype, s = model.device, model.dtype, model.shape
        if mode == "graph" and device.type != "cuda":
            raise ValueError("decode mode 'graph' needs a CUDA device; use 'eager' or 'compile' on the CPU")
        self.model, self.capacity, self.mode = model, int(capacity), mode
        self.caches = [(torch.zeros(s.n_kv_heads, capacity, s.hd, device=device, dtype=dtype),
                        torch.zeros(s.n_kv_heads, capacity, s.hd, device=device, dtype=dtype))
                       for _ in range(s.n_layers)]
        self.seq = torch.zeros(capacity + 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.host_pos = 0
        self.cos, self.sin = rope_tables(s, capacity, device, dtype)
        self.positions = torch.arange(capacity, device=device)
        self.logits = torch.zeros(s.vocab_size, dtype=dtype, device=device)
        compiled = mode.startswith("compile")
        self._gemv = "reduce" if mode == "compile-reduce" else "mm"
        self._layer = _compiled("layer") if compiled else decode_layer
        self._head = _compiled("head") if compiled else head_logits
        self._use_graphs = device.type == "cuda" and mode != "eager"
        self._graphs: dict[bool, torch.cuda.CUDAGraph] = {}

    # -- the step, as captured --

    def _forward_one(self) -> torch.Tensor:
        m, s = self.model, self.model.shape
        x = m.embed(self.seq.index_select(0, self.pos))
        cos, sin = self.cos.index_select(0, self.pos), self.sin.index_select(0, self.pos)
        valid = self.positions <= self.pos
        for block, (k_cache, v_cache) in zip(m.layers, self.caches):
            x = self._layer(x, block.attn_norm, block.wqkv.weight, block.wqkv.bias, block.wo.weight,
                            block.ffn_norm, block.w13.weight, block.w2.weight, k_cache, v_cache, self.pos,
                            cos, sin, valid, s.n_heads, s.n_kv_heads, s.rms_norm_eps, self._gemv)
        return self._head(x, m.norm, m.head_weight, s.rms_norm_eps, self._gemv)[0]

    def _greedy_step(self) -> None:
        self.seq.index_copy_(0, self.pos + 1, self._forward_one().argmax(-1, keepdim=True))
        self.pos.add_(1)

    def _logits_step(self) -> None:
        self.logits.copy_(self._forward_one())

    def _capture(self, greedy: bool) -> None:
        step = self._greedy_step if greedy else self._logits_step
        device = self.pos.device
        self.pos.zero_()
        # Compile, autotune and allocate on a side stream before capturing (CUDA graph rules).
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                step()
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        self._graphs[greedy] = graph
        # The warm-up wrote keys/values at positions 0..2, which the next prefill overwrites.
        self.pos.zero_()
        self.seq.zero_()
        self.host_pos = 0

    # -- what the sampler calls --

    def _replay(self, greedy: bool) -> None:
        if greedy not in self._graphs:
            raise RuntimeError("DecodeSession.prepare(greedy) must run before prefill on CUDA")
        self._graphs[greedy].replay()

    def prepare(self, greedy: bool) -> None:
        """Capture this session's step graph if it has none yet; call before ``prefill``."""
        if self._use_graphs and greedy not in self._graphs:
            self._capture(greedy)

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Run the prompt, fill the caches; return the last position's logits (vocab,)."""
        t = int(ids.numel())
        if t + 1 > self.capacity:
            raise ValueError(f"prompt of {t} tokens does not fit a cache of {self.capacity}")
        self.seq[:t].copy_(ids)
        logits = self.model.prefill(ids, self.caches)
        self.pos.fill_(t - 1)
        self.host_pos = t - 1
        return logits

    def commit(self, token: torch.Tensor) -> None:
        """Append a chosen token (device tensor of one id) after the newest one."""
        self.seq.index_copy_(0, self.pos + 1, token.reshape(1).to(torch.long))
        self.pos.add_(1)
        self.host_pos += 1

    def step_greedy(self) -> None:
        """One forward of the newest token; its argmax becomes the next token (device-side)."""
        if self.host_pos >= self.capacity:
            raise ValueError(f"decoding past the cache capacity {self.capacity}")
        if self._use_graphs:
            self._replay(True)
        else:
            self._greedy_step()
        self.host_pos += 1

    def step_logits(self) -> torch.Tensor:
        """One forward of the newest token; returns the next-token logits (a static buffer)."""
        if self.host_pos >= self.capacity:
            raise ValueError(f"decoding past the cache capacity {self.capacity}")
        if self._use_graphs:
            self._replay(False)
        else:
            self._logits_step()
        return self.logits

    def newest_token(self) -> int:
        return int(self.seq[self.host_pos])

    def generated(self, prompt_len: int) -> torch.Tensor:
        return self.seq[prompt_len:self.host_pos + 1].clone()


# ---- building: random weights at any size, or a checkpoint's ------------------------------------------


def random_model(shape: dict[str, Any], *, dtype: torch.dtype, device: torch.device | str, seed: int = 0) -> LlamaDecoder:
    """The card's shape with random weights, allocated directly on ``device`` in ``dtype``.

    Built on the meta device and materialised with ``to_empty``, then filled in place from a seeded
    generator on the target device: an 8B model never exists as a float32 copy on the CPU.
    """
    s = LlamaShape.from_card(shape)
    # Norm scales one; weights and Qwen2's q/k/v biases N(0, 0.02), transformers' Llama initializer_range.
    return random_weights(lambda: LlamaDecoder(s), dtype=dtype, device=device, seed=seed,
                          fill=normal_fill(0.02, ones=("norm",)))
