"""BD3-LM block-diffusion sampling: blocks left to right, earlier blocks' keys/values cached, diffusion inside.

Facts from kuleshov-group/bd3lms ``diffusion.py`` (``_semi_ar_sampler``, ``_ddpm_caching_update``,
``_nucleus_sample``), ``configs/config.yaml`` and the README's sampling commands (``algo.T=5000``,
``sampling.nucleus_p=0.9``, ``sampling.kv_cache=true``, ``sampling.first_hitting`` default true),
read, not copied (mirror: zhihanyang2022/bd3lms):

* the sequence is generated one block of ``block_size`` at a time, each block starting all [MASK]
  and denoised with up to T steps while earlier blocks stay fixed;
* first hitting ("should be true when T >> block_size"): each step unmasks exactly one position,
  chosen uniformly among the block's masked ones, so a block of B masks costs B forwards;
  otherwise ancestral updates from t to s reveal each masked position with probability (t - s) / t
  and p_theta is reused while nothing changed;
* nucleus filtering on p_theta in float64: keep the sorted tokens whose cumulative mass is at most
  p, always the most probable one, renormalise;
* with ``kv_cache`` the network sees only the current block against the cached keys/values of the
  finished blocks; when a block is finished, one more forward stores its keys/values.

How we implement the same process: the reveal schedule (first hitting: a uniformly random order of
the block's masked positions; ancestral: a step uniform on {0, ..., T-1} per position, which is what
the Bernoulli chain over the grid t_i = 1 - i/T, s_i = t_i - 1/T amounts to) is drawn on the host from
a CPU generator seeded by the request's generator, so the inner loop never waits on the device; the
network runs once per step that reveals something. The authors' ancestral grid is
``linspace(1, 0, T)`` with ``dt = 1/T`` (its last point can give s < 0); ours ends exactly at s = 0 so
every block finishes.

Choices where the paper and the authors are silent:

* conditioning: the prompt fills the first positions; the block grid starts at position 0 (as in
  training), so a prompt that ends inside a block leaves its tail as clean tokens of the first
  generated block. Whole prompt blocks are stored in the cache by one prefill forward.
* length: blocks are generated until ``max_new_tokens`` positions after the prompt are covered; the
  last block is denoised only until every position we return is revealed (later reveals cannot
  change them) and the returned ids are exactly the first ``max_new_tokens``.
* no store forward after the last block (nothing reads it); an early stop (EOS or a stop string in
  the committed blocks) is checked once per finished block.
* ``temperature`` scales the logits before the nucleus (1.0 is the authors' sampler); 0 takes the
  most probable token at each revealed position.
* not applied: the authors' rejection of samples whose last 256 tokens have unigram entropy below 4
  (``_check_stop_conds``, up to 10 retries), a quality filter for unconditional generation that
  would make a benchmark answer depend on retries; and the sliding context window past
  ``model_length``, which a prompt plus answer inside the trained context never needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..work import Work, causal_pairs
from .base import DecodeStats, Sampler, SamplerConfig, StopFn
from .mdlm import host_generator, sample_probs


@dataclass
class BD3LMSamplingConfig(SamplerConfig):
    steps: int = 5000  # T per block (README: algo.T=5000); bounds the steps a block may take
    first_hitting: bool = True  # configs/config.yaml sampling.first_hitting
    nucleus_p: float = 0.9  # README: sampling.nucleus_p=0.9
    temperature: float = 1.0
    kv_cache: bool = True  # README: sampling.kv_cache=true

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if not 0.0 < self.nucleus_p <= 1.0:
            raise ValueError(f"nucleus_p must lie in (0, 1], got {self.nucleus_p}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}")


def nucleus(probs: torch.Tensor, p: float) -> torch.Tensor:
    """The authors' rule: keep sorted tokens while the cumulative mass is <= p (and always the top one)."""
    if p >= 1.0:
        return probs
    ordered, order = probs.sort(dim=-1, descending=True)
    keep = ordered.cumsum(-1) <= p
    keep[..., 0] = True
    kept = torch.zeros_like(probs).scatter(-1, order, ordered * keep)
    return kept / kept.sum(-1, keepdim=True)


def draw_block_tokens(logits: torch.Tensor, config: BD3LMSamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    if config.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.double() / config.temperature, dim=-1)
    return sample_probs(nucleus(probs, config.nucleus_p), generator)


class BD3LMSampler(Sampler):
    name = "bd3lm"
    Config = BD3LMSamplingConfig
    # `evo-eval speed --variant`: the authors sample with the cache; "uncached" recomputes the prefix.
    variants: ClassVar[dict[str, dict]] = {"cached": {"kv_cache": True}, "uncached": {"kv_cache": False}}

    def work(self, config: BD3LMSamplingConfig, prompt_len: int, shape: dict) -> Work:
        size, p = int(shape.get("block_size", 1)), prompt_len
        end = -(-(p + int(config.max_new_tokens)) // size) * size
        first = (p // size) * size
        work = Work()
        if config.kv_cache and first > 0:
            work.add(1, first, causal_pairs(first))
        for start in range(first, end, size):
            masked = start + size - max(p, start)
            steps = masked if config.first_hitting else config.steps * (1.0 - (1.0 - 1.0 / config.steps) ** masked)
            if config.kv_cache:
                work.add(steps, size, size * (start + size))
                if start + size < end:
                    work.add(1, size, size * (start + size))  # store the finished block's keys/values
            else:
                work.add(steps, start + size, causal_pairs(start + size))
        return work.bound("upper bound: the last block denoised whole" if config.first_hitting
                          else "expected forwards of the ancestral sampler")

    def _sample(self, model, prompt_ids: torch.Tensor, config: BD3LMSamplingConfig, stats: DecodeStats,
                generator: torch.Generator | None, stop: StopFn | None) -> torch.Tensor:
        p, n = int(prompt_ids.numel()), int(config.max_new_tokens)
        if n <= 0:
            return prompt_ids.new_zeros(0)
        size, limit = model.block_size, int(model.config.model_length)
        wanted = p + n
        end = -(-wanted // size) * size
        if end > limit:
            raise ValueError(f"prompt ({p}) + max_new_tokens ({n}), rounded up to blocks of {size}, "
                             f"exceeds the model's {limit} positions")
        if config.first_hitting and config.steps < size:
            raise ValueError(f"first hitting reveals one token per step, so steps ({config.steps}) "
                             f"must be at least the block size ({size})")
        device = prompt_ids.device
        x = torch.cat((prompt_ids, torch.full((end - p,), model.mask_token_id, dtype=prompt_ids.dtype, device=device)))
        host = host_generator(generator)
        caches = model.new_cache(end) if config.kv_cache else None
        first = (p // size) * size
        if caches is not None and first > 0:
            model.block_logits(x[None, :first], start=0, caches=caches, logits=False)
            stats.nfe += 1
            stats.active_token_steps += first
        watch = config.eos_token_id is not None or stop is not None
        blocks, stopped = 0, False
        for start in range(first, end, size):
            self._denoise_block(model, x, start, max(p, start), wanted, caches, config, stats, host, generator)
            blocks += 1
            covered = min(start + size, wanted)
            if watch and self._finished(x[p:covered], config, stop):
                stopped = covered < wanted
                wanted = covered
                break
            if caches is not None and start + size < end:
                model.block_logits(x[None, start:start + size], start=start, caches=caches, logits=False)
                stats.nfe += 1
                stats.active_token_steps += size
        stats.extra.update(block_size=size, blocks=blocks, first_hitting=config.first_hitting,
                           kv_cache=config.kv_cache, steps=config.steps, nucleus_p=config.nucleus_p,
                           prefill_tokens=first if caches is not None else 0, stopped_early=stopped)
        return x[p:wanted]

    def _denoise_block(self, model, x: torch.Tensor, start: int, first_masked: int, wanted: int,
                       caches, config: BD3LMSamplingConfig, stats: DecodeStats, host: torch.Generator,
                       generator: torch.Generator | None) -> None:
        """Reveal the block [start, start + block) until every position below ``wanted`` is revealed."""
        size = model.block_size
        positions = torch.arange(first_masked, start + size)
        if config.first_hitting:
            step = torch.argsort(torch.randperm(positions.numel(), generator=host))  # rank in a random order
        else:
            step = torch.randint(0, config.steps, (positions.numel(),), generator=host)
        last = int(step[positions < wanted].max())
        for current in torch.unique(step[step <= last]).tolist():
            chosen = positions[step == current] - start
            logits = self._block_logits(model, x, start, caches, stats)
            rows = chosen.to(x.device)
            x[start + rows] = draw_block_tokens(logits[rows], config, generator).to(x.dtype)

    @staticmethod
    def _block_logits(model, x: torch.Tensor, start: int, caches, stats: DecodeStats) -> torch.Tensor:
        size = model.block_size
        stats.nfe += 1
        if caches is not None:
            stats.active_token_steps += size
            return model.block_logits(x[None, start:start + size], start=start, caches=caches)[0]
        # The reference without cache: the whole prefix, block-causally, every step.
        stats.active_token_steps += start + size
        return model.block_logits(x[None, :start + size], out_start=start)[0]

    @staticmethod
    def _finished(committed: torch.Tensor, config: BD3LMSamplingConfig, stop: StopFn | None) -> bool:
        if config.eos_token_id is not None and bool((committed == config.eos_token_id).any()):
            return True
        return stop is not None and bool(stop(committed))
