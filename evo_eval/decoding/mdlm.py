"""MDLM ancestral sampling with the no-change cache (``ddpm_cache``), conditioned on a prompt.

Facts from kuleshov-group/mdlm ``diffusion.py`` @06dd29f (``_sample``, ``_ddpm_caching_update``,
``_ddpm_update``, ``_sample_categorical``), ``noise_schedule.py`` (``LogLinearNoise``) and
``configs/config.yaml`` (``sampling.predictor: ddpm_cache``, ``steps: 128``, ``noise_removal: True``),
read, not copied:

* time grid ``timesteps = linspace(1, eps, T + 1)`` (a float32 tensor) with ``eps = 1e-5`` and
  ``dt = (1 - eps) / T``; step i goes from ``t = timesteps[i]`` to ``s = t - dt``;
* ``ddpm_cache``: ``p_x0 = exp(log p_theta(x_0 | x_t))`` (SUBS: [MASK] never predicted),
  ``q = p_x0 · (t - s)`` with ``q[MASK] = s``; ``ddpm`` (uncached): the same with the move chances
  ``1 - exp(-sigma)`` of the log-linear schedule (``sigma(t) = -log1p(-(1 - 1e-3) t)``), and the
  network always run;
* one categorical draw per position over ``q``, by the authors' Gumbel trick
  ``argmax(q / (1e-10 - log(u + 1e-10)))`` with ``u = rand_like(q)``; unmasked positions are
  copied (carry-over); the draw is made for every position every step;
* ``ddpm_cache`` keeps ``p_x0`` while the step changed nothing, exact because the published models
  are not time-conditioned (the authors drop the cache when they are);
* ``noise_removal``: one last forward and an argmax over whatever is still masked.

Precision (``precision``). The authors sample in float32: the network's float32 log-probabilities,
``q`` and the uniforms are float32, and a float32 Gumbel trick is known to make sampling colder
(the truncated noise favours likely tokens; Zheng et al., arXiv:2409.02908). ``float32`` (the
default) is theirs, token for token on the same uniforms; ``float64`` runs the same step in float64
(the draw the noise trick is meant to make), a labelled option.

Choices where the paper and the authors are silent:

* canvas: the prompt followed by exactly ``max_new_tokens`` masks (lm-eval's ``max_gen_toks``), all
  denoised together over T steps; the prompt is never masked, and the uniforms are drawn for the
  answer positions only (the ``(1, max_new_tokens, vocab)`` block the authors' unconditional
  sampler would draw for a sequence of that length). So a speed run with EOS disabled returns
  exactly ``max_new_tokens`` tokens.
* ``temperature`` divides the logits before the log-softmax (1.0 is the authors' sampler, and the
  division is then skipped); 0 puts all of ``p_x0`` on the most probable token, the reveal staying
  random.
* work not done (``ddpm_cache`` on a model without time conditioning): a forward is skipped once
  nothing is masked (the authors' loop keeps running the network on a finished canvas, and its
  noise removal on a canvas without masks changes nothing); ``ddpm`` runs every step and the noise
  removal, as the authors' uncached reference does;
  and sampling ends as soon as the contiguous committed prefix holds EOS or a stop string (a
  committed token never changes, so the answer the adapter will cut is fixed). NFE counts the
  forwards actually run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..work import Work
from .base import DecodeStats, Sampler, SamplerConfig, StopFn

PREDICTORS = ("ddpm_cache", "ddpm")
PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
NOISE_EPS = 1e-3  # LogLinearNoise eps: sigma(t) = -log(1 - (1 - eps) t), fed to time-conditioned models


@dataclass
class MDLMSamplingConfig(SamplerConfig):
    steps: int = 128  # T, configs/config.yaml sampling.steps
    predictor: str = "ddpm_cache"  # configs/config.yaml sampling.predictor
    eps: float = 1e-5  # end of the time grid (diffusion.py _sample)
    temperature: float = 1.0
    precision: str = "float32"  # the authors' sampling precision; float64 is the labelled option

    def __post_init__(self):
        if self.predictor not in PREDICTORS:
            raise ValueError(f"unknown MDLM predictor '{self.predictor}'; choose one of {', '.join(PREDICTORS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision '{self.precision}' is not one of {', '.join(PRECISIONS)}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"eps must lie in [0, 1), got {self.eps}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}")


def sample_categorical(q: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """diffusion.py ``_sample_categorical``: ``argmax(q / (1e-10 - log(u + 1e-10)))``, in q's dtype."""
    u = torch.rand(q.shape, generator=generator, dtype=q.dtype, device=q.device)
    return (q / (1e-10 - (u + 1e-10).log())).argmax(-1)


def x0_probs(logits: torch.Tensor, temperature: float, dtype: torch.dtype) -> torch.Tensor:
    """``p_theta(x_0 | x_t)`` as the authors form it: ``exp(logits - logsumexp(logits))`` in ``dtype``."""
    logits = logits.to(dtype)
    if temperature <= 0:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    if temperature != 1.0:
        logits = logits / temperature
    return (logits - torch.logsumexp(logits, dim=-1, keepdim=True)).exp()


def total_noise(t: torch.Tensor) -> torch.Tensor:
    """LogLinearNoise.total_noise: ``-log1p(-(1 - eps) t)``."""
    return -torch.log1p(-(1 - NOISE_EPS) * t)


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
        dtype = PRECISIONS[config.precision]
        x = torch.cat((prompt_ids, torch.full((n,), mask, dtype=prompt_ids.dtype, device=device)))
        timesteps = torch.linspace(1, config.eps, config.steps + 1, device=device)  # float32, as the authors'
        dt = (1 - config.eps) / config.steps
        time_conditioned = bool(model.config.time_conditioning)
        cached = config.predictor == "ddpm_cache"
        watch = config.eos_token_id is not None or stop is not None
        # Only the cached predictor skips work on a finished canvas; the uncached reference (and a
        # time-conditioned model) runs the network at every step and for the noise removal, as the authors'.
        reuse = cached and not time_conditioned
        p_x0, logits, prefix, changes = None, None, 0, 0

        def forward(sigma: torch.Tensor | None) -> torch.Tensor:
            stats.nfe += 1
            stats.active_token_steps += p + n
            return model.denoiser_logits(x[None], start=p, sigma=sigma if time_conditioned else None)[0]

        for step in range(config.steps):
            answer = x[p:]
            masked = answer == mask
            if reuse and not bool(masked.any()):
                break  # a finished canvas: every later draw is copied over
            t = timesteps[step]
            if cached:
                move_t, move_s = t, t - dt
                if p_x0 is None:
                    logits = forward(total_noise(t)[None])
                    p_x0 = x0_probs(logits, config.temperature, dtype)
            else:
                sigma_t, sigma_s = total_noise(t), total_noise(t - dt)
                move_t, move_s = 1 - torch.exp(-sigma_t), 1 - torch.exp(-sigma_s)
                logits = forward(sigma_t[None])
                p_x0 = x0_probs(logits, config.temperature, dtype)
            q = p_x0 * (move_t - move_s).to(dtype)
            q[:, mask] = move_s.to(dtype)
            drawn = sample_categorical(q, generator)
            if cached and time_conditioned:
                p_x0 = None  # the authors drop the cache when time enters the network
            update = masked & (drawn != mask)
            if not bool(update.any()):
                continue
            x[p:] = torch.where(update, drawn.to(x.dtype), answer)
            changes += 1
            p_x0 = None  # the canvas changed: the cached p_theta is stale
            if watch:
                grown = int((x[p:] != mask).long().cumprod(0).sum())
                if grown > prefix:
                    prefix = grown
                    if self._finished(x[p:p + prefix], config, stop):
                        stats.extra.update(self._extra(config, changes, p + n, stopped=prefix < n))
                        return x[p:p + prefix]
        masked = x[p:] == mask
        if bool(masked.any()) or not reuse:
            # Noise removal (diffusion.py _sample): a fresh forward unless the cached p_theta is current.
            if p_x0 is None or not reuse:
                logits = forward(total_noise(timesteps[-1])[None])
            # argmax of the log-probabilities (x0_probs' exp could tie two of them)
            final = logits.to(dtype) - torch.logsumexp(logits.to(dtype), dim=-1, keepdim=True)
            x[p:] = torch.where(masked, final.argmax(-1).to(x.dtype), x[p:])
        stats.extra.update(self._extra(config, changes, p + n, stopped=False))
        return x[p:]

    @staticmethod
    def _finished(committed: torch.Tensor, config: MDLMSamplingConfig, stop: StopFn | None) -> bool:
        if config.eos_token_id is not None and bool((committed == config.eos_token_id).any()):
            return True
        return stop is not None and bool(stop(committed))

    @staticmethod
    def _extra(config: MDLMSamplingConfig, changes: int, canvas: int, stopped: bool) -> dict:
        return {"predictor": config.predictor, "steps": config.steps, "precision": config.precision,
                "reveal_steps": changes, "canvas": canvas, "stopped_early": stopped}
