"""BD3-LM block-diffusion sampling: blocks left to right, earlier blocks' keys/values cached, diffusion inside.

Facts from kuleshov-group/bd3lms ``diffusion.py`` (``_sample``, ``_semi_ar_sampler``,
``_ddpm_caching_update``, ``_nucleus_sample``, ``_sample_categorical``, ``_check_stop_conds``,
``_compute_entropy``), ``models/dit.py`` (the sliding key/value cache), ``configs/config.yaml`` and the
README's sampling commands (``algo.T=5000``, ``sampling.nucleus_p=0.9``, ``sampling.kv_cache=true``,
``sampling.first_hitting`` default true), read, not copied:

* the sequence is generated one block of ``block_size`` at a time, each block starting all [MASK]
  and denoised with up to T steps while earlier blocks stay fixed (the step loop ends when nothing
  is masked);
* ``p_x0 = exp(float64(log p_theta))`` (SUBS log-probabilities), nucleus-filtered in float64: keep the
  sorted tokens whose cumulative mass is at most p, always the most probable one, renormalise;
  ``p_x0`` is kept while a step changed nothing;
* first hitting ("should be true when T >> block_size"): draw every block position from ``p_x0``
  with the Gumbel trick ``argmax(q / (1e-10 - log(u + 1e-10)))`` (``u`` float64 uniforms), then pick
  one masked position uniformly (``randint(0, #masked)`` over the masked positions in order) and
  reveal only it: a block of B masks costs B forwards;
* ancestral (``first_hitting: false``): the time grid is ``timesteps = linspace(1, 0, T)`` (T points,
  so a step of ``1/(T-1)``) while ``dt = 1/T``; step i has ``t = timesteps[i]``, ``s = t - dt``, the
  mask keeps probability ``s/t`` and ``q = p_x0 · (1 - s/t)``, ``q[MASK] = s/t``, one Gumbel draw per
  position;
* with ``kv_cache`` the network sees only the current block against the cached keys/values of the
  finished blocks; when a block is finished, one more forward stores its keys/values;
* sliding context window: the network never sees more than ``context_size`` (1024) positions:
  without the cache it is run on the last ``context_size`` positions (their positions counted from
  the window's start); the cache keeps the last ``context_size`` positions' keys/values and, its
  rotary embedding applied at attention time, gives the same relative positions;
* rejection: once the sequence is longer than 256 tokens, a sample whose last 256 tokens have unigram
  entropy below 4 nats is discarded after any block and sampling restarts; the authors give up
  (``ValueError('Sampling failed.')``) when the 10th try is still rejected.

Token for token on the same uniforms (tests/decoding/test_block.py), with these choices where the
authors' code cannot be followed or the paper is silent:

* the last ancestral grid point is ``t = 0``, where the authors' ``s/t`` divides by zero (``-inf``),
  turning ``q`` into inf/NaN so that its argmax picks the lowest-id token of zero probability; we
  take the limit ``s/t = 0`` there (reveal every remaining position from ``p_x0``). Only positions
  still masked at the last of T steps are affected.
* rejection (``entropy_rejection``, on by default as in the authors' sampler): the entropy is
  taken over the last 256 tokens of prompt plus answer so far; the ``max_tries``-th (10th) try is
  not rejected but finished and flagged (``stats.extra["sampling_failed"]``) where the authors raise,
  so one request cannot end a benchmark run. NFE counts every try.
* with ``kv_cache`` a sequence longer than the model's positions is refused (our cache is indexed by
  absolute position); ``kv_cache: false`` slides past it as the authors' uncached sampler does.
* conditioning: the prompt fills the first positions; the block grid starts at position 0 (as in
  training), so a prompt that ends inside a block leaves its tail as clean tokens of the first
  generated block (carried over like any unmasked token). Whole prompt blocks are stored in the
  cache by one prefill forward.
* length: blocks are generated until ``max_new_tokens`` positions after the prompt are covered; the
  last block is denoised only until every position we return is revealed (later steps cannot change
  them) and the returned ids are exactly the first ``max_new_tokens``.
* no store forward after the last block (nothing reads it); an early stop (EOS or a stop string in
  the committed blocks) is checked once per finished block.
* ``temperature`` divides the logits before the log-softmax (1.0 is the authors' sampler); 0 puts
  all of ``p_x0`` on the most probable token.
* the random draws come from the request's generator, in the authors' order (the block's uniforms,
  then first hitting's position), rather than torch's global generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..work import Work, causal_pairs
from .base import DecodeStats, Sampler, SamplerConfig, StopFn
from .mdlm import sample_categorical


ENTROPY_WINDOW, ENTROPY_FLOOR = 256, 4.0  # _check_stop_conds: last 256 tokens, entropy < 4 rejects


@dataclass
class BD3LMSamplingConfig(SamplerConfig):
    steps: int = 5000  # T per block (README: algo.T=5000); bounds the steps a block may take
    first_hitting: bool = True  # configs/config.yaml sampling.first_hitting
    nucleus_p: float = 0.9  # README: sampling.nucleus_p=0.9
    temperature: float = 1.0
    kv_cache: bool = True  # README: sampling.kv_cache=true
    context_size: int = 1024  # _semi_ar_sampler's sliding window
    entropy_rejection: bool = True  # _check_stop_conds' low-entropy rejection
    max_tries: int = 10  # _sample's retry budget

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if not 0.0 < self.nucleus_p <= 1.0:
            raise ValueError(f"nucleus_p must lie in (0, 1], got {self.nucleus_p}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}")
        if self.context_size < 1 or self.max_tries < 1:
            raise ValueError("context_size and max_tries must be at least 1")


def nucleus(probs: torch.Tensor, p: float) -> torch.Tensor:
    """The authors' rule: keep sorted tokens while the cumulative mass is <= p (and always the top one)."""
    if p >= 1.0:
        return probs
    ordered, order = probs.sort(dim=-1, descending=True)
    keep = ordered.cumsum(-1) <= p
    keep[..., 0] = True
    kept = torch.zeros_like(probs).scatter(-1, order, ordered * keep)
    return kept / kept.sum(-1, keepdim=True)


def block_probs(logits: torch.Tensor, config: BD3LMSamplingConfig) -> torch.Tensor:
    """``p_x0``: SUBS log-probabilities (in the logits' dtype), exponentiated in float64, nucleus-filtered."""
    if config.temperature <= 0:
        return torch.zeros_like(logits, dtype=torch.float64).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    if config.temperature != 1.0:
        logits = logits / config.temperature
    log_p = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    return nucleus(log_p.to(torch.float64).exp(), config.nucleus_p)


def unigram_entropy(tokens: torch.Tensor) -> float:
    """_compute_entropy: the entropy (nats) of the tokens' empirical unigram distribution."""
    _, counts = torch.unique(tokens, return_counts=True)
    return float(torch.special.entr(counts.float() / counts.sum()).sum())


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
        end = -(-(p + n) // size) * size
        if config.kv_cache and end > limit:
            raise ValueError(f"prompt ({p}) + max_new_tokens ({n}), rounded up to blocks of {size}, "
                             f"exceeds the model's {limit} positions; kv_cache=false slides a window past them")
        if not config.kv_cache and min(config.context_size, end) > limit:
            raise ValueError(f"context_size {config.context_size} exceeds the model's {limit} positions")
        if config.first_hitting and config.steps < size:
            raise ValueError(f"first hitting reveals one token per step, so steps ({config.steps}) "
                             f"must be at least the block size ({size})")
        for tries in range(1, config.max_tries + 1):
            # The last try is finished whatever its entropy (and flagged), so the answer has no masks.
            final = tries == config.max_tries
            x, wanted, outcome = self._attempt(model, prompt_ids, end, config, stats, generator, stop, enforce=not final)
            if outcome != "rejected":
                break
        stats.extra.update(tries=tries, sampling_failed=bool(stats.extra.pop("low_entropy", False)))
        return x[p:wanted]

    def _attempt(self, model, prompt_ids, end: int, config: BD3LMSamplingConfig, stats: DecodeStats,
                 generator, stop, enforce: bool) -> tuple[torch.Tensor, int, str]:
        """One try of _semi_ar_sampler: (canvas, end of the answer, finished | stopped | rejected)."""
        p, size = int(prompt_ids.numel()), model.block_size
        wanted = p + int(config.max_new_tokens)
        x = torch.cat((prompt_ids, torch.full((end - p,), model.mask_token_id, dtype=prompt_ids.dtype,
                                              device=prompt_ids.device)))
        caches = model.new_cache(end) if config.kv_cache else None
        first = (p // size) * size
        if caches is not None and first > 0:
            model.block_logits(x[None, :first], start=0, caches=caches, logits=False)
            stats.nfe += 1
            stats.active_token_steps += first
        watch = config.eos_token_id is not None or stop is not None
        blocks, outcome = 0, "finished"
        stats.extra.pop("low_entropy", None)
        for start in range(first, end, size):
            self._denoise_block(model, x, start, max(p, start), wanted, caches, config, stats, generator)
            blocks += 1
            covered = min(start + size, wanted)
            # The sequence so far (a last block denoised only up to the answer's end counts up to it).
            upto = start + size if not bool((x[start:start + size] == model.mask_token_id).any()) else covered
            if (config.entropy_rejection and upto > ENTROPY_WINDOW
                    and unigram_entropy(x[upto - ENTROPY_WINDOW:upto]) < ENTROPY_FLOOR):
                stats.extra["low_entropy"] = True
                if enforce:
                    outcome = "rejected"
                    break
            if watch and self._finished(x[p:covered], config, stop):
                outcome = "stopped" if covered < wanted else "finished"
                wanted = covered
                break
            if caches is not None and start + size < end:
                model.block_logits(x[None, start:start + size], start=start, caches=caches, logits=False)
                stats.nfe += 1
                stats.active_token_steps += size
        stats.extra.update(block_size=size, blocks=blocks, first_hitting=config.first_hitting,
                           kv_cache=config.kv_cache, steps=config.steps, nucleus_p=config.nucleus_p,
                           prefill_tokens=first if caches is not None else 0, stopped_early=outcome == "stopped")
        return x, wanted, outcome

    def _denoise_block(self, model, x: torch.Tensor, start: int, first_masked: int, wanted: int,
                       caches, config: BD3LMSamplingConfig, stats: DecodeStats,
                       generator: torch.Generator | None) -> None:
        """_ddpm_caching_update's steps on the block [start, start + block), until every position
        below ``wanted`` is revealed."""
        size, mask = model.block_size, model.mask_token_id
        needed = slice(first_masked - start, min(wanted, start + size) - start)
        timesteps = torch.linspace(1, 0, config.steps)
        dt = 1 / config.steps
        p_x0 = None
        for i in range(config.steps):
            block = x[start:start + size]
            masked = block == mask
            if not bool(masked[needed].any()):
                break
            if p_x0 is None:
                p_x0 = block_probs(self._block_logits(model, x, start, caches, config, stats), config)
            if config.first_hitting:
                drawn = sample_categorical(p_x0, generator)
                count = int(masked.sum())
                pick = int(torch.randint(0, count, (1,), generator=generator, device=generator.device
                                         if generator is not None else x.device))
                where = masked.nonzero()[pick, 0]
                x[start + where] = drawn[where].to(x.dtype)
                p_x0 = None  # first hitting always reveals a token
                continue
            t = timesteps[i]
            keep = (t - dt) / t if float(t) > 0 else torch.zeros(())  # the limit at t = 0 (see above)
            q = p_x0 * (1 - keep)
            q[:, mask] = keep
            drawn = sample_categorical(q, generator)
            update = masked & (drawn != mask)
            if bool(update.any()):
                x[start:start + size] = torch.where(update, drawn.to(x.dtype), block)
                p_x0 = None

    @staticmethod
    def _block_logits(model, x: torch.Tensor, start: int, caches, config: BD3LMSamplingConfig,
                      stats: DecodeStats) -> torch.Tensor:
        size = model.block_size
        stats.nfe += 1
        if caches is not None:
            stats.active_token_steps += size
            return model.block_logits(x[None, start:start + size], start=start, caches=caches)[0]
        # The reference without cache: the prefix in a sliding window of context_size, block-causally.
        lo = max(start + size - config.context_size, 0)
        stats.active_token_steps += start + size - lo
        return model.block_logits(x[None, lo:start + size], out_start=start - lo)[0]

    @staticmethod
    def _finished(committed: torch.Tensor, config: BD3LMSamplingConfig, stop: StopFn | None) -> bool:
        if config.eos_token_id is not None and bool((committed == config.eos_token_id).any()):
            return True
        return stop is not None and bool(stop(committed))
