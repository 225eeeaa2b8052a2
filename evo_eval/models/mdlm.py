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
from transformers import AutoConfig, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel
from transformers import initialization as init

from ..errors import CheckpointError
from . import dit

ARCHITECTURE = "MDLM"

# A scaled-down shape of the same architecture (keys as in the cards) for CPU tests and runs.
TINY_SHAPE: dict[str, Any] = dict(architecture=ARCHITECTURE, n_layers=2, d_model=64, n_heads=4, d_ff=256,
                                  cond_dim=32, vocab_size=512, max_seq_len=4096)


class MDLMConfig(PretrainedConfig):
    """The published config keys (configuration_mdlm.py); defaults are mdlm-owt's."""

    model_type = "mdlm"

    def __init__(self, vocab_size: int = 50258, model_length: int = 1024, hidden_dim: int = 768,
                 cond_dim: int = 128, n_blocks: int = 12, n_heads: int = 12, dropout: float = 0.1,
                 time_conditioning: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.model_length = model_length
        self.hidden_dim = hidden_dim
        self.cond_dim = cond_dim
        self.n_blocks = n_blocks
        self.n_heads = n_heads
        self.dropout = dropout
        self.time_conditioning = time_conditioning


class MDLM(PreTrainedModel):
    config_class = MDLMConfig
    base_model_prefix = "mdlm"
    hub_example = "kuleshov-group/mdlm-owt"
    _keys_to_ignore_on_load_unexpected = dit.DERIVED_BUFFERS

    def __init__(self, config: MDLMConfig):
        super().__init__(config)
        self.backbone = dit.DiTBackbone(config)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, dit.EmbeddingLayer):
            init.normal_(module.embedding, mean=0.0, std=0.02)

    @classmethod
    def check_config(cls, config, where: str) -> None:
        dit.DiTShape.from_config(config).check(CheckpointError, where, "fix the checkpoint's config.json")

    @property
    def shape(self) -> dit.DiTShape:
        return dit.DiTShape.from_config(self.config)

    @property
    def mask_token_id(self) -> int:
        explicit = getattr(self.config, "mask_token_id", None)
        return int(explicit) if explicit is not None else self.config.vocab_size - 1

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


AutoConfig.register(MDLMConfig.model_type, MDLMConfig, exist_ok=True)
AutoModelForMaskedLM.register(MDLMConfig, MDLM, exist_ok=True)


def config_from_shape(shape: dict[str, Any]) -> MDLMConfig:
    return MDLMConfig(**dit.DiTShape.from_card(shape, ARCHITECTURE, needs_block=False).to_config())


def random_model(shape: dict[str, Any], *, dtype: torch.dtype, device: torch.device | str, seed: int = 0) -> MDLM:
    """The card's shape with seeded random weights, built directly on ``device`` in ``dtype``."""
    return dit.build_random(MDLM, config_from_shape(shape), dtype=dtype, device=device, seed=seed)


def load_pretrained(name_or_path: str, *, revision: str | None = None, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> MDLM:
    """kuleshov-group/mdlm-owt (any revision) or a local save_pretrained folder in that layout."""
    return dit.load_pretrained(MDLM, name_or_path, revision=revision, dtype=dtype, device=device, family="MDLM")
