"""BD3-LM (Arriola et al., ICLR 2025, arXiv 2503.09573): the block-diffusion DiT and its checkpoint loader.

Facts read (not copied) from kuleshov-group/bd3lms ``models/dit.py`` / ``diffusion.py`` and the
published ``modeling_bd3lm.py`` (mirrored in zhihanyang2022/bd3lms ``models/hf/``):

* the same DiT as MDLM (``models/dit.py``); only attention masks differ. The sequence is cut into
  blocks of ``block_size`` from position 0;
* sampling ("sample mode") attends block-causally: a position sees every position of its own block
  and of earlier blocks, never a later block. With the KV cache the current block's queries attend
  to the cached keys of earlier blocks plus the block itself, which is the same computation, so the
  cache is exact (maintainer reply in kuleshov-group/bd3lms#26);
* training and likelihood run ``x_t ⊕ x_0`` (noisy copy first, clean copy second) under the
  ``block_diff_mask``: a noisy position sees its own noisy block (block diagonal) and the clean
  blocks strictly before it (offset block-causal); a clean position sees clean blocks up to its
  own (block causal). Both copies use the same absolute rotary positions. Since the clean copy
  never sees the noisy one, its keys/values are computed once and shared by a batch of noisy
  draws (``nelbo_prefix``); the noisy rows are what the authors' single forward computes.

Checkpoints: ``kuleshov-group/bd3lm-owt-block_size{4,8,16}`` (config.json ``model_type: bd3lm`` with
an ``auto_map``; keys block_size, vocab_size, model_length, cross_attn, attn_backend, hidden_dim,
cond_dim, n_blocks, n_heads, dropout, time_conditioning, var_min, sampling_eps_min/max, and in
newer revisions adaln and causal). The published files also store the rotary frequencies and the
clipped noise interval as buffers; we derive both from the config and ignore those keys. The block
size belongs to the checkpoint (the model was trained with that mask), so the sampler reads it
from the model rather than from decoding settings.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForMaskedLM

from ..errors import CheckpointError
from . import dit
from .building import register_auto
from .layers import KVCache

ARCHITECTURE = "BD3LM"

# A scaled-down shape of the same architecture (keys as in the cards) for CPU tests and runs.
TINY_SHAPE: dict[str, Any] = dict(architecture=ARCHITECTURE, n_layers=2, d_model=64, n_heads=4, d_ff=256,
                                  cond_dim=32, vocab_size=512, max_seq_len=4096, block_size=4)


class BD3LMConfig(dit.DiTConfig):
    """The published config keys (configuration_bd3lm.py): the DiT's and BD3-LM's own; defaults are the
    published classes'."""

    model_type = "bd3lm"

    block_size: int = 1
    cross_attn: bool = True
    adaln: bool = True
    attn_backend: str = "sdpa"
    causal: bool = False
    var_min: bool = True
    sampling_eps_min: float = 1e-3
    sampling_eps_max: float = 0.999


def block_causal_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, block_size: int) -> torch.Tensor:
    """(Q, K) boolean, True where query may attend: keys in its own block or an earlier one."""
    return (k_pos[None, :] // block_size) <= (q_pos[:, None] // block_size)


def block_diff_mask(noisy_pos: torch.Tensor, clean_pos: torch.Tensor, block_size: int) -> torch.Tensor:
    """The training mask over [noisy ⊕ clean] (bd3lms models/dit.py ``block_diff_mask``), for any
    block-aligned slice of the noisy copy and any prefix of the clean copy."""
    blocks = torch.cat((noisy_pos, clean_pos)) // block_size
    noisy = torch.cat((torch.ones_like(noisy_pos, dtype=torch.bool), torch.zeros_like(clean_pos, dtype=torch.bool)))
    qb, kb = blocks[:, None], blocks[None, :]
    qn, kn = noisy[:, None], noisy[None, :]
    diagonal = qn & kn & (qb == kb)
    offset_causal = qn & ~kn & (kb < qb)
    causal = ~qn & ~kn & (kb <= qb)
    return diagonal | offset_causal | causal


class BD3LM(dit.DiTModel):
    config_class = BD3LMConfig
    base_model_prefix = "bd3lm"
    hub_example = "kuleshov-group/bd3lm-owt-block_size16"

    @classmethod
    def check_config(cls, config, where: str) -> None:
        super().check_config(config, where)
        fix = "use a published BD3-LM checkpoint layout (kuleshov-group/bd3lm-owt-block_size*)"
        unsupported = [(k, v) for k, v in (("cross_attn", True), ("adaln", True), ("causal", False),
                                            ("time_conditioning", False)) if bool(getattr(config, k, v)) != v]
        if unsupported:
            key, value = unsupported[0]
            raise CheckpointError(f"{where}: {key}={not value} is not supported (the published BD3-LMs use {key}={value})", fix)

    @property
    def block_size(self) -> int:
        return int(self.config.block_size)

    def new_cache(self, capacity: int) -> list[KVCache]:
        param = self.backbone.output_layer.linear.weight
        return self.backbone.new_cache(capacity, param.device, param.dtype)

    def forward(self, input_ids: torch.Tensor, timesteps: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        """Raw logits (batch, L, vocab) under the block-causal (sample-mode) mask."""
        c = self.backbone.condition(None, input_ids.shape[0], input_ids.device)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        mask = block_causal_mask(positions, positions, self.block_size)
        return self.backbone.output_layer(self.backbone.hidden(input_ids, positions, c, mask=mask), c)

    def block_logits(self, ids: torch.Tensor, *, start: int = 0, caches: list[KVCache] | None = None,
                     out_start: int = 0, logits: bool = True) -> torch.Tensor | None:
        """Positions [start, start + L) of ``ids`` (1, L), block-causal; with ``caches`` they attend to
        the cached keys before ``start`` and their own keys are written at [start, start + L).
        Returns SUBS logits of [out_start:] (relative to ``ids``), or None when ``logits`` is False
        (the forward that only stores a finished block's keys and values)."""
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        keys = torch.arange(start + ids.shape[1], device=ids.device) if caches is not None else positions
        single_block = start // self.block_size == (start + ids.shape[1] - 1) // self.block_size
        # One block against earlier ones needs no mask at all (every key is visible): SDPA's fast path.
        mask = None if single_block and caches is not None else block_causal_mask(positions, keys, self.block_size)
        c = self.backbone.condition(None, ids.shape[0], ids.device)
        hidden = self.backbone.hidden(ids, positions, c, mask=mask, caches=caches, start=start)
        if not logits:
            return None
        return dit.subs_logits(self.backbone.output_layer(hidden[:, out_start:], c), self.mask_token_id)

    def nelbo_prefix(self, clean: torch.Tensor) -> tuple[list[KVCache], int]:
        """Keys/values of the clean copy (1, Lc), computed once and shared by every noisy draw: under
        the block-diff mask a clean position attends only to clean blocks up to its own, so nothing
        the noise does reaches them."""
        length = clean.shape[1]
        caches = self.new_cache(max(length, 1))
        if length:
            self.block_logits(clean, caches=caches, logits=False)
        return caches, length

    def nelbo_logits(self, noisy: torch.Tensor, clean: torch.Tensor, noisy_start: int, *,
                     prefix: tuple[list[KVCache], int] | None = None) -> torch.Tensor:
        """SUBS logits (S, Ln, V) of the noisy copy in an ``x_t ⊕ x_0`` forward.

        ``noisy`` (S, Ln) holds positions [noisy_start, noisy_start + Ln) with ``noisy_start`` on a
        block boundary; ``clean`` (1, Lc) holds positions [0, Lc) and ``prefix`` its keys/values
        from ``nelbo_prefix`` (computed here when not given). Noisy blocks before ``noisy_start`` are
        left out: only their own noisy block would attend to them. The result equals one forward
        over [x_t ⊕ x_0] under ``block_diff_mask``, at the cost of the noisy rows only.
        """
        if noisy_start % self.block_size:
            raise ValueError(f"noisy_start {noisy_start} is not on a block boundary of {self.block_size}")
        caches, length = prefix if prefix is not None else self.nelbo_prefix(clean)
        s, ln = noisy.shape
        device = noisy.device
        noisy_pos = torch.arange(noisy_start, noisy_start + ln, device=device)
        full = block_diff_mask(noisy_pos, torch.arange(length, device=device), self.block_size)
        mask = torch.cat((full[:ln, ln:], full[:ln, :ln]), dim=1)  # noisy rows; keys ordered [clean, noisy]
        c = self.backbone.condition(None, s, device)
        hidden = self.backbone.hidden(noisy, noisy_pos, c, mask=mask, caches=caches, start=length, write=False)
        return dit.subs_logits(self.backbone.output_layer(hidden, c), self.mask_token_id)


register_auto(BD3LMConfig, BD3LM, AutoModelForMaskedLM)


def config_from_shape(shape: dict[str, Any]) -> BD3LMConfig:
    return BD3LMConfig(**dit.DiTShape.from_card(shape, ARCHITECTURE, needs_block=True).to_config())


def random_model(shape: dict[str, Any], *, dtype: torch.dtype, device: torch.device | str, seed: int = 0) -> BD3LM:
    """The card's shape with seeded random weights, built directly on ``device`` in ``dtype``."""
    return dit.build_random(BD3LM, config_from_shape(shape), dtype=dtype, device=device, seed=seed)


def load_pretrained(name_or_path: str, *, revision: str | None = None, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> BD3LM:
    """kuleshov-group/bd3lm-owt-block_size{4,8,16} (any revision) or a local folder in that layout."""
    return dit.load_pretrained(BD3LM, name_or_path, revision=revision, dtype=dtype, device=device, family="BD3-LM")
