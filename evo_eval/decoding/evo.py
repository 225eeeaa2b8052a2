"""Evo's decoding (arXiv 2603.06617 §2.4 "Sampling", Appendix 7.1): sketch, then per-token refinement.

Per block of ``block_length`` answer positions (the finished prefix cached, keys/values exact):

1. **Sketch** (one forward): the block's latents start as draws from the latent prior N(0, I) at
   ``t = 1``; the clean-token distribution read out at each position is the "latent prior
   distribution" from which the sketch token is drawn with nucleus sampling (top-p 0.9, temperature
   0.7 by default; temperature 0 takes the argmax, while the prior draw still comes from the
   request's generator, so greedy outputs too are deterministic given the seed, not independent of
   it). The same forward appends the previous block's committed tokens to the cache (causal,
   clean), so committing and sketching cost one evaluation.
2. **Progression times** ``t_i`` from the schedule: ``learned`` (the time head on the sketch state),
   ``fixed:<t>``, ``entropy`` (the normalised entropy of the sketch distribution, i.e. of the AR-limit
   head's prediction), or ``none`` (learned times, the time embedding removed from every forward).
   The initial latent is the sketch token noised to its own level, ``z_i = cos(pi t_i/2)·kappa·e(x_i)
   + sin(pi t_i/2)·eps_i`` with the prior draw ``eps_i`` of step 1: ``t_i = 0`` keeps the sketch token,
   ``t_i = 1`` keeps nothing of it (pure diffusion).
3. **Refinement**: ``K_max`` (20) deterministic steps; token i is updated during its first
   ``K_i = floor(K_max·t_i)`` steps only, each ``z <- z + dt_i·F(z, t)`` with ``dt_i = t_i / K_i`` (the
   DDIM step of the cosine schedule, Song et al. 2021, on the model's clean estimate), so it lands at
   ``t = 0`` on its last update. The forward of step k runs over the tokens still active
   (``K_i > k``) and nothing else: their keys/values overwrite their cache slots, finished tokens
   are attended through the keys/values of their last step (stale by the others' later updates, the
   approximation Fast-dLLM's dual cache makes for masked diffusion, Wu et al. 2025; the next block
   re-encodes the committed tokens exactly). Step 0 also carries the tokens with ``K_i = 0`` once,
   without updating them, so the others see their sketch instead of the prior noise.
4. **Decode** the final latents (linear projection onto the tied table, or nearest neighbour), commit
   them, stop at end-of-sequence, at ``stop`` (lm-eval's ``until``) or at ``max_new_tokens``.

Cost: a block costs ``1 + max_i K_i`` evaluations over ``n_prev + n`` and then ``|{i: K_i > k}|``
rows, so time falls with the progression times (``fixed:0.5`` costs about half of ``fixed:1``).
Inside the refinement loop there is no host-device synchronisation: the active set is ordered once
per block (fixed schedules know ``K_i`` on the host; learned ones read it once), after which the
active tokens are a leading slice of that order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models.evo_modeling import ddim_step, noised
from ..work import Work
from .base import DecodeStats, Sampler, SamplerConfig, StopFn, top_p_filter

SCHEDULES = ("learned", "entropy", "none", "fixed:<t>")
# Guards floor(K_max·t) against t = 0.7 being stored as 0.69999998 (K would drop from 14 to 13).
_FLOOR_EPS = 1e-5


@dataclass
class EvoSamplerConfig(SamplerConfig):
    k_max: int = 20
    schedule: str = "learned"  # learned | fixed:<t in [0,1]> | entropy | none
    top_p: float = 0.9
    temperature: float = 0.7
    block_length: int = 32
    decode: str = "projection"  # projection | nearest

    def __post_init__(self) -> None:
        # Ranges checked when the config is made (a card's values at plan time), not mid-run.
        if not isinstance(self.k_max, int) or self.k_max < 0:
            raise ValueError(f"k_max must be a whole number >= 0, got {self.k_max!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if self.block_length < 1:
            raise ValueError(f"block_length must be at least 1, got {self.block_length!r}")


@dataclass(frozen=True)
class Schedule:
    kind: str  # learned | fixed | entropy | none
    value: float | None = None

    @property
    def time_conditioning(self) -> bool:
        return self.kind != "none"

    @property
    def name(self) -> str:
        return f"fixed:{self.value:g}" if self.kind == "fixed" else self.kind


def parse_schedule(text: str) -> Schedule:
    text = str(text).strip().lower()
    if text in ("learned", "entropy", "none"):
        return Schedule(text)
    if text.startswith("fixed:"):
        try:
            value = float(text.split(":", 1)[1])
        except ValueError:
            value = -1.0
        if 0.0 <= value <= 1.0:
            return Schedule("fixed", value)
    raise ValueError(f"unknown Evo schedule '{text}'; choose one of {', '.join(SCHEDULES)} (t between 0 and 1)")


def steps_for(t: torch.Tensor, k_max: int) -> torch.Tensor:
    """K_i = floor(K_max·t_i), in [0, K_max]."""
    return torch.floor(t.float() * k_max + _FLOOR_EPS).clamp(0, k_max).long()


def nucleus_sample(logits: torch.Tensor, temperature: float, top_p: float,
                   generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of (n, vocab) logits: argmax at temperature 0, else top-p sampling.

    Draws with ``argmax(p / q)``, ``q ~ Exp(1)`` (pytorch-labs/gpt-fast), which needs no host sync.
    """
    if temperature <= 0:
        return logits.argmax(-1)
    scores = logits.float() / temperature
    scores = top_p_filter(scores, top_p)
    probs = torch.softmax(scores, dim=-1)
    q = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / q).argmax(-1)


def progression_times(schedule: Schedule, model, hidden: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    n = hidden.shape[0]
    if schedule.kind == "fixed":
        return torch.full((n,), schedule.value, device=hidden.device)
    if schedule.kind == "entropy":
        logp = torch.log_softmax(logits.float(), dim=-1)
        return (-(logp.exp() * logp).sum(-1) / math.log(logits.shape[-1])).clamp(0.0, 1.0)
    return model.time_head(hidden).float()


class EvoSampler(Sampler):
    name = "evo"
    Config = EvoSamplerConfig
    # Named decoding variants for `evo-eval speed --variant`: the paper's ablation schedules.
    variants = {"fixed-0": {"schedule": "fixed:0"}, "fixed-0.5": {"schedule": "fixed:0.5"},
                "fixed-1": {"schedule": "fixed:1"}, "entropy": {"schedule": "entropy"}, "none": {"schedule": "none"}}

    def work(self, config: EvoSamplerConfig, prompt_len: int, shape: dict) -> Work:
        schedule = parse_schedule(config.schedule)
        total, block = int(config.max_new_tokens), int(config.block_length)
        # Fixed times give every token K = floor(K_max t) steps; other schedules at most K_max.
        k = int(math.floor(schedule.value * config.k_max + _FLOOR_EPS)) if schedule.kind == "fixed" else int(config.k_max)
        work, clean, done = Work(), prompt_len, 0
        while done < total:
            n = min(block, total - done)
            keys = prompt_len + done + n
            work.add(1, clean + n, (clean + n) * keys)  # sketch (and the previous block's commit)
            work.add(k, n, n * keys)  # refinement over the block's active tokens
            clean, done = n, done + n
        return work if schedule.kind == "fixed" else work.bound(f"upper bound: every token refined K_max = {config.k_max} steps")

    def _sample(self, model, prompt_ids: torch.Tensor, config: EvoSamplerConfig, stats: DecodeStats,
                generator: torch.Generator | None, stop: StopFn | None) -> torch.Tensor:
        schedule = parse_schedule(config.schedule)
        total, block = int(config.max_new_tokens), int(config.block_length)
        if block < 1 or config.k_max < 0:
            raise ValueError(f"block_length must be >= 1 and k_max >= 0, got {block} and {config.k_max}")
        if config.decode not in ("projection", "nearest"):
            raise ValueError(f"unknown latent decoding '{config.decode}'; choose projection or nearest")
        prompt_len = int(prompt_ids.numel())
        if total <= 0:
            return prompt_ids.new_zeros(0)
        limit = model.config.max_position_embeddings
        if prompt_len + total > limit:
            raise ValueError(f"prompt ({prompt_len}) + max_new_tokens ({total}) exceeds Evo's {limit} positions")
        device = prompt_ids.device
        cache = model.new_cache(prompt_len + total, device)
        counts = _Counts()
        pieces: list[torch.Tensor] = []
        clean, clean_start, done = prompt_ids, 0, 0
        while done < total:
            n = min(block, total - done)
            start = prompt_len + done
            tokens = self._block(model, cache, clean, clean_start, start, n, schedule, config, generator, counts)
            pieces.append(tokens)
            clean, clean_start, done = tokens, start, done + n
            if done < total and self._finished(torch.cat(pieces), config, stop):
                break
        counts.record(stats, schedule, config, model.kv_bytes_per_position())
        return torch.cat(pieces)

    def _block(self, model, cache, clean, clean_start: int, start: int, n: int, schedule: Schedule,
               config: EvoSamplerConfig, generator, counts: "_Counts") -> torch.Tensor:
        device = clean.device
        eps = torch.randn(n, model.config.hidden_size, device=device, generator=generator)
        ones = torch.ones(n, device=device)
        sketch = model.encode_step(cache, clean, clean_start, eps, ones, start, schedule.time_conditioning)
        counts.forward(int(clean.numel()) + n, keys=start + n)
        drafted = nucleus_sample(sketch.logits, config.temperature, config.top_p, generator)
        t = progression_times(schedule, model, sketch.hidden, sketch.logits)
        z = noised(model.clean_latents(drafted), eps, t)
        if schedule.kind == "fixed":  # known on the host: no synchronisation at all
            k_host = [int(math.floor(schedule.value * config.k_max + _FLOOR_EPS))] * n
            k = torch.full((n,), k_host[0], device=device, dtype=torch.long)
        else:
            k = steps_for(t, config.k_max)
            k_host = k.tolist()  # the one read per block
        counts.times(t, k_host)
        z = self._refine(model, cache, z, t, k, k_host, start, schedule, counts)
        return model.decode_latents(z, config.decode)

    @staticmethod
    def _refine(model, cache, z, t, k, k_host: list[int], start: int, schedule: Schedule,
                counts: "_Counts") -> torch.Tensor:
        steps = max(k_host)
        if steps == 0:
            return z
        n = len(k_host)
        order_host = sorted(range(n), key=lambda i: -k_host[i])
        # active[s]: how many tokens are still refining at step s (a leading slice of the order).
        active = [sum(1 for v in k_host if v > s) for s in range(steps)]
        order = torch.tensor(order_host, device=z.device)
        zp, tp = z[order], t[order].float()
        dt = (tp / k[order].clamp(min=1)).float()
        slots = order + start
        valid = start + n
        for s in range(steps):
            rows, live = (n if s == 0 else active[s]), active[s]
            out = model.refine_step(cache, zp[:rows], tp[:rows], slots[:rows], valid, schedule.time_conditioning)
            z0_hat = model.expected_latent(out.logits[:live])
            zp[:live] = ddim_step(zp[:live], tp[:live], dt[:live], z0_hat)
            tp[:live] = (tp[:live] - dt[:live]).clamp(min=0.0)
            counts.forward(rows, keys=valid, refine=True)
        z = z.clone()
        z[order] = zp
        return z

    @staticmethod
    def _finished(tokens: torch.Tensor, config: EvoSamplerConfig, stop: StopFn | None) -> bool:
        if config.eos_token_id is not None and bool((tokens == config.eos_token_id).any()):
            return True
        return stop is not None and bool(stop(tokens))


class _Counts:
    """Work done by one request, reported through DecodeStats."""

    def __init__(self):
        self.nfe = self.rows = self.refine_nfe = self.blocks = self.keys = 0
        self.updates = 0
        self.t_sum = 0.0
        self.tokens = 0
        self._t: list[torch.Tensor] = []

    def forward(self, rows: int, keys: int, refine: bool = False) -> None:
        self.nfe += 1
        self.rows += rows
        self.keys += keys
        self.refine_nfe += int(refine)

    def times(self, t: torch.Tensor, k_host: list[int]) -> None:
        self.blocks += 1
        self.updates += sum(k_host)
        self.tokens += len(k_host)
        self._t.append(t.detach().float())

    def record(self, stats: DecodeStats, schedule: Schedule, config: EvoSamplerConfig, kv_bytes: int) -> None:
        stats.nfe = self.nfe
        stats.active_token_steps = self.rows
        mean_t = float(torch.cat(self._t).mean()) if self._t else 0.0  # read once, after decoding
        stats.extra.update(
            schedule=schedule.name, k_max=int(config.k_max), block_length=int(config.block_length),
            decode=config.decode, blocks=self.blocks, refine_nfe=self.refine_nfe, token_updates=self.updates,
            mean_t=mean_t, mean_k=self.updates / self.tokens if self.tokens else 0.0,
            kv_bytes_read=self.keys * kv_bytes,  # cached keys/values every forward attends over
        )
