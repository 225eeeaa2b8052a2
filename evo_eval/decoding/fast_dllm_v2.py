"""Fast-dLLM v2's block-wise parallel decoding, conditioned on a prompt (one request).

Facts from NVlabs/Fast-dLLM ``v2/generation_functions.py`` (``batch_sample``, the function the
authors' lm-eval harness ``v2/eval.py`` calls, here for a batch of one), the checkpoint's
``modeling.py`` (``generate``, ``sample_with_top_p``) and ``v2/eval.py`` / ``v2/eval_script.sh``
(commit 8292f3c), read, not copied:

* the prompt's whole blocks (``p // block_size · block_size`` tokens) are prefilled into the KV cache
  when the prompt is longer than one block; if the prompt ends on a block boundary, the first new
  token is the prefill's last next-token prediction (argmax);
* blocks are then decoded left to right, ``max_new_tokens // block_size + p // block_size`` blocks in
  all counting from block 0: the current block (the prompt's tail, the token after the last finished
  block, then [MASK] to the block's end) is run over the cache, block-causally, and its logits are
  shifted right by one (``models/fast_dllm_v2.py``);
* within a block, sub-blocks of ``small_block_size`` are decoded in order; each step is one forward
  of the whole block (the cache is read, not extended) and ``sample_with_top_p`` over the sub-block:
  at temperature 0 ``probs = softmax(logits)`` in the logits' dtype and the argmax, else a draw from
  ``softmax(logits / T)`` cut to the top-p nucleus (sorted tokens whose cumulative sum exceeds p
  are dropped, shifted by one so the first past p stays) and renormalised, its confidence the
  renormalised probability. Every masked position whose confidence exceeds ``threshold`` is
  revealed, and always the most confident masked one (so a step reveals at least one token);
* a block with no [MASK] left is run once more with the cache extended by it, and its last position's
  argmax (always greedy) is the first token of the next block;
* once a revealed token is the stop token (``<|im_end|>``, 151645) the block is still finished, no
  further block is decoded and the answer ends at the first stop token; ``until`` strings are not
  checked (``eval.py`` ignores them) and the answer returned is the decoded text, special tokens
  skipped;
* the harness defaults (``eval.py``): ``bd_size 32``, ``small_block_size 8``, ``threshold 0.9``,
  ``max_new_tokens 2048`` (its model argument, not the task's ``max_gen_toks``), ``top_p 0.95`` and
  temperature 0 (``batch_sample``'s); ``eval_script.sh`` runs GSM8K, Minerva Math and IFEval with
  ``threshold=1`` (one token per step).

Choices: the draws come from the request's generator rather than torch's global one (the authors'
``torch.multinomial`` of the renormalised probabilities, in the same order). A prompt of exactly one
block is prefilled like any longer one (the authors' ``> block_size`` test leaves it out of both the
cache and the first block's window, so the answer would not see it). Where every token a step reveals
is [MASK] itself (an untrained network; the authors' loop would then repeat the step forever at
temperature 0), those positions take their most probable other token. The authors' harness also
rewrites GSM8K/Minerva prompts ("Please reason step by step..."); prompts here are the protocol's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..work import Work
from .base import DecodeStats, Sampler, SamplerConfig, StopFn


@dataclass
class FastDLLMv2SamplerConfig(SamplerConfig):
    gen_length: int = 2048  # eval.py's max_new_tokens model argument; 0 = the request's max_new_tokens
    block_size: int = 32  # bd_size
    small_block_size: int = 8
    threshold: float = 0.9
    temperature: float = 0.0
    top_p: float = 0.95  # only at temperature > 0
    mask_token_id: int | None = None  # None: the model config's
    # The authors' stop token (<|im_end|>); None: eos_token_id. With eos_token_id None (the speed protocol's
    # synthetic runs turn the end of sequence off so) nothing stops.
    stop_token_id: int | None = None
    cut_at_until: bool = False  # read by the adapter: eval.py returns the answer uncut by `until` strings
    # The speed protocol's fixed length: blocks until gen_length tokens exist, the answer cut to them. Off:
    # the authors' count of gen_length // block_size blocks (from the prompt's own, partly filled one).
    fixed_length: bool = False

    def __post_init__(self) -> None:
        for name in ("mask_token_id", "stop_token_id"):
            if getattr(self, name) is not None:
                setattr(self, name, int(getattr(self, name)))
        if self.block_size < 1 or self.small_block_size < 1 or self.block_size % self.small_block_size:
            raise ValueError(f"small_block_size {self.small_block_size} must divide block_size {self.block_size}")
        if self.temperature < 0 or self.gen_length < 0:
            raise ValueError("temperature and gen_length must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p {self.top_p} must lie in (0, 1]")


def sample_with_top_p(logits: torch.Tensor, config: FastDLLMv2SamplerConfig,
                      generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(token, probabilities) per row of ``logits`` (rows, vocab), as the authors' ``sample_with_top_p``."""
    if config.temperature <= 0:
        probs = torch.softmax(logits, dim=-1)
        return probs.argmax(dim=-1), probs
    probs = torch.softmax(logits / config.temperature, dim=-1)
    ordered, order = torch.sort(probs, descending=True)
    drop = torch.cumsum(ordered, dim=-1) > config.top_p
    drop[..., 1:] = drop[..., :-1].clone()
    drop[..., 0] = False
    probs = probs.masked_fill(torch.zeros_like(drop).scatter_(-1, order, drop), 0)
    probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.multinomial(probs, 1, generator=generator)[:, 0], probs


class FastDLLMv2Sampler(Sampler):
    name = "fast_dllm_v2"
    Config = FastDLLMv2SamplerConfig
    variants: ClassVar[dict[str, dict]] = {}

    @staticmethod
    def _length(config: FastDLLMv2SamplerConfig) -> int:
        return int(config.gen_length) if config.gen_length > 0 else int(config.max_new_tokens)

    def _blocks(self, config: FastDLLMv2SamplerConfig, p: int) -> int:
        """Blocks decoded after the prompt's whole ones: the authors' ``max_new_tokens // block_size``, or
        (``fixed_length``) as many as hold ``gen_length`` new tokens, the last block's next token included."""
        n, bs = self._length(config), config.block_size
        return -(-(n - 1 + p % bs) // bs) if config.fixed_length and n > 0 else n // bs

    def work(self, config: FastDLLMv2SamplerConfig, prompt_len: int, shape: dict) -> Work:
        # At most one step per [MASK] (each reveals at least one) over the block and the cache, and one
        # cache-extending forward per finished block; fewer where tokens pass the threshold or the
        # stop token comes early.
        bs, p = config.block_size, prompt_len
        work = Work()
        if p >= bs:
            work.add(1, p // bs * bs, (p // bs * bs) ** 2)
        length = p + (1 if p >= bs and p % bs == 0 else 0)
        for block in range(p // bs, p // bs + self._blocks(config, p)):
            past, masks = block * bs, (block + 1) * bs - length
            work.add(masks, bs, bs * (past + bs)).add(1, bs, bs * (past + bs))
            length = (block + 1) * bs + 1
        return work.bound("an upper bound: each step reveals every token over the threshold, and the stop token ends early")

    def _sample(self, model, prompt_ids: torch.Tensor, config: FastDLLMv2SamplerConfig, stats: DecodeStats,
                generator: torch.Generator | None, stop: StopFn | None) -> torch.Tensor:
        # `stop` (the until strings) is not consulted: the authors' loop stops at the stop token only.
        bs, sbs, p = config.block_size, config.small_block_size, int(prompt_ids.numel())
        mask = config.mask_token_id if config.mask_token_id is not None else int(model.config.mask_token_id)
        stop_token = -1 if config.eos_token_id is None else (
            config.eos_token_id if config.stop_token_id is None else config.stop_token_id)
        blocks = p // bs + self._blocks(config, p)  # no position limit is checked, as in the authors' loop
        cache = model.new_cache()
        x = prompt_ids.clone()
        if p >= bs:
            logits = model.extend(x[None, :p // bs * bs], cache, bs, keep=True)[0]
            stats.nfe += 1
            stats.active_token_steps += p // bs * bs
            if p % bs == 0:
                x = torch.cat([x, logits[-1:].argmax(dim=-1)])
        finished = False
        for _ in range(p // bs, blocks):
            x = torch.cat([x, x.new_full((bs - x.numel() % bs,), mask)])
            while True:
                if not (x[-bs:] == mask).any():
                    if not finished:  # the finished block enters the cache; its last position gives the next token
                        logits = model.extend(x[None, -bs:], cache, bs, keep=True)[0]
                        stats.nfe += 1
                        stats.active_token_steps += bs
                        x = torch.cat([x, logits[-1:].argmax(dim=-1)])
                    break
                for start in range(0, bs, sbs):
                    while True:
                        masked = x[-bs:] == mask
                        if not masked[start:start + sbs].any():
                            break
                        logits = model.extend(x[None, -bs:], cache, bs, keep=False)[0]
                        stats.nfe += 1
                        stats.active_token_steps += bs
                        logits = torch.cat([logits[:1], logits[:-1]])[start:start + sbs]
                        tokens, probs = sample_with_top_p(logits, config, generator)
                        confidence = torch.gather(probs, -1, tokens[:, None])[:, 0]
                        confidence = torch.where(masked[start:start + sbs], confidence, -torch.inf)
                        reveal = confidence > config.threshold
                        reveal[confidence.argmax()] = True
                        reveal &= masked[start:start + sbs]
                        if (tokens[reveal] == mask).all():  # no progress: the authors' loop would not end
                            tokens = probs.index_fill(-1, probs.new_tensor([mask], dtype=torch.long), -1).argmax(-1)
                        window = x[x.numel() - bs + start:x.numel() - bs + start + sbs]  # a view of x
                        window[reveal] = tokens[reveal]
                        finished |= bool(((tokens == stop_token) & reveal).any())
            if finished:
                break
        answer = x[p:p + self._length(config)] if config.fixed_length else x[p:]
        hits = (answer == stop_token).nonzero()
        stats.extra.update(block_size=bs, small_block_size=sbs, threshold=config.threshold)
        return answer[: int(hits[0])] if hits.numel() else answer
