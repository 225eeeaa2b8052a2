"""MDLM (Sahoo et al., NeurIPS 2024, arXiv 2406.07524): the DiT denoiser and its checkpoint loader.

The network is ``models/dit.py``'s DiT attending bidirectionally over the whole canvas. Its output
follows the SUBS parameterisation (kuleshov-group/mdlm ``diffusion.py`` @06dd29f,
``_subs_parameterization``): logits with [MASK] removed, so ``softmax`` gives p_theta(x_0 | x_t) at
masked positions; unmasked positions are copied by the samplers and scorers themselves.

Checkpoints: the published ``kuleshov-group/mdlm-owt`` (config.json ``model_type: mdlm`` with an
``auto_map`` to remote code; keys vocab_size, model_length, hidden_dim, cond_dim, n_blocks, n_heads,
dropout, time_conditioning) loads through ``AutoModelForMaskedLM`` with our registered classes, from
the hub (``revision=``) or from a local folder. The paper's 7B MDLM has no public weights; its
cards take ``--checkpoint`` (a save_pretrained folder of these classes).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForMaskedLM

from . import dit
from .building import register_auto

ARCHITECTURE = "MDLM"

# A scaled-down shape of the same architecture (keys as in the cards) for CPU tests and runs.
TINY_SHAPE: dict[str, Any] = dict(architecture=ARCHITECTURE, n_layers=2, d_model=64, n_heads=4, d_ff=256,
                                  cond_dim=32, vocab_size=512, max_seq_len=4096)


class MDLMConfig(dit.DiTConfig):
    """The published config keys (configuration_mdlm.py): the DiT's own; defaults are mdlm-owt's."""

    model_type = "mdlm"


class MDLM(dit.DiTModel):
    config_class = MDLMConfig
    base_model_prefix = "mdlm"
    hub_example = "kuleshov-group/mdlm-owt"

    def forward(self, input_ids: torch.Tensor, timesteps: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        """Raw logits (batch, L, vocab), as the published class returns them."""
        c = self.backbone.condition(timesteps, input_ids.shape[0], input_ids.device)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.backbone.output_layer(self.backbone.hidden(input_ids, positions, c), c)

    def denoiser_logits(self, ids: torch.Tensor, *, start: int = 0, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """SUBS logits (float32, [MASK] at -inf) of positions [start:] of ``ids`` (batch, L): the whole
        canvas is attended, but the vocabulary projection runs only where the caller reads."""
        c = self.backbone.condition(sigma, ids.shape[0], ids.device)
        positions = torch.arange(ids.shape[1], device=ids.device)
        hidden = self.backbone.hidden(ids, positions, c)
        return dit.subs_logits(self.backbone.output_layer(hidden[:, start:], c), self.mask_token_id)


register_auto(MDLMConfig, MDLM, AutoModelForMaskedLM)


def config_from_shape(shape: dict[str, Any]) -> MDLMConfig:
    return MDLMConfig(**dit.DiTShape.from_card(shape, ARCHITECTURE, needs_block=False).to_config())


def random_model(shape: dict[str, Any], *, dtype: torch.dtype, device: torch.device | str, seed: int = 0) -> MDLM:
    """The card's shape with seeded random weights, built directly on ``device`` in ``dtype``."""
    return dit.build_random(MDLM, config_from_shape(shape), dtype=dtype, device=device, seed=seed)


def load_pretrained(name_or_path: str, *, revision: str | None = None, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> MDLM:
    """kuleshov-group/mdlm-owt (any revision) or a local save_pretrained folder in that layout."""
    return dit.load_pretrained(MDLM, name_or_path, revision=revision, dtype=dtype, device=device, family="MDLM")
