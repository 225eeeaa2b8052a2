"""Evo's decoding (arXiv 2603.06617 §2.4 "Sampling", Appendix 7.1): sketch the whole answer, refine it.

The paper's sampler, by default over the **whole answer canvas** of ``max_new_tokens`` positions
("at every refinement step, the model attends over the entire latent sequence"; §3.2 argues
against fixing refinement at block boundaries):

1. **Sketch** (one forward): every canvas latent starts as a draw from the latent prior N(0, I) at
   ``t = 1``; the clean-token distribution read out at each position is the "latent prior
   distribution" from which the sketch token is drawn with nucleus sampling (top-p 0.9, temperature
   0.7; temperature 0 takes the argmax, while the prior draw still comes from the request's
   generator, so greedy outputs too are deterministic given the seed). The same forward encodes the
   prompt (clean, causal), so prompt and sketch cost one evaluation.
2. **Progression times** ``t_i`` from the schedule: ``learned`` (the time head on the sketch state),
   ``fixed:<t>``, ``entropy`` (the normalised entropy of the AR pathway's next-token distribution at
   each position, given the prompt and the sketch before it: one causal forward over the sketch,
   "a heuristic based on AR entropy", §3.4), or ``none`` (learned times, the time embedding removed
   from every forward: the "w/o time conditioning" model). The initial latent is the sketch token
   noised to its own level, ``z_i = cos(pi t_i/2)·kappa·e(x_i) + sin(pi t_i/2)·eps_i`` with the prior
   draw ``eps_i`` of step 1.
3. **Refinement**: token i is updated during the first ``K_i = floor(K_max·t_i)`` of ``K_max`` (20)
   deterministic steps, each ``z <- z + dt_i·F(z, t)`` with ``dt_i = t_i / K_i`` (the DDIM step of the
   cosine schedule on the model's clean estimate), landing at ``t = 0`` on its last update. The
   forward of step k attends over the prompt and every canvas latent, and computes only the tokens
   still active (``K_i > k``): finished tokens are attended through the keys/values of their last
   step (the paper's optional truncation "after K_i steps to save computation"; their values are
   stale by the others' later updates, the approximation Fast-dLLM's dual cache makes). Step 0
   carries every token once, so all see each other's noised sketch instead of the prior noise.
   When every ``t_i = 1`` the noised latents *are* the prior draws the sketch forward just read, so
   step 0 reuses the sketch's readout instead of repeating that forward (no wasted evaluation).
4. **Realisation.** Refined tokens are the final latents decoded (linear projection onto the tied
   table, or nearest neighbour). Tokens with ``K_i = 0`` (``t_i`` below ``1/K_max``) are the paper's
   "token-level autoregressive realizations" (Fig. 1; "AR generation corresponds to deterministic
   flows near the origin", §1): they are drawn left to right from the AR pathway's next-token
   distribution (temperature and top-p as the sketch), given the prompt and every canvas token before
   them, refined or realised, in one causal forward per realised token (a run of refined tokens
   before it rides in the same forward). ``fixed:0`` is the case where every token has ``K_i = 0``:
   its times are known before any forward, no scaffold is refined, so it skips the sketch and is pure
   autoregressive decoding through the AR pathway, token by token (Figure 3's "Fixed t_i = 0
   (AR-only)").
5. **Stop.** End-of-sequence and lm-eval's ``until`` are applied to the decoded canvas (the adapter
   cuts the text), as a fixed LLaDA canvas does; the realisation pass stops early once they fire
   (what follows can no longer change the answer).

``block_length = N`` (an explicit, labelled departure: BD3-LM-style blocks) decodes the answer in
blocks of N left to right, each sketched, refined and realised as above with the finished blocks
cached clean; the next block's sketch forward re-encodes the committed tokens exactly.

Cost (recorded per request: ``nfe``, ``active_token_steps``, ``canvas``, ``blocks``): a canvas costs
``1 + max_i K_i`` evaluations (``max_i K_i`` when every ``t_i = 1``, step 8 of the issue), plus one
for the entropy heuristic, plus one per AR-realised token; ``fixed:0`` costs one per token. Inside
the refinement loop there is no host-device synchronisation: fixed schedules know ``K_i`` on the
host, learned ones read it once per canvas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable

import torch

from ..models.evo_schedule import ddim_step, noised
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
    block_length: int = 0  # 0: the whole answer canvas (the paper); N: blocks of N (a labelled option)
    decode: str = "projection"  # projection | nearest

    def __post_init__(self) -> None:
        # Ranges checked when the config is made (a card's values at plan time), not mid-run.
        if not isinstance(self.k_max, int) or self.k_max < 0:
            raise ValueError(f"k_max must be a whole number >= 0, got {self.k_max!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not isinstance(self.block_length, int) or self.block_length < 0:
            raise ValueError(f"block_length must be 0 (the whole answer canvas) or a whole number of tokens, "
                             f"got {self.block_length!r}")


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

    def fixed_steps(self, k_max: int) -> int | None:
        """K_i of every token when the schedule fixes it before any forward, else None."""
        if self.kind != "fixed":
            return None
        return int(math.floor(self.value * k_max + _FLOOR_EPS))


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


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) / log(vocab) per row, in [0, 1]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return (-(logp.exp() * logp).sum(-1) / math.log(logits.shape[-1])).clamp(0.0, 1.0)


def ar_entropy_times(model, cache, sketch, drafted: torch.Tensor, start: int) -> torch.Tensor:
    """The entropy heuristic: t_i = normalised entropy of the AR pathway's next-token distribution at
    canvas position i, given the prompt (cached) and the sketch tokens before i. Position 0 is read
    from the sketch forward's last clean row; the rest from one causal forward over the sketch."""
    if sketch.next_logits is None:
        raise ValueError("the entropy schedule needs at least one prompt token (BOS) before the canvas")
    rows = [sketch.next_logits[None]]
    if drafted.numel() > 1:
        rows.append(model.clean_step(cache, drafted[:-1], start, all_logits=True))
    return normalised_entropy(torch.cat(rows))


def learned_times(model, hidden: torch.Tensor) -> torch.Tensor:
    return model.time_head(hidden).float()


class EvoSampler(Sampler):
    name = "evo"
    Config = EvoSamplerConfig

    @property
    def variants(self) -> dict[str, dict]:
        """Named settings for `evo-eval speed --variant`: the inference-time Figure 3 schedules and
        the block option, from the one list in ``evo_eval.ablation``."""
        from ..ablation import decoding_variants

        keys = {f.name for f in fields(EvoSamplerConfig)}  # the sampler's part of each variant
        return {slug: {k: v for k, v in values.items() if k in keys} for slug, values in decoding_variants().items()}

    def work(self, config: EvoSamplerConfig, prompt_len: int, shape: dict) -> Work:
        schedule = parse_schedule(config.schedule)
        total = int(config.max_new_tokens)
        block = total if int(config.block_length) <= 0 else int(config.block_length)  # 0: one block, as _sample
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
        total = int(config.max_new_tokens)
        block = total if int(config.block_length) <= 0 else int(config.block_length)
        if config.k_max < 0:
            raise ValueError(f"k_max must be >= 0, got {config.k_max}")
        if config.decode not in ("projection", "nearest"):
            raise ValueError(f"unknown latent decoding '{config.decode}'; choose projection or nearest")
        prompt_len = int(prompt_ids.numel())
        if total <= 0:
            return prompt_ids.new_zeros(0)
        if prompt_len == 0:
            raise ValueError("Evo decodes after at least one prompt token (lm-eval passes BOS or the context)")
        limit = model.config.max_position_embeddings
        if prompt_len + total > limit:
            raise ValueError(f"prompt ({prompt_len}) + max_new_tokens ({total}) exceeds Evo's {limit} positions")
        cache = model.new_cache(prompt_len + total, prompt_ids.device)
        counts = _Counts(canvas=block)
        pieces: list[torch.Tensor] = []
        finished = self._finished_fn(pieces, config, stop)
        if schedule.fixed_steps(config.k_max) == 0:
            # Every K_i = 0, known before any forward: pure AR decoding through the AR pathway.
            next_logits = model.clean_step(cache, prompt_ids, 0)
            counts.forward(prompt_len, keys=prompt_len)
            tokens, _ = self._realise(model, cache, prompt_len, prompt_ids.new_zeros(total), [0] * total,
                                      next_logits, config, generator, counts, finished)
            counts.canvas_done(torch.zeros(tokens.numel()), [0] * tokens.numel(), ar=tokens.numel())
            counts.record(stats, schedule, config, model.kv_bytes_per_position())
            return tokens
        clean, clean_start, done = prompt_ids, 0, 0
        while done < total:
            n = min(block, total - done)
            start = prompt_len + done
            tokens, stopped = self._canvas(model, cache, clean, clean_start, start, n, schedule, config,
                                           generator, counts, finished)
            pieces.append(tokens)
            clean, clean_start, done = tokens, start, done + n
            if stopped or (done < total and finished(None)):
                break
        counts.record(stats, schedule, config, model.kv_bytes_per_position())
        return torch.cat(pieces)

    def _canvas(self, model, cache, clean, clean_start: int, start: int, n: int, schedule: Schedule,
                config: EvoSamplerConfig, generator, counts: "_Counts", finished) -> tuple[torch.Tensor, bool]:
        device = clean.device
        eps = torch.randn(n, model.config.hidden_size, device=device, generator=generator)
        ones = torch.ones(n, device=device)
        sketch = model.encode_step(cache, clean, clean_start, eps, ones, start, schedule.time_conditioning)
        counts.forward(int(clean.numel()) + n, keys=start + n)
        if getattr(model, "ar_model", None) is not None:  # two modules: the AR one encoded the clean tokens too
            counts.forward(int(clean.numel()), keys=clean_start + int(clean.numel()))
        drafted = nucleus_sample(sketch.logits, config.temperature, config.top_p, generator)
        fixed = schedule.fixed_steps(config.k_max)
        cache_holds_sketch = True
        if schedule.kind == "fixed":
            t = torch.full((n,), schedule.value, device=device)
        elif schedule.kind == "entropy":
            t = ar_entropy_times(model, cache, sketch, drafted, start)
            if n > 1:
                counts.forward(n - 1, keys=start + n - 1)
                cache_holds_sketch = False  # the causal pass wrote clean keys/values into the canvas
        else:
            t = learned_times(model, sketch.hidden)
        if fixed is not None:  # known on the host: no synchronisation at all
            k_host = [fixed] * n
            k = torch.full((n,), fixed, device=device, dtype=torch.long)
            all_one = schedule.value >= 1.0
        else:
            k = steps_for(t, config.k_max)
            k_host = k.tolist()  # the one read per canvas
            all_one = all(v == config.k_max for v in k_host) and bool((t >= 1.0).all())
        z = noised(model.clean_latents(drafted), eps, t)
        reuse = sketch if (all_one and cache_holds_sketch) else None
        z = self._refine(model, cache, z, t, k, k_host, start, schedule, counts, reuse)
        tokens = model.decode_latents(z, config.decode) if max(k_host) > 0 else drafted
        ar = sum(1 for v in k_host if v == 0)
        stopped = False
        if ar:
            tokens, stopped = self._realise(model, cache, start, tokens, k_host, sketch.next_logits, config,
                                            generator, counts, finished)
        counts.canvas_done(t, k_host, ar=ar, reused=reuse is not None)
        return tokens, stopped

    @staticmethod
    def _refine(model, cache, z, t, k, k_host: list[int], start: int, schedule: Schedule,
                counts: "_Counts", reuse) -> torch.Tensor:
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
            if s == 0 and reuse is not None:
                logits = reuse.logits[order]  # every t_i = 1: this step's inputs are the sketch's
            else:
                logits = model.refine_step(cache, zp[:rows], tp[:rows], slots[:rows], valid,
                                           schedule.time_conditioning).logits
                counts.forward(rows, keys=valid, refine=True)
            z0_hat = model.expected_latent(logits[:live])
            zp[:live] = ddim_step(zp[:live], tp[:live], dt[:live], z0_hat)
            tp[:live] = (tp[:live] - dt[:live]).clamp(min=0.0)
        z = z.clone()
        z[order] = zp
        return z

    @staticmethod
    def _realise(model, cache, start: int, tokens: torch.Tensor, k_host: list[int], next_logits,
                 config: EvoSamplerConfig, generator, counts: "_Counts",
                 finished: Callable[[torch.Tensor | None], bool]) -> tuple[torch.Tensor, bool]:
        """Left to right: K_i = 0 tokens drawn from the AR pathway given everything before them.

        ``next_logits`` is the AR head's prediction for canvas position 0 (the prompt is cached
        clean). Returns the canvas (cut after the token at which ``finished`` fired) and whether it did.
        """
        out = tokens.clone()
        logits = next_logits
        encoded = 0  # canvas tokens before this index have clean keys/values in the cache
        for j, steps in enumerate(k_host):
            if steps > 0:
                continue
            if j > encoded:
                logits = model.clean_step(cache, out[encoded:j], start + encoded)
                counts.forward(j - encoded, keys=start + j)
                encoded = j
            if logits is None:
                raise ValueError("Evo realises the first answer token from the AR pathway, which needs a prompt")
            out[j] = nucleus_sample(logits[None], config.temperature, config.top_p, generator)[0]
            if finished(out[: j + 1]):
                return out[: j + 1], True
        return out, False

    @staticmethod
    def _finished_fn(pieces: list[torch.Tensor], config: EvoSamplerConfig, stop: StopFn | None):
        """``finished(canvas_so_far)``: EOS or a stop string in the committed blocks plus the canvas
        prefix given (None: the committed blocks alone). Checking costs a host read, so without EOS
        and stop there is nothing to check."""
        if config.eos_token_id is None and stop is None:
            return lambda current: False

        def finished(current: torch.Tensor | None) -> bool:
            tokens = torch.cat([*pieces, current]) if current is not None else torch.cat(pieces)
            if config.eos_token_id is not None:
                if current is not None and current.numel() and int(current[-1]) == config.eos_token_id:
                    return True
                if current is None and bool((tokens == config.eos_token_id).any()):
                    return True
            return stop is not None and bool(stop(tokens))

        return finished


class _Counts:
    """Work done by one request, reported through DecodeStats."""

    def __init__(self, canvas: int):
        self.canvas = canvas
        self.nfe = self.rows = self.refine_nfe = self.blocks = self.keys = 0
        self.updates = self.tokens = self.ar_tokens = self.reused = 0
        self._t: list[torch.Tensor] = []

    def forward(self, rows: int, keys: int, refine: bool = False) -> None:
        self.nfe += 1
        self.rows += rows
        self.keys += keys
        self.refine_nfe += int(refine)

    def canvas_done(self, t: torch.Tensor, k_host: list[int], ar: int, reused: bool = False) -> None:
        self.blocks += 1
        self.updates += sum(k_host)
        self.tokens += len(k_host)
        self.ar_tokens += ar
        self.reused += int(reused)
        self._t.append(t.detach().float().reshape(-1))

    def record(self, stats: DecodeStats, schedule: Schedule, config: EvoSamplerConfig, kv_bytes: int) -> None:
        stats.nfe = self.nfe
        stats.active_token_steps = self.rows
        mean_t = float(torch.cat(self._t).mean()) if self.tokens else 0.0  # read once, after decoding
        stats.extra.update(
            schedule=schedule.name, k_max=int(config.k_max), block_length=int(config.block_length),
            canvas=self.canvas, decode=config.decode, blocks=self.blocks, refine_nfe=self.refine_nfe,
            token_updates=self.updates, canvas_tokens=self.tokens, ar_tokens=self.ar_tokens,
            sketch_reused=self.reused,
            mean_t=mean_t, mean_k=self.updates / self.tokens if self.tokens else 0.0,
            kv_bytes_read=self.keys * kv_bytes,  # cached keys/values every forward attends over
        )
