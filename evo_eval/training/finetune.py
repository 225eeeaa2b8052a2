"""A small fine-tuning loop around ``evo_objective``, with the optimiser settings of Appendix 7.1.

AdamW (beta1 0.9, beta2 0.95, eps 1e-8, weight decay 0.1), cosine learning-rate decay after a linear
warm-up, gradient clipping at global norm 1.0, optional exponential moving average of the weights
(the paper's 0.9999 suits millions of steps, not a test). The paper anneals the AR and denoising
weights during warm-up "allowing the latent flow loss to govern later training" but gives no
schedule, so the weights stay as configured here. ``freeze_backbone`` gives the paper's "frozen
AR backbone" variant: only the time embedding and the time head train.

Sequences of token ids are padded on the right (the padding masked out of every term); each step
draws a batch with the seeded generator, so a run is reproducible. After every step the latent scale
is re-derived from the embedding table (``refresh_latent_scale``): the table moves under the AR and
denoising terms, and a fixed scale would let clean latents outgrow the unit noise, silently shifting
the noise schedule the sampler and the ELBO assume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .objective import ObjectiveWeights, evo_objective


@dataclass
class FinetuneConfig:
    steps: int = 300
    lr: float = 2e-4  # the paper's peak for its smaller models
    warmup: int = 30
    batch_size: int = 8
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    ema_decay: float | None = None
    block_length: int = 32
    k_max: int = 20
    sketch_fraction: float = 0.25
    freeze_backbone: bool = False
    seed: int = 0
    weights: ObjectiveWeights = field(default_factory=ObjectiveWeights)


def freeze_backbone(model) -> None:
    """Train only the time modules: the "Frozen AR Backbone" variant of the paper's Figure 4."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(("time_embed.", "time_head.")))


def lr_at(step: int, config: FinetuneConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def pad_batch(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(sequences), width)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1.0
    return ids.to(device), mask.to(device)


def finetune(model, sequences: list[list[int]], config: FinetuneConfig | None = None, *,
             pad_id: int | None = None, on_step: Callable[[int, dict[str, float]], None] | None = None
             ) -> list[dict[str, float]]:
    """Train ``model`` in place on token-id sequences; returns the per-step loss parts."""
    config = config or FinetuneConfig()
    if not sequences or any(len(s) < 2 for s in sequences):
        raise ValueError("finetune needs sequences of at least two tokens")
    device = model.embedding.device
    pad = pad_id if pad_id is not None else (model.config.pad_token_id or model.config.eos_token_id or 0)
    model.train()
    if config.freeze_backbone:
        freeze_backbone(model)
    else:
        model.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=config.lr, betas=config.betas, eps=config.eps)
    ema = [p.detach().clone() for p in params] if config.ema_decay else None
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)
    history = []
    for step in range(config.steps):
        pick = torch.randint(0, len(sequences), (config.batch_size,), generator=gen, device=device).tolist()
        ids, mask = pad_batch([sequences[i] for i in pick], pad, device)
        for group in optim.param_groups:
            group["lr"] = lr_at(step, config)
        out = evo_objective(model, ids, loss_mask=mask, weights=config.weights, block_length=config.block_length,
                            k_max=config.k_max, sketch_fraction=config.sketch_fraction, generator=gen)
        optim.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optim.step()
        model.refresh_latent_scale()
        if ema is not None:
            with torch.no_grad():
                for avg, p in zip(ema, params):
                    avg.lerp_(p.detach(), 1.0 - config.ema_decay)
        history.append(out.parts)
        if on_step is not None:
            on_step(step, out.parts)
    if ema is not None:
        with torch.no_grad():
            for avg, p in zip(ema, params):
                p.copy_(avg)
    model.eval()
    return history
