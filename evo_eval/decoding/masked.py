"""LLaDA's masked-diffusion sampler, with the Fast-dLLM caches and parallel unmasking as options.

Facts from ML-GSAI/LLaDA ``generate.py`` (the reference) and NVlabs/Fast-dLLM ``llada/generate.py``
(the fast path), read, not copied:

* The canvas is the prompt followed by ``gen_length`` [MASK] tokens, decoded in
  ``gen_length / block_length`` blocks left to right (semi-autoregressive when ``block_length <
  gen_length``), each in ``steps / num_blocks`` steps.
* Every step predicts all masked tokens of the block (``x0 = argmax(logits + Gumbel)``) and keeps
  the ``k`` most confident, where ``k`` spreads the block's masks as evenly as possible over its
  steps (the first ``n % s`` steps take one more), as the linear schedule implies; the rest stay
  masked (``remasking``). Confidence is the softmax probability of the chosen token
  (``low_confidence``) or uniform noise (``random``). Already decoded tokens never change.
* Gumbel-max in float64: the authors draw ``exp(logits) / (-log u)^T``; its argmax is the argmax
  of ``logits - T·log(-log u)``, which we use (same draw for the same ``u``, no overflow of exp).
  ``T = 0`` is the plain argmax of the logits.
* Logits are in the network's dtype (the published model returns bf16 logits for bf16 weights; a
  CFG combination is computed in that dtype too), and the confidence is ``softmax(logits)`` in that
  dtype (``confidence_precision: logits``, the reference). Fast-dLLM computes it in float64
  (``confidence_precision: float64``, what the ``cached`` variant uses); ``float32`` is offered too.
* Tie order: ``topk`` runs over the whole window the reference passes, the rest ``-inf``: the whole
  sequence (ML-GSAI/LLaDA and Fast-dLLM's first step of a block), the block to the end (Fast-dLLM's
  prefix cache) or the block (its dual cache). ``topk``'s choice among equal confidences depends on
  that length, and in bf16 equal confidences are common.
* Unsupervised classifier-free guidance: a second row with the prompt replaced by [MASK];
  ``logits = un + (cfg + 1)·(cond - un)``; two network evaluations per step.
* Instruct options (EVAL.md, App. B.4): ``logits_eos_inf`` forbids EOS as a prediction;
  ``confidence_eos_eot_inf`` is replicated as the authors' code computes it, a chained assignment
  ``noisy[..., EOS] = logits[..., EoT] = -inf`` after the prediction: the EoT logit is always -inf in
  the confidence softmax; the EOS half writes into the Gumbel-noised array, which at ``T > 0`` is
  no longer read, but at ``T = 0`` *is* the logits tensor (``add_gumbel_noise`` returns it), so
  at ``T = 0`` EOS is -inf in the confidence softmax too (an EOS prediction gets confidence 0 and
  every other confidence is renormalised without EOS's mass).

Fast-dLLM options, all off by default (``variants["cached"]`` turns them on for ``evo-eval speed``):

* ``use_cache``: at each block's start one full forward fills every layer's keys/values; later
  steps of the block feed only the block and everything after it (the *prefix cache*: positions
  before the block are read from the cache).
* ``dual_cache`` (with ``use_cache``): later steps feed only the block; the masked suffix's
  keys/values are read from the cache too. Both caches are approximations (attention is
  bidirectional, so cached states go stale), as in Fast-dLLM.
* ``threshold`` > 0: a step commits every masked token of the block whose confidence reaches the
  threshold, and always at least the most confident one; ``steps`` is then unused and a block ends
  when it has no mask left (Fast-dLLM's ``get_transfer_index`` with a threshold).

Choices where the papers are silent or the harness differs:

* **Canvas and lm-eval's max_gen_toks.** The authors decode a fixed canvas whatever the task's
  generation budget and cut the text only at the stop strings (``eval_llada.py``). That is the
  default here (``answer_length: canvas``): the canvas is ``gen_length`` when the card sets it (0
  means: the request's ``max_new_tokens``, rounded up to whole blocks) and all of it comes back.
  ``answer_length: max_new_tokens`` is the matched-protocol option: lm-eval's ``max_gen_toks``
  (``--gen-len`` in ``speed``) caps the answer, as it caps the AR baselines' (HF ``generate``), MDLM's
  and BD3-LM's (whose canvases are sized from it) and Evo's. ``speed`` sizes the canvas to
  ``--gen-len`` itself, so both options time the same number of tokens there.
* **End of sequence.** The answer is cut at the first EOS, lm-eval's convention (its backends add
  the EOS text to ``until``); ``eval_llada.py`` instead decodes with special tokens, cuts at the
  task's stop strings and then drops special tokens, which keeps any ordinary text generated after
  an EOS. LLaDA pads its answers with EOS, so the two agree unless text follows an EOS.
* **Ending early, exactly.** Blocks are decoded left to right and never revisited, so once a block
  is complete nothing later can change it: decoding stops after the block that reaches the answer's
  length, contains EOS, or satisfies ``stop`` — the returned tokens are exactly those of the full run.
* **Prompt room.** A fixed canvas can need more positions than the ``max_new_tokens`` the
  adapter reserved after the prompt; the prompt is then left-truncated to fit the model's
  positions (lm-eval's own policy for long contexts) and the cut is recorded in the stats.
* **Logits only where needed.** Only the current block's rows go through the output head
  (positions right of it are never chosen, positions left of it are decoded), and the confidence
  softmax runs over those rows only, a chunk of rows at a time (a float64 softmax of 1024 rows over
  LLaDA's 126K vocabulary is 1 GB): the softmax is per row, so the values are those of the
  full-canvas computation.
* **NFE** counts forward passes (a CFG step is two); ``active_token_steps`` counts the positions
  each pass computes (the full canvas, the block plus suffix, or the block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..work import Work
from .base import MIN_STACK_ROWS, DecodeStats, Sampler, SamplerConfig, StopFn

REMASKING = ("low_confidence", "random")
# logits: the network's own dtype (ML-GSAI/LLaDA); float64: Fast-dLLM's get_transfer_index.
CONFIDENCE_PRECISION = {"logits": None, "float32": torch.float32, "float64": torch.float64}
# canvas: all of gen_length comes back (eval_llada.py); max_new_tokens: lm-eval's max_gen_toks caps it.
ANSWER_LENGTH = ("canvas", "max_new_tokens")
SOFTMAX_ROWS = 256  # rows per softmax chunk (memory only: the softmax is per row)


@dataclass
class LLaDASamplerConfig(SamplerConfig):
    gen_length: int = 0  # canvas; 0 = max_new_tokens rounded up to whole blocks
    steps: int = 0  # total steps over the canvas; 0 = one token per step (steps = canvas)
    block_length: int = 0  # 0 = the whole canvas (no semi-autoregressive blocks)
    temperature: float = 0.0
    cfg_scale: float = 0.0
    remasking: str = "low_confidence"
    mask_token_id: int | None = None  # None: the model config's
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    eot_token_id: int | None = None  # needed by confidence_eos_eot_inf (LLaDA: 126348)
    # Fast-dLLM (off = the authors' reference decoding)
    use_cache: bool = False
    dual_cache: bool = False
    threshold: float = 0.0  # 0 = off; else confidence-threshold parallel unmasking
    confidence_precision: str = "logits"  # dtype of the confidence softmax (see CONFIDENCE_PRECISION)
    answer_length: str = "canvas"  # what comes back (see ANSWER_LENGTH)

    def __post_init__(self) -> None:
        # lm-eval's model_args and the speed CLI hand strings to fields whose default is None.
        for name in ("mask_token_id", "eot_token_id"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, int(value))
        if self.remasking not in REMASKING:
            raise ValueError(f"remasking '{self.remasking}' is not one of {', '.join(REMASKING)}")
        if self.confidence_precision not in CONFIDENCE_PRECISION:
            raise ValueError(f"confidence_precision '{self.confidence_precision}' is not one of "
                             f"{', '.join(CONFIDENCE_PRECISION)}")
        if self.answer_length not in ANSWER_LENGTH:
            raise ValueError(f"answer_length '{self.answer_length}' is not one of {', '.join(ANSWER_LENGTH)}")
        if self.temperature < 0 or self.cfg_scale < 0:
            raise ValueError("temperature and cfg_scale must be >= 0")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold} must lie in [0, 1] (0 turns it off)")
        if self.dual_cache and not self.use_cache:
            raise ValueError("dual_cache needs use_cache=true")
        if self.cfg_scale > 0 and self.use_cache:
            raise ValueError("classifier-free guidance is not combined with the Fast-dLLM caches; drop one")
        if self.confidence_eos_eot_inf and self.eot_token_id is None:
            raise ValueError("confidence_eos_eot_inf needs eot_token_id (126348 for LLaDA)")

    def canvas(self) -> "Canvas":
        return Canvas.plan(self)


@dataclass(frozen=True)
class Canvas:
    """The block plan of one request: canvas length, block length, steps per block."""

    length: int
    block: int
    steps_per_block: int  # 0 with threshold decoding

    @property
    def blocks(self) -> int:
        return self.length // self.block

    def schedule(self) -> list[int]:
        """Tokens committed at each step of a block: the block's masks spread evenly over its steps."""
        base, extra = divmod(self.block, self.steps_per_block)
        return [base + (1 if j < extra else 0) for j in range(self.steps_per_block)]

    @classmethod
    def plan(cls, config: LLaDASamplerConfig) -> "Canvas":
        block = int(config.block_length)
        length = int(config.gen_length)
        if length <= 0:
            length = int(config.max_new_tokens)
            if block > 0:
                length = -(-length // block) * block
        if length <= 0:
            raise ValueError("nothing to generate: gen_length and max_new_tokens are both 0")
        block = block if block > 0 else length
        if length % block:
            raise ValueError(f"gen_length {length} is not a multiple of block_length {block}")
        if config.threshold > 0:
            return cls(length, block, 0)  # steps unused: a block ends when it has no mask left
        blocks = length // block
        steps = int(config.steps) if config.steps > 0 else length
        if steps % blocks:
            raise ValueError(f"steps {steps} is not a multiple of the {blocks} blocks "
                             f"(gen_length {length} / block_length {block})")
        per_block = steps // blocks
        if per_block > block:
            raise ValueError(f"{per_block} steps per block exceed its {block} tokens; use steps <= gen_length")
        return cls(length, block, per_block)


def mask_id_for(model: torch.nn.Module, config) -> int:
    if config.mask_token_id is not None:
        return int(config.mask_token_id)
    value = getattr(getattr(model, "config", None), "mask_token_id", None)
    if value is None:
        raise ValueError("no mask token: set mask_token_id in the sampler settings or the model config")
    return int(value)


def gumbel_argmax(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """argmax of logits perturbed by Gumbel noise at ``temperature``, in float64 (0: plain argmax)."""
    if temperature <= 0:
        return logits.argmax(-1)
    u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    return (logits.double() - temperature * torch.log(-torch.log(u))).argmax(-1)


class LLaDASampler(Sampler):
    name = "llada"
    Config = LLaDASamplerConfig
    # What `evo-eval speed --variant cached` runs: Fast-dLLM's dual cache with parallel unmasking,
    # in its published setting (block 32, threshold 0.9).
    variants: ClassVar[dict[str, dict]] = {
        "cached": dict(use_cache=True, dual_cache=True, threshold=0.9, block_length=32, confidence_precision="float64"),
    }

    def work(self, config: LLaDASamplerConfig, prompt_len: int, shape: dict) -> Work:
        canvas = config.canvas()
        p = min(prompt_len, int(shape.get("max_seq_len", prompt_len + canvas.length)) - canvas.length)
        n, rows = p + canvas.length, (2 if config.cfg_scale > 0 else 1)
        # With a threshold a step commits at least one token: at most `block` steps per block.
        steps = canvas.block if config.threshold > 0 else canvas.steps_per_block
        work = Work()
        if not config.use_cache:
            work.add(canvas.blocks * steps, rows * n, rows * n * n, nfe=canvas.blocks * steps * rows)
        else:
            work.add(canvas.blocks, n, n * n)  # each block's first step refreshes the whole cache
            for b in range(canvas.blocks):
                s = p + b * canvas.block
                rows_b = canvas.block if config.dual_cache else n - s
                work.add(steps - 1, rows_b, rows_b * n)
        return work.bound("upper bound: one token per step under the threshold") if config.threshold > 0 else work

    def batch_key(self, config: LLaDASamplerConfig, prompt_len: int):
        # The reference decoding (no cache, fixed steps per block) decodes canvases of one prompt length
        # in lockstep. The Fast-dLLM caches hold one canvas's keys/values, and threshold decoding ends a
        # block after a number of steps that differs per canvas: those decode one request at a time.
        if config.use_cache or config.threshold > 0 or prompt_len + config.canvas().length < MIN_STACK_ROWS:
            return None
        return (prompt_len,)

    def _sample(self, model, prompt_ids: torch.Tensor, config: LLaDASamplerConfig, stats: DecodeStats,
                generator: torch.Generator | None, stop: StopFn | None) -> torch.Tensor:
        return self._sample_batch(model, [prompt_ids], config, [stats], [generator], [stop])[0]

    def _sample_batch(self, model, prompts, config: LLaDASamplerConfig, stats, generators, stops) -> list[torch.Tensor]:
        """Canvases of one prompt length, block by block: a canvas decoding alone runs the block as
        ``_Run.block`` does (every option: caches, threshold); several (the reference decoding only, see
        ``batch_key``) take each step as one forward over them all, then each commits its own tokens from
        its own generator. A canvas finished after a block (its EOS, stop string or length) leaves."""
        canvas = config.canvas()
        mask = mask_id_for(model, config)
        prompts = [self._fit(model, prompt, canvas, st) for prompt, st in zip(prompts, stats)]
        p = int(prompts[0].numel())
        cap = canvas.length if config.answer_length == "canvas" else min(int(config.max_new_tokens), canvas.length)
        runs = []
        for prompt, st, generator in zip(prompts, stats, generators):
            x = torch.full((1, p + canvas.length), mask, dtype=torch.long, device=prompt.device)
            x[0, :p] = prompt
            runs.append(_Run(model, x, p, mask, config, canvas, st, generator))
        done = [0] * len(runs)
        active = list(range(len(runs)))
        for b in range(canvas.blocks):
            if len(active) == 1:
                runs[active[0]].block(b)
            else:
                s = p + b * canvas.block
                e = s + canvas.block
                for k in canvas.schedule():
                    for r, logits in zip(active, _stacked_logits([runs[r] for r in active], s, e)):
                        runs[r].commit(s, e, logits, (0, runs[r].x.shape[1]), k=k)
            for r in active:
                done[r] = (b + 1) * canvas.block
            if b + 1 < canvas.blocks:
                active = [r for r in active
                          if not self._finished(runs[r].x[0, p:p + done[r]], done[r], cap, config, stops[r])]
            if not active:
                break
        for run, st, d in zip(runs, stats, done):
            st.extra.update(canvas=canvas.length, block_length=canvas.block, steps_per_block=canvas.steps_per_block,
                            blocks_decoded=d // canvas.block, cache=run.cache_mode)
        return [run.x[0, p:p + min(d, cap)] for run, d in zip(runs, done)]

    @staticmethod
    def _fit(model, prompt_ids: torch.Tensor, canvas: "Canvas", stats: DecodeStats) -> torch.Tensor:
        """The prompt, left-truncated (as lm-eval truncates contexts) so prompt + canvas fit the model.

        The adapter reserves ``max_new_tokens`` positions after the prompt; a fixed canvas may need
        more, and only the sampler knows its length.
        """
        limit = getattr(getattr(model, "config", None), "max_sequence_length", None)
        if limit is None or prompt_ids.numel() + canvas.length <= limit:
            return prompt_ids
        room = int(limit) - canvas.length
        if room < 1:
            raise ValueError(f"the canvas of {canvas.length} tokens leaves no room for a prompt in the "
                             f"model's {limit} positions; lower gen_length")
        stats.extra["prompt_truncated_from"] = int(prompt_ids.numel())
        stats.prompt_tokens = room
        return prompt_ids[-room:]

    @staticmethod
    def _finished(committed: torch.Tensor, done: int, cap: int, config: LLaDASamplerConfig,
                  stop: StopFn | None) -> bool:
        if done >= cap:
            return True
        if config.eos_token_id is not None and bool((committed == config.eos_token_id).any()):
            return True
        return stop is not None and bool(stop(committed))


class _Run:
    """One request's canvas and the steps that fill it."""

    def __init__(self, model, x: torch.Tensor, prompt_len: int, mask: int, config: LLaDASamplerConfig,
                 canvas: Canvas, stats: DecodeStats, generator: torch.Generator | None):
        self.model, self.x, self.p, self.mask = model, x, prompt_len, mask
        self.config, self.canvas, self.stats, self.generator = config, canvas, stats, generator
        self.cache_mode = ("dual" if config.dual_cache else "prefix") if config.use_cache else "none"
        self.cache = model.new_cache(x.shape[1]) if config.use_cache else None

    # ---- one block ----------------------------------------------------------------------------------

    def block(self, b: int) -> None:
        s = self.p + b * self.canvas.block
        e = s + self.canvas.block
        if self.config.threshold > 0:
            step = 0
            while True:
                self.commit(s, e, *self.logits(s, e, first=step == 0), k=None)
                step += 1
                if not bool((self.x[0, s:e] == self.mask).any()):
                    break
        else:
            for step, k in enumerate(self.canvas.schedule()):
                self.commit(s, e, *self.logits(s, e, first=step == 0), k=k)

    # ---- one network evaluation: the block's logits ------------------------------------------------------

    def logits(self, s: int, e: int, first: bool) -> tuple[torch.Tensor, tuple[int, int]]:
        """Logits (block, vocab) of the block's rows in the network's dtype, from the pass the
        configuration calls for, and the window (canvas positions) that pass covers."""
        model, x, n = self.model, self.x, self.x.shape[1]
        if self.cache is None:
            if self.config.cfg_scale > 0:
                un = x.clone()
                un[0, :self.p] = self.mask
                both = self._native(model.denoise(torch.cat([x, un]), slice(s, e)))
                self._count(2, 2 * n)
                cond, uncond = both[0], both[1]
                return uncond + (self.config.cfg_scale + 1.0) * (cond - uncond), (0, n)
            self._count(1, n)
            return self._native(model.denoise(x, slice(s, e)))[0], (0, n)
        if first:  # refresh every layer's keys/values from the whole canvas
            self._count(1, n)
            return self._native(model.denoise(x, slice(s, e), cache=self.cache, start=0))[0], (0, n)
        end = e if self.config.dual_cache else n
        self._count(1, end - s)
        return self._native(model.denoise(x[:, s:end], slice(0, e - s), cache=self.cache, start=s))[0], (s, end)

    def _native(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits in the dtype the published network returns them in (its weights'): our models
        hand back float32, which for bf16 weights holds the bf16 values exactly, so this is lossless."""
        dtype = getattr(self.model, "dtype", None)
        return logits.to(dtype) if isinstance(dtype, torch.dtype) and dtype.is_floating_point else logits

    def _count(self, forwards: int, positions: int) -> None:
        self.stats.nfe += forwards
        self.stats.active_token_steps += positions

    # ---- choosing what to commit ----------------------------------------------------------------------

    def commit(self, s: int, e: int, logits: torch.Tensor, window: tuple[int, int], k: int | None) -> None:
        config, block = self.config, self.x[0, s:e]
        vocab = logits.shape[-1]
        if config.logits_eos_inf and config.eos_token_id is not None:
            logits[:, config.eos_token_id] = float("-inf")
        x0 = gumbel_argmax(logits, config.temperature, self.generator)
        if config.remasking == "low_confidence":
            suppressed = []
            if config.confidence_eos_eot_inf:
                # The reference's chained assignment: its EOS half lands in the logits only at T = 0.
                if config.temperature <= 0 and config.eos_token_id is not None:
                    suppressed.append(config.eos_token_id)
                suppressed.append(config.eot_token_id)
            # An id outside the vocabulary (a tiny stand-in model) cannot be predicted: nothing to suppress.
            suppressed = [i for i in suppressed if i < vocab]
            dtype = CONFIDENCE_PRECISION[config.confidence_precision] or logits.dtype
            confidence = softmax_at(logits, x0, dtype, suppressed)
        else:
            confidence = torch.rand(x0.shape, dtype=torch.float64, device=x0.device, generator=self.generator)
        masked = block == self.mask
        lo, hi = window
        scores = torch.full((hi - lo,), float("-inf"), dtype=confidence.dtype, device=confidence.device)
        scores[s - lo:e - lo] = confidence.masked_fill(~masked, float("-inf"))
        chosen = torch.zeros_like(masked)
        if k is None:  # threshold: the most confident, then every other masked one confident enough
            index = torch.topk(scores, int(masked.sum())).indices
            keep = torch.cat([index[:1], index[1:][scores[index[1:]] >= config.threshold]])
            chosen[keep - (s - lo)] = True
        elif k > 0:
            chosen[torch.topk(scores, k).indices - (s - lo)] = True
        self.x[0, s:e] = torch.where(chosen, x0, block)


def _stacked_logits(runs: list["_Run"], s: int, e: int) -> list[torch.Tensor]:
    """Each run's block logits, as ``_Run.logits`` (no cache) computes them, from one forward over all
    the canvases (with CFG each canvas's unconditional twin right after it); the head runs per canvas,
    so its GEMM has the shape it has for one canvas alone."""
    first = runs[0]
    model, config, n = first.model, first.config, first.x.shape[1]
    if config.cfg_scale > 0:
        rows = []
        for run in runs:
            un = run.x.clone()
            un[0, :run.p] = run.mask
            rows += [run.x, un]
        both = first._native(model.denoise(torch.cat(rows), slice(s, e), head_split=2))
        out = []
        for i, run in enumerate(runs):
            run._count(2, 2 * n)
            cond, uncond = both[2 * i], both[2 * i + 1]
            out.append(uncond + (config.cfg_scale + 1.0) * (cond - uncond))
        return out
    logits = first._native(model.denoise(torch.cat([run.x for run in runs]), slice(s, e), head_split=1))
    for run in runs:
        run._count(1, n)
    return list(logits)


def softmax_at(logits: torch.Tensor, index: torch.Tensor, dtype: torch.dtype, suppressed: list[int]) -> torch.Tensor:
    """``softmax(logits.to(dtype))[row, index[row]]`` with the ``suppressed`` ids at -inf, a chunk of
    rows at a time (the softmax is per row, so chunking changes no value)."""
    out = []
    for rows, idx in zip(logits.split(SOFTMAX_ROWS), index.split(SOFTMAX_ROWS)):
        rows = rows.to(dtype, copy=bool(suppressed))  # a copy before writing -inf: the caller's logits stay
        if suppressed:
            rows[:, suppressed] = float("-inf")
        out.append(torch.softmax(rows, dim=-1).gather(-1, idx[:, None])[:, 0])
    return torch.cat(out)
