"""Evo's cosine noise schedule a_t = cos²(pi t / 2) (arXiv 2603.06617 §2): the noised latent at time t,
and one deterministic refinement step. Shared by the sampler, the likelihood estimator and training."""

from __future__ import annotations

import math

import torch


def signal(t: torch.Tensor) -> torch.Tensor:
    """sqrt(a_t) = cos(pi t / 2)."""
    return torch.cos(t * (math.pi / 2))


def noise(t: torch.Tensor) -> torch.Tensor:
    """sqrt(1 - a_t) = sin(pi t / 2)."""
    return torch.sin(t * (math.pi / 2))


def noised(z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_t for clean latents z0 (..., d), noise eps and per-position times t (...)."""
    t = t.unsqueeze(-1)
    return signal(t) * z0 + noise(t) * eps


def ddim_step(z: torch.Tensor, t: torch.Tensor, dt: torch.Tensor, z0_hat: torch.Tensor) -> torch.Tensor:
    """One deterministic refinement step from time t to t - dt (dt > 0, t > 0) given the clean estimate.

    Equal to ``z + dt·F_theta(z, t)`` with ``F_theta = (z_{t-dt} - z)/dt``: the implied noise is
    kept and the signal moves to the estimate, so at ``t - dt = 0`` the latent is the estimate itself.
    """
    t1 = (t - dt).clamp(min=0.0).unsqueeze(-1)
    t = t.unsqueeze(-1)
    eps_hat = (z - signal(t) * z0_hat) / noise(t)
    return signal(t1) * z0_hat + noise(t1) * eps_hat
