"""Evo's transformers configuration and its mapping to and from a model card's ``shape`` block.

Sizes (arXiv 2603.06617, §3.3 and Appendix 7.1): five scales from S = 1.3B (24 layers, 1024-d latents,
16 heads) to H = 13B (48 layers, 2560-d, 40 heads), "proportional scaling of depth and width", with the
XL configuration (8.5B) used for every reported result; 64K SentencePiece vocabulary; 4K context.

The paper gives no FFN width, and its counts do not fit a standard one: a Llama-style block with
a SwiGLU of 8/3·d makes S about 0.37B, not 1.3B. The XL shape of ``evo-8b`` is therefore derived:

* Depth and width follow the proportional path from S to H, where depth doubles (24 -> 48) while
  width grows 2.5x (1024 -> 2560): ``L(s) = 24·2^s``, ``d(s) = 1024·2.5^s``, so the parameter count
  (about ``L·d²``) grows as ``12.5^s``. XL/S = 8.5/1.3 gives ``s = ln 6.54 / ln 12.5 = 0.743``, so
  ``L = 40.2`` and ``d = 2024``; rounded to 40 layers and d = 2048 (32 heads of 64, the head size S and
  H both have).
* The FFN width then follows from the count: 8.5B total with tied 64K embeddings leaves
  ``3·d·d_ff`` per layer for the SwiGLU, ``d_ff = 31,298``; rounded to a multiple of 256, 31,232
  (15.25·d), total 8.49B (``parameter_count``).
* Cross-check: S at the same FFN ratio counts 1.32B, as the paper says. H at that ratio would be
  15.9B, not 13B (the stated H count implies 12.3·d): the paper's two ends are not consistent with
  each other, and XL is anchored at S, the end whose numbers agree.

Choices where the paper is silent: Llama-style blocks (RMSNorm, rotary positions with theta 10,000,
SwiGLU, no biases) so that a Llama-family checkpoint maps in for "pretrained init"; full multi-head
attention (n_kv_heads = n_heads) for the random-weight shape; a 256-wide sinusoidal time embedding
through a two-layer SiLU MLP; a time head hidden width of d.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PretrainedConfig

from ..errors import UserError
from .shapes import CardShapeConfig

# Card shape key -> config attribute. "architecture" is the card's label only.
SHAPE_KEYS = {
    "n_layers": "num_hidden_layers",
    "d_model": "hidden_size",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "d_ff": "intermediate_size",
    "vocab_size": "vocab_size",
    "max_seq_len": "max_position_embeddings",
    "rope_theta": "rope_theta",
    "rms_norm_eps": "rms_norm_eps",
    "tie_embeddings": "tie_word_embeddings",
    "time_embed_dim": "time_embed_dim",
    "two_module": "two_module",
}
# The keys that decide whether a checkpoint's weights fit a card; the rest only tune numerics.
ARCHITECTURE_KEYS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_ff", "vocab_size", "tie_embeddings",
                     "time_embed_dim", "two_module")
_REQUIRED = ("n_layers", "d_model", "n_heads", "d_ff", "vocab_size")
ARCHITECTURE = "EvoForLatentFlow"


class EvoConfig(CardShapeConfig, PretrainedConfig):
    """Configuration of :class:`~evo_eval.models.evo_modeling.EvoForLatentFlow` (model_type ``evo``).

    ``latent_scale`` (kappa) maps token embeddings into the latent space, ``z = kappa·e(x)``, chosen so a
    clean latent has unit RMS per coordinate and the unit-variance Gaussian noise of the cosine
    schedule is on the same scale; it is fixed when the model is created (1/RMS of the embedding
    table) and stored so a checkpoint's latent space never changes on reload.
    """

    model_type = "evo"
    FAMILY = "Evo"
    ARCHITECTURE = ARCHITECTURE
    SHAPE_KEYS = SHAPE_KEYS
    ARCHITECTURE_KEYS = ARCHITECTURE_KEYS
    REQUIRED_SHAPE_KEYS = _REQUIRED

    def __init__(
        self,
        vocab_size: int = 64000,
        hidden_size: int = 2048,
        intermediate_size: int = 31232,
        num_hidden_layers: int = 40,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = None,
        max_position_embeddings: int = 4096,
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-5,
        tie_word_embeddings: bool = True,
        time_embed_dim: int = 256,
        latent_scale: float | None = None,
        initializer_range: float = 0.02,
        dropout: float = 0.1,
        two_module: bool = False,
        **kwargs: Any,
    ):
        self.vocab_size = int(vocab_size)
        self.hidden_size = int(hidden_size)
        self.intermediate_size = int(intermediate_size)
        self.num_hidden_layers = int(num_hidden_layers)
        self.num_attention_heads = int(num_attention_heads)
        self.num_key_value_heads = int(num_key_value_heads or num_attention_heads)
        self.max_position_embeddings = int(max_position_embeddings)
        self.rope_theta = float(rope_theta)
        self.rms_norm_eps = float(rms_norm_eps)
        self.time_embed_dim = int(time_embed_dim)
        self.initializer_range = float(initializer_range)
        # Appendix 7.1: "dropout of 0.1 on residual and feed-forward connections" (training only; a
        # module in eval mode, as every sampler and scorer runs it, computes without it).
        self.dropout = float(dropout)
        # Figure 4's "Two-Module (AR + Diff)": the AR pathway gets its own Transformer (embeddings,
        # blocks, norm, head tied to its own table) instead of sharing the latent flow's.
        self.two_module = bool(two_module)
        # Random init draws the table with std initializer_range, so its RMS is that std.
        self.latent_scale = float(latent_scale) if latent_scale else 1.0 / self.initializer_range
        super().__init__(tie_word_embeddings=bool(tie_word_embeddings), **kwargs)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                             f"{self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # ---- card shapes (from_shape, to_shape, check_fits: CardShapeConfig) -----------------------------

    @classmethod
    def _from_shape_values(cls, values: dict[str, Any], extra: dict[str, Any]) -> "EvoConfig":
        try:
            return cls(**values, **extra)
        except ValueError as exc:
            raise UserError(f"the card's shape is not a valid Evo architecture: {exc}", "fix the shape block") from None


def parameter_count(shape: dict[str, Any]) -> int:
    """Parameters of the architecture a shape describes, counted from the formulas of the modules."""
    c = EvoConfig.from_shape(shape)
    d, f, v = c.hidden_size, c.intermediate_size, c.vocab_size
    kv = c.num_key_value_heads * c.head_dim
    layer = d * d * 2 + 2 * d * kv + 3 * d * f + 2 * d
    time_embed = c.time_embed_dim * d + d + d * d + d
    time_head = d * d + d + d + 1
    embeddings = v * d * (1 if c.tie_word_embeddings else 2)
    ar_module = (c.num_hidden_layers * layer + v * d + d) if c.two_module else 0
    return c.num_hidden_layers * layer + time_embed + time_head + embeddings + d + ar_module


def proportional_xl(s_params: float = 1.3e9, xl_params: float = 8.5e9) -> tuple[int, int]:
    """(layers, width) of XL on the S-to-H path before rounding; see the module docstring."""
    s = math.log(xl_params / s_params) / math.log(2 * 2.5**2)
    return round(24 * 2**s), round(1024 * 2.5**s)
