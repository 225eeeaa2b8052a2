"""Evo's training objective (arXiv 2603.06617 §2.3 and Appendix 7.1) as one differentiable function.

The paper's unified bound combines "a latent flow prediction loss, a standard autoregressive negative
log-likelihood term, and a score-matching loss for denoising", Gaussian latent noise with
``a_t = cos²(pi t / 2)``, label smoothing 0.1 on the AR term, and an entropy regulariser that
"encourages diverse t_i usage". Here, from one forward over ``[clean tokens ; noised latents]``
(``EvoForLatentFlow.latent_forward``; latents in blocks that see the clean tokens before their block,
the layout the sampler decodes with, block boundaries at a random offset per batch; the two-stream
layout is BD3-LM's vectorised block training, Arriola et al. 2025):

* ``ar``: next-token cross-entropy of the clean causal stream (the t = 0 limit), label smoothing.
* ``denoise``: cross-entropy of each latent's readout against its own token at a noise level
  ``t ~ U(0, 1)`` per token. With the clean-latent estimate ``kappa·softmax(logits)·E`` this is the
  categorical form of denoising score matching (score interpolation, CDCD, Dieleman et al. 2022).
* ``flow``: the discretised flow term ``-log p(z^(k+1) | z^(k), t)`` with a unit-variance Gaussian
  transition: the squared error of the model's step ``t -> t - 1/K_max`` (``ddim_step`` on its
  estimate) against the same step taken with the true clean latent, per dimension. It reduces to
  ``(sin(pi·dt/2)/sin(pi·t/2))²·|z0_hat - z0|²/d``, which is what is computed.
* ``time``: the time head's progression time on *sketch* blocks (every latent at ``t = 1``, as at
  the start of decoding) is regressed (binary cross-entropy) onto ``1 - p(x_i | sketch)``, the
  probability that the sketch misses the token (detached). The paper trains ``t_i`` "via
  backpropagation" without saying against what; through the noise level alone the gradient only
  pushes every ``t_i`` to 0, so this target is the choice: uncertain tokens earn refinement steps.
* ``entropy``: minus the entropy of the soft histogram of predicted times over the K_max + 1 step
  counts (normalised to [0, 1]); weight 0.01 keeps it a regulariser.

The whole sequence is one canvas by default (``block_length = 0``): the latents after a random split
point attend to the clean tokens before it and to each other with full attention, as the sampler
decodes a whole answer after its prompt; ``block_length = N`` trains BD3-LM-style blocks (the
labelled option). The ablation switches of Figure 3 (``fixed_t``, ``time_conditioning``,
``time_head``) are arguments here; ``training.finetune`` names them per variant.

The embedding table is detached inside the latents and the targets: with a fixed ``kappa`` the
denoising terms could otherwise shrink or inflate the table to make noise trivial; the table still
learns through the clean stream and the tied head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..models.evo_schedule import noised


@dataclass
class ObjectiveWeights:
    ar: float = 1.0
    denoise: float = 1.0
    flow: float = 1.0
    time: float = 1.0
    entropy: float = 0.01
    label_smoothing: float = 0.1  # on the AR term, as Appendix 7.1


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


def block_layout(n: int, block_length: int, offset: int, device) -> torch.Tensor:
    """Block start of every position when blocks begin at ``offset`` (positions before it: block 0)."""
    j = torch.arange(n, device=device)
    starts = offset + torch.div(j - offset, block_length, rounding_mode="floor") * block_length
    return starts.clamp(min=0)


def flow_step_weight(t: torch.Tensor, k_max: int) -> torch.Tensor:
    """(sin(pi·dt/2) / sin(pi·t/2))²: |model step - true step|² = weight·|z0_hat - z0|², dt = 1/K_max.

    Levels below dt are weighted as dt (the sampler never steps from below its own step size).
    """
    dt = 1.0 / k_max
    return (math.sin(math.pi * dt / 2) / torch.sin(t.clamp(min=dt) * (math.pi / 2))) ** 2


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _soft_histogram_entropy(t: torch.Tensor, k_max: int) -> torch.Tensor:
    centres = torch.arange(k_max + 1, device=t.device, dtype=torch.float32) / k_max
    width = 0.5 / k_max
    weights = torch.softmax(-((t[:, None] - centres[None]) ** 2) / (2 * width**2), dim=-1)
    hist = weights.mean(0)
    return -(hist * torch.log(hist.clamp(min=1e-12))).sum() / math.log(k_max + 1)


def evo_objective(model, input_ids: torch.Tensor, *, loss_mask: torch.Tensor | None = None,
                  weights: ObjectiveWeights | None = None, block_length: int = 0, k_max: int = 20,
                  sketch_fraction: float = 0.25, generator: torch.Generator | None = None,
                  fixed_t: float | None = None, time_conditioning: bool = True, time_head: bool = True
                  ) -> ObjectiveOutput:
    """The weighted sum of the five terms for a batch of token ids (batch, n); ``loss_mask`` marks
    the tokens that count (1) and padding or prompt tokens (0).

    Ablation switches (Figure 3): ``fixed_t = 0`` trains the AR term alone ("AR-only": every token is
    an AR realisation); ``fixed_t = t > 0`` draws noise levels from (0, t] only (the levels a
    ``fixed:t`` decode visits, plus the sketch at 1) and trains no time head, ``fixed_t = 1`` without
    the AR term ("Diff-only"); ``time_conditioning = False`` removes the time embedding from the
    forward ("w/o time conditioning"); ``time_head = False`` trains no time head (the entropy
    heuristic replaces it).
    """
    w = weights or ObjectiveWeights()
    ids = input_ids if input_ids.dim() == 2 else input_ids[None]
    b, n = ids.shape
    device = ids.device
    mask = torch.ones(b, n, device=device) if loss_mask is None else loss_mask.to(device).float()
    if fixed_t is not None and not 0.0 <= fixed_t <= 1.0:
        raise ValueError(f"fixed_t must lie in [0, 1], got {fixed_t}")

    if fixed_t == 0.0:  # AR-only: the clean causal stream, nothing else
        logits = model.ar_logits(ids)
        ar = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="none",
                             label_smoothing=w.label_smoothing).view(b, n - 1)
        ar = _masked_mean(ar, mask[:, 1:])
        loss = w.ar * ar
        zero = 0.0
        return ObjectiveOutput(loss, {"ar": float(ar.detach()), "denoise": zero, "flow": zero, "time": zero,
                                      "entropy": zero, "loss": float(loss.detach())})

    # noise levels: per token uniform, whole blocks at t = 1 with probability sketch_fraction
    block = n if block_length <= 0 else block_length
    offset = int(torch.randint(0, block, (1,), generator=generator, device=device))
    starts = block_layout(n, block, offset, device)
    block_id = torch.unique_consecutive(starts, return_inverse=True)[1]
    sketch_block = torch.rand(b, int(block_id.max()) + 1, generator=generator, device=device) < sketch_fraction
    sketch = sketch_block[:, block_id]
    t = torch.rand(b, n, generator=generator, device=device)
    if fixed_t is not None:
        t = t * fixed_t
    t = torch.where(sketch, torch.ones_like(t), t)

    z0 = (model.embedding.detach()[ids].float() * model.kappa)
    eps = torch.randn(b, n, z0.shape[-1], generator=generator, device=device)
    positions = torch.arange(n, device=device)
    ar_logits, lat = model.latent_forward(ids, noised(z0, eps, t), t, positions, starts, time_conditioning)

    ar = F.cross_entropy(ar_logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="none",
                         label_smoothing=w.label_smoothing).view(b, n - 1)
    ar = _masked_mean(ar, mask[:, 1:])
    ce = F.cross_entropy(lat.logits.flatten(0, 1), ids.flatten(), reduction="none").view(b, n)
    denoise = _masked_mean(ce, mask)

    probs = torch.softmax(lat.logits, dim=-1)
    z0_hat = (probs @ model.embedding.detach().float()) * model.kappa
    flow = _masked_mean(flow_step_weight(t, k_max) * (z0_hat - z0).pow(2).mean(-1), mask)

    sketch_mask = mask * sketch.float()
    train_time = time_head and fixed_t is None
    if train_time and bool(sketch_mask.any()):
        t_hat = model.time_head(lat.hidden).clamp(1e-6, 1 - 1e-6)
        miss = 1.0 - probs.gather(-1, ids[..., None]).squeeze(-1).detach()
        time = _masked_mean(F.binary_cross_entropy(t_hat, miss, reduction="none"), sketch_mask)
        entropy = _soft_histogram_entropy(t_hat[sketch_mask.bool()], k_max)
    else:
        time = entropy = torch.zeros((), device=device)

    w_ar = 0.0 if fixed_t == 1.0 else w.ar
    loss = w_ar * ar + w.denoise * denoise + w.flow * flow + w.time * time - w.entropy * entropy
    parts = {name: float(value.detach()) for name, value in
             (("ar", ar), ("denoise", denoise), ("flow", flow), ("time", time), ("entropy", entropy), ("loss", loss))}
    return ObjectiveOutput(loss, parts)
