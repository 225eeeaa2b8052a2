"""AR-Diffusion's sampler: position-dependent denoising of continuous embeddings with step skipping.

Facts from microsoft/ProphetNet ``AR-diffusion`` (``gaussian_diffusion.py``:
``p_skip_xy_sample_loop_progressive``, ``p_skip_sample``; ``gen_utils/generate.py``:
``denoised_fn_round``; ``scripts/gen.sh``), read, not copied:

* Start every answer position from N(0, I) in the embedding space; visit ``gen_timesteps``
  sentence-level indices evenly skipped from ``N + T − 1`` down to 0; at each, token ``i`` jumps
  from its timestep on the line of the current index to its timestep on the line of the next
  (``models.ard.Schedule``): left tokens reach 0 first, which is what makes ARD auto-regressive.
* The jump is the Gaussian posterior between the two noise levels, with the network's clean
  estimate in place of x0: mean ``sqrt(ᾱ_t/ᾱ_s)(1−ᾱ_s)/(1−ᾱ_t)·z + sqrt(ᾱ_s)(1−ᾱ_t/ᾱ_s)/(1−ᾱ_t)·x̂0``,
  variance ``(1−ᾱ_t/ᾱ_s)(1−ᾱ_s)/(1−ᾱ_t)``; no noise is added to a token whose target is 0.
* ``clamp`` (their ``denoised_fn_round``, on in gen.sh): x̂0 is replaced by its nearest embedding
  row (L2) before the jump. ``noise_truncation`` (their ``top_p``, -1 in gen.sh = off): noise
  entries larger than it in magnitude are redrawn.
* Tokens at the end: ``argmax(z·Eᵀ + b)``, the rounding head tied to the embedding table.

Choices for the harness:

* **Length.** ARD decodes a fixed ``tgt_len``; here the canvas is ``gen_length`` when a card sets
  it, else the request's ``max_new_tokens`` (lm-eval's ``max_gen_toks``), and the answer is cut at
  ``max_new_tokens``. With synthetic weights (no EOS) exactly ``max_new_tokens`` tokens come back.
* **One sample.** ARD's evaluation draws 50 samples and picks one by MBR; the matched protocol
  gives every model one answer per request, so one sample is drawn (seeded per request).
* **Ending early, exactly.** A token whose timestep is 0 for every remaining step never changes
  again; once the leading run of such tokens contains EOS, satisfies ``stop`` or reaches the cap,
  decoding ends with exactly the tokens the full run would give.
* **NFE** counts the prompt's one causal pass (its keys/values are then reused, exactly) and one
  pass over the answer's latents per step; ``active_token_steps`` counts the positions computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..work import Work, causal_pairs
from .base import DecodeStats, Sampler, SamplerConfig, StopFn


@dataclass
class ARDSamplerConfig(SamplerConfig):
    gen_length: int = 0  # the answer canvas (ARD's tgt_len); 0 = max_new_tokens
    gen_timesteps: int = 20  # denoising steps over the skipped sentence-level grid (gen.sh)
    clamp: bool = True  # round x̂0 to the nearest embedding before each jump (denoised_fn_round)
    noise_truncation: float = 0.0  # ARD's top_p: redraw noise entries with |ε| above it; 0 = off

    def __post_init__(self) -> None:
        if self.gen_timesteps < 1:
            raise ValueError("gen_timesteps must be at least 1")
        if self.noise_truncation < 0:
            raise ValueError("noise_truncation must be >= 0 (0 turns it off)")

    def length(self) -> int:
        length = int(self.gen_length) if self.gen_length > 0 else int(self.max_new_tokens)
        if length <= 0:
            raise ValueError("nothing to generate: gen_length and max_new_tokens are both 0")
        return length


def gaussian(shape, generator: torch.Generator | None, device, truncation: float = 0.0) -> torch.Tensor:
    """Standard normal noise, entries beyond ``truncation`` in magnitude redrawn (ARD's top_p) when > 0."""
    noise = torch.randn(shape, generator=generator, device=device)
    if truncation > 0:
        while True:
            redraw = noise.abs() > truncation
            if not bool(redraw.any()):
                break
            noise[redraw] = torch.randn(int(redraw.sum()), generator=generator, device=device)
    return noise


def skip_step(z: torch.Tensor, x0: torch.Tensor, a_src: torch.Tensor, a_tgt: torch.Tensor,
              noise: torch.Tensor, to_zero: torch.Tensor) -> torch.Tensor:
    """One jump from each token's source level to its target level (ᾱ per token, shape (..., N))."""
    a_src, a_tgt = a_src[..., None], a_tgt[..., None]
    ratio = a_src / a_tgt
    mean = (ratio.sqrt() * (1 - a_tgt) / (1 - a_src)) * z + (a_tgt.sqrt() * (1 - ratio) / (1 - a_src)) * x0
    std = ((1 - ratio) * (1 - a_tgt) / (1 - a_src)).clamp(min=0).sqrt()
    return mean + (~to_zero[..., None]) * std * noise


class ARDSampler(Sampler):
    name = "ard"
    Config = ARDSamplerConfig

    def work(self, config: ARDSamplerConfig, prompt_len: int, shape: dict) -> Work:
        from ..models.ard import skip_indices

        length = config.length()
        steps = len(skip_indices(length, int(shape.get("diffusion_steps", 2000)), config.gen_timesteps)) - 1
        work = Work().add(1, prompt_len, causal_pairs(prompt_len))
        return work.add(steps, length, length * (prompt_len + length))

    def _sample(self, model, prompt_ids: torch.Tensor, config: ARDSamplerConfig, stats: DecodeStats,
                generator: torch.Generator | None, stop: StopFn | None) -> torch.Tensor:
        length = config.length()
        p = int(prompt_ids.numel())
        limit = model.config.max_position_embeddings
        if p + length > limit:
            raise ValueError(f"prompt ({p}) + answer ({length}) exceeds the model's {limit} positions")
        cap = min(int(config.max_new_tokens), length)
        device = prompt_ids.device
        schedule = model.schedule(length, config.gen_timesteps)
        alphas = model.alphas_cumprod(device).float()
        src, tgt = schedule.src.to(device), schedule.tgt.to(device)

        cache = model.encode_prompt(prompt_ids)
        stats.nfe, stats.active_token_steps = 1, p
        z = gaussian((length, model.config.embed_dim), generator, device, config.noise_truncation)
        watch = config.eos_token_id is not None or stop is not None
        committed, steps_run = 0, 0
        for k in range(schedule.steps):
            x0 = model.denoise(cache, z[None], src[k][None])[0]
            if config.clamp:
                x0 = model.nearest(x0)
            noise = gaussian(z.shape, generator, device, config.noise_truncation)
            z = skip_step(z, x0, alphas[src[k]], alphas[tgt[k]], noise, tgt[k] == 0)
            stats.nfe += 1
            stats.active_token_steps += length
            steps_run = k + 1
            final = schedule.committed(k)
            if final >= cap:
                break
            if watch and final > committed:
                committed = final
                tokens = model.round_logits(z[:final]).argmax(-1)
                if self._finished(tokens, config, stop):
                    stats.extra.update(steps=steps_run, canvas=length, committed=final)
                    return tokens
        stats.extra.update(steps=steps_run, canvas=length, committed=schedule.committed(steps_run - 1))
        return model.round_logits(z[:cap]).argmax(-1)

    @staticmethod
    def _finished(tokens: torch.Tensor, config: ARDSamplerConfig, stop: StopFn | None) -> bool:
        if config.eos_token_id is not None and bool((tokens == config.eos_token_id).any()):
            return True
        return stop is not None and bool(stop(tokens))
