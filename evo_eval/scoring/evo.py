"""Evo's log-likelihood: the continuous-time latent-diffusion ELBO, or the exact AR limit (t = 0).

``estimator = "elbo"`` (default). By default the whole continuation is one canvas of latents, as
the sampler decodes it (full self-attention among them, conditioned on the clean context); with
``block_length = N`` (the labelled block option) it is split into blocks of N exactly as the block
sampler generates it, block b conditioned on the clean context and the clean earlier blocks, so
``log p(c | x) = sum_b log p(c_b | x, c_<b)``. Every canvas gets the variational bound of a Gaussian
diffusion on its latents ``z0 = kappa·e(c_b)`` with the cosine schedule (Kingma et al. 2021, VDM,
continuous time; the paper's Eq. 2 with the posterior fixed to the forward noising process):

    -log p(c_b) <= KL(q(z_tmax | z0) || N(0, I))                          (prior, analytic)
                 + 1/2 ∫_{lambda(tmax)}^{lambda(tmin)} e^lambda ||z0 - z0_hat(z_t, t)||² dlambda   (diffusion)
                 + E[-log p(c_b | z_tmin)]                                (reconstruction, the readout)

with ``lambda = log SNR(t) = log cot²(pi t / 2)``. The diffusion integral is estimated by Monte Carlo
over ``mc_num`` noise levels, stratified uniformly in lambda (one level per stratum, the strata
shared by all blocks of a request), the reconstruction term by one draw at ``t_min``; noise comes
from the ``generator`` the adapter seeds per request, so a score is reproducible. Cost: one causal
pass over the context (its keys/values shared by every level), then ``ceil((mc_num + 1)/batch)``
passes of ``batch`` rows over ``2·continuation`` positions.
``is_greedy``: the readout at ``t_min`` puts its argmax on every continuation token.

``estimator = "ar"``: Evo's exact AR limit, every latent at ``t = 0`` so the continuation is read
token by token from the clean causal stream (``scoring.ar``): one forward, no variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models.evo_schedule import noised
from .ar import ar_batch_key, ar_choices, ar_choices_batch, ar_logprob, ar_score_batch
from ..work import Work, causal_pairs
from .base import Scorer, ScoreOutput, ScorerConfig

ESTIMATORS = ("elbo", "ar")


@dataclass
class EvoScorerConfig(ScorerConfig):
    estimator: str = "elbo"  # elbo | ar
    mc_num: int = 32
    batch: int = 8
    block_length: int = 0  # 0: the whole continuation is one canvas (the paper); N: blocks of N
    t_min: float = 0.05  # the sampler's smallest step with K_max = 20
    t_max: float = 0.999
    time_conditioning: bool = True  # False: the "w/o time conditioning" ablation


def log_snr(t: torch.Tensor) -> torch.Tensor:
    return 2.0 * torch.log(1.0 / torch.tan(t * (math.pi / 2)))


def time_of(lam: torch.Tensor) -> torch.Tensor:
    """Inverse of log_snr: t = (2/pi)·atan(exp(-lambda/2))."""
    return torch.atan(torch.exp(-lam / 2)) * (2 / math.pi)


def block_starts(context_len: int, n: int, block_length: int, device) -> torch.Tensor:
    """Each continuation position's block start (absolute position), blocks aligned at the context end;
    ``block_length <= 0``: one canvas, every position starts at the context end."""
    offsets = torch.arange(n, device=device)
    if block_length <= 0:
        return torch.full((n,), context_len, device=device, dtype=torch.long)
    return context_len + (offsets // block_length) * block_length


class EvoScorer(Scorer):
    method = "evo_elbo"
    Config = EvoScorerConfig

    @torch.inference_mode()
    def score(self, model, context_ids, continuation_ids, config: EvoScorerConfig, *,
              generator: torch.Generator | None = None) -> ScoreOutput:
        if config.estimator not in ESTIMATORS:
            raise ValueError(f"unknown Evo likelihood estimator '{config.estimator}'; choose one of {', '.join(ESTIMATORS)}")
        if config.estimator == "ar":
            logprob, greedy = ar_logprob(model, context_ids, continuation_ids)
            return ScoreOutput(logprob, greedy, "evo_ar_limit", nfe=1)
        if continuation_ids.numel() == 0:
            return ScoreOutput(0.0, True, self.method, nfe=0)
        return self._elbo(model, context_ids, continuation_ids, config, generator)

    def work(self, config: EvoScorerConfig, context_len: int, continuation_len: int, shape: dict) -> Work:
        p, m = context_len, continuation_len
        if config.estimator == "ar":
            return Work().add(1, p + m - 1, causal_pairs(p + m - 1))
        work = Work().add(1 if p else 0, p, causal_pairs(p))  # the context's causal pass, shared by every level
        rows = max(1, int(config.batch))
        calls = math.ceil((max(1, int(config.mc_num)) + 1) / rows)
        return work.add(calls, rows * 2 * m, rows * 2 * m * (p + 2 * m))

    def shares_choices(self, config: EvoScorerConfig) -> bool:
        return config.estimator == "ar"

    def score_choices(self, model, context_ids, candidates, config: EvoScorerConfig) -> list[ScoreOutput] | None:
        """The AR limit reads a one-token continuation off the context's last causal position: one
        forward for every candidate. The ELBO noises the continuation's own latents, so it cannot share."""
        return ar_choices(model, context_ids, candidates, "evo_ar_limit") if config.estimator == "ar" else None

    def batch_key(self, config: EvoScorerConfig, context_len: int, continuation_len: int):
        # The AR limit stacks requests of one shape into one causal pass. The ELBO is answered one
        # request at a time: each request's noise levels attend to its own context's cached keys and
        # values (encode_prefix), which the latent forward shares across rows of one request only.
        return ar_batch_key(context_len, continuation_len) if config.estimator == "ar" else None

    @torch.inference_mode()
    def score_batch(self, model, requests, config: EvoScorerConfig, generators) -> list[ScoreOutput]:
        if config.estimator != "ar":
            return super().score_batch(model, requests, config, generators)
        return ar_score_batch(model, requests, "evo_ar_limit")

    @torch.inference_mode()
    def choices_batch(self, model, contexts, candidates, config: EvoScorerConfig) -> list[list[ScoreOutput]]:
        if config.estimator != "ar":
            return super().choices_batch(model, contexts, candidates, config)
        return ar_choices_batch(model, contexts, candidates, "evo_ar_limit")

    def _elbo(self, model, ctx, cont, config: EvoScorerConfig, generator) -> ScoreOutput:
        if not 0.0 < config.t_min < config.t_max < 1.0:
            raise ValueError(f"need 0 < t_min < t_max < 1, got t_min={config.t_min}, t_max={config.t_max}")
        mc, batch = max(1, int(config.mc_num)), max(1, int(config.batch))
        device = cont.device
        n, p = cont.numel(), ctx.numel()
        z0 = model.clean_latents(cont)  # (n, d) float32
        starts = block_starts(p, n, int(config.block_length), device)
        # The context is encoded once; every noise level's rows attend to its cached keys/values.
        prefix = model.encode_prefix(ctx) if p else None
        positions = torch.arange(p, p + n, device=device)

        lam_hi = float(log_snr(torch.tensor(config.t_min)))
        lam_lo = float(log_snr(torch.tensor(config.t_max)))
        u = (torch.arange(mc, dtype=torch.float32) + torch.rand(mc, generator=_cpu(generator))) / mc
        lams = (lam_lo + u * (lam_hi - lam_lo)).to(device)
        # The reconstruction draw rides along as one more row at t_min.
        times = torch.cat([time_of(lams), torch.tensor([config.t_min], device=device)])

        errors, recon_logits = [], None
        for chunk in times.split(batch):
            eps = torch.randn(chunk.numel(), n, z0.shape[-1], device=device, generator=generator)
            t = chunk[:, None].expand(-1, n)
            _, out = model.latent_forward(cont.expand(chunk.numel(), -1), noised(z0, eps, t), t, positions,
                                          starts, config.time_conditioning, prefix=prefix)
            z0_hat = model.expected_latent(out.logits)
            errors.append((z0_hat - z0).pow(2).sum(dim=(-1, -2)))
            recon_logits = out.logits[-1]
        err = torch.cat(errors)[:mc]

        diffusion = 0.5 * (lam_hi - lam_lo) * torch.exp(lams) * err  # one unbiased estimate per level
        logp = torch.log_softmax(recon_logits, dim=-1)
        recon = -logp.gather(-1, cont[:, None]).sum()
        total = diffusion.mean() + recon + _prior_kl(z0, config.t_max)
        stderr = float(diffusion.std() / math.sqrt(mc)) if mc > 1 else None
        greedy = bool((logp.argmax(-1) == cont).all())
        nfe = math.ceil((mc + 1) / batch) + (1 if p else 0)
        return ScoreOutput(-float(total), greedy, self.method, nfe=nfe, stderr=stderr)


def _prior_kl(z0: torch.Tensor, t_max: float) -> torch.Tensor:
    """KL(N(a z0, s² I) || N(0, I)) summed over tokens and dimensions, a = cos, s = sin at t_max."""
    a, s2 = math.cos(math.pi * t_max / 2), math.sin(math.pi * t_max / 2) ** 2
    d = z0.numel()
    return 0.5 * (a * a * z0.pow(2).sum() + d * (s2 - 1.0 - math.log(s2)))


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    # Strata offsets are drawn on the CPU; a device generator seeds a CPU one deterministically.
    if generator is None or generator.device.type == "cpu":
        return generator
    cpu = torch.Generator()
    cpu.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)))
    return cpu
