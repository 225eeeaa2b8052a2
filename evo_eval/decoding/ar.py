"""Autoregressive decoding: KV-cached greedy or top-p/top-k sampling, one token per forward.

Drives ``models.llama.LlamaDecoder``'s static-cache sessions: one prefill forward over the prompt,
then one forward per generated token. On a GPU each step is a CUDA graph replay of the
``torch.compile``d step (mode ``auto``), with the greedy choice made on the device, so the host
never waits on the GPU unless it must look at a token (end-of-sequence or ``stop`` checks). On the
CPU the same steps run eagerly.

Sampling follows pytorch-labs/gpt-fast's ``generate.py`` facts: temperature, top-k and nucleus
filtering, then ``argmax(p / q)`` with ``q ~ Exp(1)``, which draws from ``p`` without the host
synchronisation ``torch.multinomial`` can cause; ``q`` comes from the request's generator, so the
output is deterministic given it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..work import Work, causal_pairs
from .base import DecodeStats, Sampler, SamplerConfig, StopFn, top_p_filter

# Cache capacities are rounded up to this, so requests of similar length share one captured graph.
CAPACITY_STEP = 256


@dataclass
class ARConfig(SamplerConfig):
    do_sample: bool = False
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    # auto: torch.compile + CUDA graph on GPUs, eager on the CPU; or eager | graph | compile | compile-reduce
    # (see models/llama.py DecodeSession).
    mode: str = "auto"

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature <= 0


def resolve_mode(mode: str, device: torch.device) -> str:
    if mode == "auto":
        return "compile" if device.type == "cuda" else "eager"
    return mode


def choose(logits: torch.Tensor, config: ARConfig, generator: torch.Generator | None) -> torch.Tensor:
    """The next token (a device tensor of one id) from next-token logits (vocab,)."""
    if config.greedy:
        return logits.argmax(-1, keepdim=True)
    scores = logits.float() / config.temperature
    if config.top_k > 0:
        kth = torch.topk(scores, min(config.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    scores = top_p_filter(scores, config.top_p)
    probs = torch.softmax(scores, dim=-1)
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / noise).argmax(-1, keepdim=True)


class ARSampler(Sampler):
    name = "ar"
    Config = ARConfig

    def work(self, config: ARConfig, prompt_len: int, shape: dict) -> Work:
        n = int(config.max_new_tokens)
        work = Work().add(1, prompt_len, causal_pairs(prompt_len))
        return work.add(n - 1, 1, prompt_len + n // 2)  # one position per step, the cache on average half full

    def _sample(self, model, prompt_ids: torch.Tensor, config: ARConfig, stats: DecodeStats,
                generator: torch.Generator | None, stop: StopFn | None) -> torch.Tensor:
        if not hasattr(model, "session"):
            raise TypeError(f"the AR sampler drives evo_eval.models.llama.LlamaDecoder, not {type(model).__name__}; "
                            "load the checkpoint with models.llama_checkpoint.load_pretrained")
        n = int(config.max_new_tokens)
        t = int(prompt_ids.numel())
        if n <= 0:
            return prompt_ids.new_zeros(0)
        limit = model.shape.max_seq_len
        if t + n > limit:
            raise ValueError(f"prompt ({t}) + max_new_tokens ({n}) exceeds the model's {limit} positions")
        mode = resolve_mode(config.mode, prompt_ids.device)
        capacity = min(-(-(t + n) // CAPACITY_STEP) * CAPACITY_STEP, limit)
        session = model.session(capacity, mode)
        session.prepare(config.greedy)

        session.commit(choose(session.prefill(prompt_ids), config, generator))
        stats.nfe, stats.active_token_steps = 1, t
        kv_positions_read = 0
        # Looking at a token costs a host synchronisation, so it happens only when something can stop.
        watch = config.eos_token_id is not None or stop is not None
        for _ in range(n - 1):
            if watch and self._finished(session, t, config, stop):
                break
            kv_positions_read += session.host_pos + 1
            if config.greedy:
                session.step_greedy()
            else:
                session.commit(choose(session.step_logits(), config, generator))
            stats.nfe += 1
            stats.active_token_steps += 1
        stats.extra.update(mode=mode, cache_capacity=session.capacity,
                           kv_bytes_read=kv_positions_read * model.kv_bytes_per_position())
        return session.generated(t)

    @staticmethod
    def _finished(session, prompt_len: int, config: ARConfig, stop: StopFn | None) -> bool:
        if config.eos_token_id is not None and session.newest_token() == config.eos_token_id:
            return True
        return stop is not None and bool(stop(session.generated(prompt_len)))
