"""MDLM ancestral sampling with the no-change cache (``ddpm_cache``), conditioned on a prompt.

Facts from kuleshov-group/mdlm ``diffusion.py`` @06dd29f (``_sample``, ``_ddpm_caching_update``,
``_ddpm_update``) and ``configs/config.yaml`` (``sampling.predictor: ddpm_cache``, ``steps: 128``,
``noise_removal: True``), read, not copied:

* time grid ``linspace(1, eps, T + 1)`` with ``eps = 1e-5`` and ``dt = (1 - eps) / T``; from t to
  s = t - dt a masked position draws from ``q(x_s) ∝ p_theta(x_0 | x_t) (t - s)`` with mass s on
  staying [MASK]; unmasked positions are copied (carry-over);
* ``ddpm_cache`` reuses p_theta from the previous step when no token changed, which is exact because
  the published models are not time-conditioned (the authors disable it otherwise);
* ``noise_removal``: one last forward and an argmax over whatever is still masked.

How we draw the same distribution without a host-device synchronisation per step: whether a
masked position is revealed from t to s is Bernoulli((t - s) / t) whatever p_theta says, and the
revealed token is a draw from p_theta alone. Chaining those Bernoullis over the grid, each position
is revealed at a step uniform on {0, ..., T-1} with probability 1 - eps and never (left to the
noise removal) otherwise. So the reveal schedule is drawn on the host up front, from a CPU
generator seeded by the request's generator, and tokens are drawn on the device only at the
positions a step reveals (float64 exponential race, as the authors' Gumbel trick). The network runs
only where a step reveals something and the canvas changed since the last forward (``ddpm_cache``);
``ddpm`` runs it at every step, as the authors' uncached reference does. NFE counts the forwards
actually run.

Choices where the paper and the authors are silent:

* canvas: the prompt followed by exactly ``max_new_tokens`` masks (lm-eval's ``max_gen_toks``), all
  denoised together over T steps; the prompt is never masked. So a speed run with EOS disabled
  returns exactly ``max_new_tokens`` tokens.
* ``temperature`` scales the logits before the draw (1.0 is the authors' sampler); 0 takes the most
  probable token at each revealed position (lm-eval's greedy tasks), the reveal order staying random.
* early stop: a committed token never changes, so once the contiguous committed prefix holds EOS or
  a stop string, the answer the adapter will cut is fixed and sampling ends there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..work import Work
from .base import DecodeStats, Sampler, SamplerConfig, StopFn

PREDICTORS = ("ddpm_cache", "ddpm")
NOISE_EPS = 1e-3  # LogLinearNoise eps: sigma(t) = -log(1 - (1 - eps) t), fed to time-conditioned models


@dataclass
class MDLMSamplingConfig(SamplerConfig):
    steps: int = 128  # T, configs/config.yaml sampling.steps
    predictor: str = "ddpm_cache"  # configs/config.yaml sampling.predictor
    eps: float = 1e-5  # end of the time grid (diffusion.py _sample)
    temperature: float = 1.0

    def __post_init__(self):
        if self.predictor not in PREDICTORS:
            raise ValueError(f"unknown MDLM predictor '{self.predictor}'; choose one of {', '.join(PREDICTORS)}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"eps must lie in [0, 1), got {self.eps}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}")


def host_generator(generator: torch.Generator | None) -> torch.Generator:
    """A CPU generator for schedule decisions, seeded from the request's generator (one draw)."""
    device = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
    host = torch.Generator()
    host.manual_seed(seed)
    return host


def draw_tokens(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of SUBS logits (k, V): argmax at temperature 0, else a float64 draw."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    return sample_probs(probs, generator)


def sample_probs(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # argmax(p / E) with E ~ Exp(1) draws from p (the authors' Gumbel-max), without torch.multinomial's sync.
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / noise).argmax(-1)


def reveal_steps(n: int, steps: int, eps: float, host: torch.Generator) -> torch.Tensor:
    """Per canvas position, the step that reveals it (uniform on 0..T-1), or -1 for never (prob eps)."""
    u = torch.rand(n, generator=host, dtype=torch.float64)
    dt = (1.0 - eps) / steps
    step = torch.div(u, dt, rounding_mode="floor").long().clamp_max(steps - 1)
    return torch.where(u < 1.0 - eps, step, torch.full_like(step, -1))


def sigma_at(t: float, device: torch.device) -> torch.Tensor:
    """Total noise of the log-linear schedule, the time input of a time-conditioned MDLM."""
    return -torch.log1p(torch.tensor([-(1.0 - NOISE_EPS) * t], dtype=torch.float64, device=device)).float()


class MDLMSampler(Sampler):
    name = "mdlm"
    Config = MDLMSamplingConfig
    # `evo-eval speed --variant`: the authors' own default already caches (their README times both).
    variants: ClassVar[dict[str, dict]] = {"cached": {"predictor": "ddpm_cache"}, "uncached": {"predictor": "ddpm"}}

    def work(self, config: MDLMSamplingConfig, prompt_len: int, shape: dict) -> Work:
        n = int(config.max_new_tokens)
        total = prompt_len + n
        if config.predictor == "ddpm" or shape.get("time_conditioning", False):
            return Work().add(config.steps + 1, total, total * total)
        # The no-change cache runs the network once per step that reveals something: the expected
        # number of distinct reveal steps, plus noise removal when a position is never revealed.
        q = (1.0 - config.eps) / config.steps
        calls = config.steps * (1.0 - (1.0 - q) ** n) + (1.0 - (1.0 - config.eps) ** n)
        return Work().add(calls, total, total * total).bound("expected forwards under the no-change cache")

    def _sample(self, model, prompt_ids: torch.Tensor, config: MDLMSamplingConfig, stats: DecodeStats,
                generator: torch.Generator | None, stop: StopFn | None) -> torch.Tensor:
        p, n = int(prompt_ids.numel()), int(config.max_new_tokens)
        if n <= 0:
            return prompt_ids.new_zeros(0)
        limit = int(model.config.model_length)
        if p + n > limit:
            raise ValueError(f"prompt ({p}) + max_new_tokens ({n}) exceeds the model's {limit} positions")
        device, mask = prompt_ids.device, model.mask_token_id
        x = torch.cat((prompt_ids, torch.full((n,), mask, dtype=prompt_ids.dtype, device=device)))
        schedule = reveal_steps(n, config.steps, config.eps, host_generator(generator))
        # Positions in reveal order, uploaded once; each step reads a host-known slice of it.
        order = torch.argsort(torch.where(schedule < 0, config.steps, schedule), stable=True)
        counts = torch.bincount(schedule[schedule >= 0], minlength=config.steps).tolist()
        order_dev = order.to(device)
        uncached = config.predictor == "ddpm" or bool(model.config.time_conditioning)
        dt = (1.0 - config.eps) / config.steps
        watch = config.eos_token_id is not None or stop is not None
        revealed = torch.zeros(n, dtype=torch.bool)
        logits, offset, prefix, reveal_count = None, 0, 0, 0

        def forward(t: float) -> torch.Tensor:
            stats.nfe += 1
            stats.active_token_steps += p + n
            sigma = sigma_at(t, device) if model.config.time_conditioning else None
            return model.denoiser_logits(x[None], start=p, sigma=sigma)[0]

        for step in range(config.steps):
            t = 1.0 - step * dt
            k = counts[step]
            if uncached or (k and logits is None):
                logits = forward(t)
            if not k:
                continue
            idx = order_dev[offset:offset + k]
            x[p + idx] = draw_tokens(logits[idx], config.temperature, generator).to(x.dtype)
            revealed[order[offset:offset + k]] = True
            offset += k
            reveal_count += 1
            logits = None  # the canvas changed: the cached p_theta is stale
            if watch:
                grown = int(revealed.long().cumprod(0).sum())
                if grown > prefix:
                    prefix = grown
                    if self._finished(x[p:p + prefix], config, stop):
                        stats.extra.update(self._extra(config, reveal_count, p + n, stopped=prefix < n))
                        return x[p:p + prefix]
        if offset < n or uncached:
            # Noise removal (diffusion.py _sample); the uncached reference always runs it, as the authors do.
            if uncached or logits is None:
                logits = forward(config.eps)
            rest = order_dev[offset:]
            x[p + rest] = logits[rest].argmax(-1).to(x.dtype)
        stats.extra.update(self._extra(config, reveal_count, p + n, stopped=False))
        return x[p:]

    @staticmethod
    def _finished(committed: torch.Tensor, config: MDLMSamplingConfig, stop: StopFn | None) -> bool:
        if config.eos_token_id is not None and bool((committed == config.eos_token_id).any()):
            return True
        return stop is not None and bool(stop(committed))

    @staticmethod
    def _extra(config: MDLMSamplingConfig, reveal_count: int, canvas: int, stopped: bool) -> dict:
        return {"predictor": config.predictor, "steps": config.steps, "reveal_steps": reveal_count,
                "canvas": canvas, "stopped_early": stopped}
