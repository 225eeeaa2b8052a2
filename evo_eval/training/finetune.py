"""A small fine-tuning loop around ``evo_objective``, with the training recipe of Appendix 7.1.

* AdamW (beta1 0.9, beta2 0.95, eps 1e-8, weight decay 0.1), cosine learning-rate decay after a
  linear warm-up, gradient clipping at global norm 1.0, label smoothing 0.1 on the AR term
  (``ObjectiveWeights``), dropout 0.1 on residual and feed-forward connections (``EvoConfig.dropout``,
  active in ``model.train()``).
* EMA of the weights with decay 0.9999, on by default, copied into the model at the end ("to
  stabilize inference"). The average starts with the warm-up ``min(decay, (1 + s)/(10 + s))`` of
  common EMA implementations (e.g. diffusers' ``EMAModel``), so a run of a few hundred steps is not
  averaged back to its initial weights; at the paper's millions of steps the decay is 0.9999.
  ``ema_decay=None`` turns it off.
* "We set the weights of the autoregressive and diffusion losses to unity and anneal their relative
  importance during warmup, allowing the latent flow loss to govern later training": the AR and
  denoising weights go linearly from 1 to ``aux_final`` (0.1, a choice: the paper gives no end value)
  over the warm-up steps and stay there; the flow weight stays 1.
* ``block_length = 0``: the whole sequence is one canvas (the paper's full-sequence latent flow).

Ablation switches (Figure 3/4, one per trained variant; ``evo_eval.ablation.VARIANTS`` names them):
``fixed_t``, ``time_conditioning``, ``time_head`` go to the objective; ``freeze_backbone`` gives the
"frozen AR backbone" (only the time embedding and the time head train). "No pretrained init" and "no
shared embeddings" are the starting model (``start_model``: random weights, or untied).

Sequences of token ids are padded on the right (the padding masked out of every term); each step
draws a batch with the seeded generator, so a run is reproducible. After every step the latent scale
is re-derived from the embedding table (``refresh_latent_scale``): the table moves under the AR and
denoising terms, and a fixed scale would let clean latents outgrow the unit noise, silently shifting
the noise schedule the sampler and the ELBO assume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from .objective import ObjectiveWeights, evo_objective

EMA_WARMUP = 10  # the EMA decay at step s is min(decay, (1 + s) / (EMA_WARMUP + s))


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
    ema_decay: float | None = 0.9999
    aux_final: float = 0.1  # AR and denoising weights after warm-up (annealed from 1)
    block_length: int = 0  # 0: the whole sequence is one canvas
    k_max: int = 20
    sketch_fraction: float = 0.25
    freeze_backbone: bool = False
    fixed_t: float | None = None  # Figure 3 "Fixed t_i": 0 AR-only, 1 diffusion-only, 0.5 uniform
    time_conditioning: bool = True  # False: "w/o time conditioning"
    time_head: bool = True  # False: the entropy heuristic's model (no time head trained)
    seed: int = 0
    weights: ObjectiveWeights = field(default_factory=ObjectiveWeights)


def variant_config(slug: str, **settings) -> FinetuneConfig:
    """The FinetuneConfig that trains an ablation variant (``evo_eval.ablation.VARIANTS``), with
    ``settings`` (steps, lr, ...) on top; the variant's own switches cannot be overridden."""
    from ..ablation import variant

    switches = dict(variant(slug).training)
    switches.pop("pretrained_init", None)  # the starting model's business (start_model)
    clash = sorted(set(switches) & set(settings))
    if clash:
        raise ValueError(f"variant '{slug}' fixes {', '.join(clash)}; drop them from the settings")
    return FinetuneConfig(**settings, **switches)


def start_model(slug: str, shape: dict, *, llama=None, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu", seed: int = 0):
    """The network an ablation variant starts training from: the paper's pretrained init
    (``init_from_llama(llama)``) when a Llama source is given, random weights for "No Pretrained
    Init" (and when none is given); untied embeddings for "No Shared Embeddings"."""
    from ..ablation import variant
    from ..models.evo import init_from_llama, random_model

    spec = variant(slug)
    shape = {**shape, **spec.shape}
    if llama is None or spec.training.get("pretrained_init") is False:
        return random_model(shape, dtype=dtype, device=device, seed=seed)
    model = init_from_llama(llama, tie_word_embeddings=bool(shape.get("tie_embeddings", True)),
                            time_embed_dim=int(shape.get("time_embed_dim", 256)))
    if shape.get("two_module"):  # both modules start from the pretrained network
        from ..models.evo_modeling import EvoForLatentFlow

        config = type(model.config).from_dict({**model.config.to_dict(), "two_module": True})
        state = model.state_dict()
        state.update({"ar_model." + k[len("model."):]: v for k, v in list(state.items()) if k.startswith("model.")})
        model = EvoForLatentFlow(config)
        model.load_state_dict(state)
    return model.to(device=device, dtype=dtype)


def freeze_backbone(model) -> None:
    """Train only the time modules: the "Frozen AR Backbone" variant of the paper's Figure 4."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(("time_embed.", "time_head.")))


def lr_at(step: int, config: FinetuneConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def weights_at(step: int, config: FinetuneConfig) -> ObjectiveWeights:
    """The objective weights at a step: AR and denoising annealed from 1 x their configured weight to
    ``aux_final`` x it over the warm-up, then constant (the flow and time terms are not annealed)."""
    w = config.weights
    frac = min(1.0, step / config.warmup) if config.warmup > 0 else 1.0
    scale = 1.0 + frac * (config.aux_final - 1.0)
    return replace(w, ar=w.ar * scale, denoise=w.denoise * scale)


def ema_decay_at(step: int, decay: float) -> float:
    return min(decay, (1.0 + step) / (EMA_WARMUP + step))


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
    if pad_id is None:  # padding is masked out of every term, so any id will do when none is named
        config_ids = (getattr(model.config, "pad_token_id", None), getattr(model.config, "eos_token_id", None))
        pad_id = next((i for i in config_ids if isinstance(i, int)), 0)
    pad = pad_id
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
    # Dropout draws from torch's global generator: seeded here (and restored after), so a run is
    # reproducible from config.seed whatever ran before it in the process.
    where = torch.device(device)
    with torch.random.fork_rng(devices=[where.index or 0] if where.type == "cuda" else []):
        torch.manual_seed(config.seed)
        history = []
        for step in range(config.steps):
            pick = torch.randint(0, len(sequences), (config.batch_size,), generator=gen, device=device).tolist()
            ids, mask = pad_batch([sequences[i] for i in pick], pad, device)
            for group in optim.param_groups:
                group["lr"] = lr_at(step, config)
            out = evo_objective(model, ids, loss_mask=mask, weights=weights_at(step, config),
                                block_length=config.block_length, k_max=config.k_max,
                                sketch_fraction=config.sketch_fraction, generator=gen, fixed_t=config.fixed_t,
                                time_conditioning=config.time_conditioning, time_head=config.time_head)
            optim.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optim.step()
            model.refresh_latent_scale()
            if ema is not None:
                with torch.no_grad():
                    decay = ema_decay_at(step, config.ema_decay)
                    for avg, p in zip(ema, params):
                        avg.lerp_(p.detach(), 1.0 - decay)
            history.append(out.parts)
            if on_step is not None:
                on_step(step, out.parts)
    if ema is not None:
        with torch.no_grad():
            for avg, p in zip(ema, params):
                p.copy_(avg)
        model.refresh_latent_scale()
    model.eval()
    return history
