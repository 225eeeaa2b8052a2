"""ARD's conditional likelihood: a Monte-Carlo estimate of the NELBO of the chain its sampler runs.

ARD publishes no likelihood for multiple choice (it is a continuous-embedding diffusion model); the
issue asks every family for one, so this module derives the variational bound of the generative
model ``decoding/ard.py`` samples, in the Diffusion-LM form (embedding diffusion plus a rounding
term; Li et al. 2022, Wu et al. 2023 — ARD trains on exactly these terms' integrands: MSE to the
clean embedding and the rounding cross-entropy).

What it bounds, exactly. For a context ``c`` and an answer ``w`` of ``N`` tokens, the generative model
is the sampler's ``K``-step chain over latents ``x⁽⁰⁾ … x⁽ᴷ⁾`` (``x⁽ᵏ⁾`` holds token ``i`` at timestep
``src[k, i]`` of ``models.ard.Schedule``, ``x⁽ᴷ⁾ = y`` has every token at timestep 0):
``p(x⁽⁰⁾) = N(0, I)``; ``p(x⁽ᵏ⁺¹⁾ | x⁽ᵏ⁾)`` the sampler's Gaussian jump with the network's ``x̂0``
(its nearest embedding row with ``clamped_chain``), *including* its noise on the last jump (the
sampler returns that jump's mean, the mode); and ``p(w | y) = softmax(y·Eᵀ + b)`` per token. With
the forward marginals ``q(x_t | w) = N(sqrt(ᾱ_t)·e(w), (1 − ᾱ_t)·I)`` (``e`` the embedding table),

    log p(w | c, N) ≥ E_q[log p(w | y)] − KL(q(x⁽⁰⁾ | w) ‖ N(0, I)) − Σ_k E_q KL(q(x⁽ᵏ⁺¹⁾ | x⁽ᵏ⁾, w) ‖ p(x⁽ᵏ⁺¹⁾ | x⁽ᵏ⁾))

and each jump's KL, both Gaussians sharing the posterior variance, is
``½·(SNR(tgt) − SNR(src))·‖e(w_i) − x̂0_i‖²`` per token, ``SNR = ᾱ/(1 − ᾱ)`` (zero for a token that
does not move). So this is a lower bound on the log-probability of the answer *given its length*:
ARD decodes a fixed length and models none, so answers of different token counts are compared
without a length term.

Estimator. The prior KL is closed-form; each row draws one step ``k`` (stratified across the
mini-batch: ``k_j = (k₀ + j) mod K``), ``x⁽ᵏ⁾ ~ q``, one forward for ``x̂0``, and weights that step's KL
by ``K``; the rounding term uses a fresh ``y ~ q(y | w)``. The mean over rows is unbiased for the
bound; ``stderr`` is the rows' standard error. A batch that is a multiple of ``K`` visits every step
equally often, which removes the variance of choosing ``k``. The prompt's causal pass is run once
and reused by every row (exact). NFE counts that pass and one pass per row. ``is_greedy`` is False:
ARD's decoding starts from Gaussian noise, so there is no greedy continuation to compare with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..work import Work, causal_pairs
from .base import Scorer, ScorerConfig, ScoreOutput


@dataclass
class ARDScorerConfig(ScorerConfig):
    mc_num: int = 40
    batch: int = 20  # rows per forward; mc_num must be a multiple
    gen_timesteps: int = 20  # the chain whose likelihood is bounded: the sampler's (same setting name)
    clamped_chain: bool = False  # True: bound the chain with clamped x̂0 (as decoded); False: the raw x̂0 ARD trains

    def __post_init__(self) -> None:
        if self.mc_num < 1 or self.batch < 1:
            raise ValueError("mc_num and batch must be at least 1")
        if self.mc_num % self.batch:
            raise ValueError(f"mc_num {self.mc_num} is not a multiple of batch {self.batch}")
        if self.gen_timesteps < 1:
            raise ValueError("gen_timesteps must be at least 1")


def prior_kl(e: torch.Tensor, alpha: float) -> torch.Tensor:
    """KL(N(sqrt(ᾱ)·e_i, (1 − ᾱ)·I) ‖ N(0, I)) summed over tokens, in nats (float64)."""
    dim = e.shape[-1]
    variance = 1.0 - alpha
    mean_sq = alpha * e.double().pow(2).sum(-1)
    return (0.5 * (mean_sq + dim * variance - dim - dim * math.log(variance))).sum()


def step_weights(model, length: int, gen_timesteps: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per step and token: the source timestep, and ½(SNR(target) − SNR(source)) (float64)."""
    schedule = model.schedule(length, gen_timesteps)
    alphas = model.alphas_cumprod(device)
    snr = alphas / (1 - alphas)
    src, tgt = schedule.src.to(device), schedule.tgt.to(device)
    return src, 0.5 * (snr[tgt] - snr[src])


class ARDScorer(Scorer):
    method = "ard_embedding_nelbo"
    Config = ARDScorerConfig

    def work(self, config: ARDScorerConfig, context_len: int, continuation_len: int, shape: dict) -> Work:
        p, m = context_len, continuation_len
        work = Work().add(1, p, causal_pairs(p))
        return work.add(config.mc_num // config.batch, config.batch * m, config.batch * m * (p + m), nfe=config.mc_num)

    def batch_key(self, config: ARDScorerConfig, context_len: int, continuation_len: int):
        # One request at a time (adapters/request_batches.py): every row attends to its own request's
        # cached prompt (encode_prompt), shared across the rows of one request only.
        return None

    def score(self, model, context_ids: torch.Tensor, continuation_ids: torch.Tensor, config: ARDScorerConfig,
              *, generator: torch.Generator | None = None) -> ScoreOutput:
        ctx, cont = context_ids.reshape(-1), continuation_ids.reshape(-1)
        length = cont.numel()
        if length == 0:
            return ScoreOutput(0.0, False, self.method, nfe=0, stderr=0.0)
        device = cont.device
        alphas = model.alphas_cumprod(device)
        e = model.embed_latent(cont)
        src, weights = step_weights(model, length, config.gen_timesteps, device)
        steps = src.shape[0]
        prior = prior_kl(e, float(alphas[-1]))
        cache = model.encode_prompt(ctx)
        rows = []
        for _ in range(config.mc_num // config.batch):
            offset = int(torch.randint(steps, (1,), generator=generator, device=device))
            ks = (offset + torch.arange(config.batch, device=device)) % steps
            a = alphas[src[ks]].float()[..., None]  # (batch, N, 1)
            eps = torch.randn((config.batch, length, e.shape[-1]), generator=generator, device=device)
            x0 = model.denoise(cache, a.sqrt() * e + (1 - a).sqrt() * eps, src[ks])
            if config.clamped_chain:
                x0 = model.nearest(x0)
            diffusion = steps * (weights[ks] * (e - x0).double().pow(2).sum(-1)).sum(-1)
            a0 = float(alphas[0])
            y = math.sqrt(a0) * e + math.sqrt(1 - a0) * torch.randn(eps.shape, generator=generator, device=device)
            logits = model.round_logits(y)
            rounding = F.cross_entropy(logits.flatten(0, 1), cont.repeat(config.batch), reduction="none")
            rows.append(-(prior + diffusion + rounding.view(config.batch, length).sum(-1).double()))
        values = torch.cat(rows)
        stderr = float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else None
        return ScoreOutput(float(values.mean()), False, self.method, nfe=1 + config.mc_num, stderr=stderr)
