"""The one sampler interface every decoding algorithm implements.

``sample(model, prompt_ids, config) -> SampleOutput(tokens, stats)``: ``tokens`` are the generated
ids only (never the prompt), cut at the first end-of-sequence; ``stats`` counts the work done, so
that ``run`` can store it per request and ``speed`` can report NFE and tokens per forward. Samplers
never import lm-eval: ``stop`` is a plain callable the adapter builds from lm-eval's ``until``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch

if TYPE_CHECKING:
    from ..work import Work

# Given the ids committed so far (generated part only), say whether generation may stop early.
StopFn = Callable[[torch.Tensor], bool]

# Requests are stacked into one forward (adapters/request_batches.py) only when every GEMM of the
# one-request forward already spans at least this many rows (sequences x positions): BLAS picks its
# kernel, and with it a row's rounding, by the row count below a small threshold (MKL: 16 rows at
# width 4096), so shorter requests are answered alone.
MIN_STACK_ROWS = 32


@dataclass
class DecodeStats:
    nfe: int = 0  # network function evaluations (forward passes), CFG counted twice
    new_tokens: int = 0  # generated tokens returned, after EOS truncation
    active_token_steps: int = 0  # sum over forwards of the positions actually computed
    prompt_tokens: int = 0
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_forward(self) -> float:
        return self.new_tokens / self.nfe if self.nfe else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tokens_per_forward"] = self.tokens_per_forward
        return out


@dataclass
class SampleOutput:
    tokens: torch.Tensor  # 1-D LongTensor of generated ids, prompt excluded
    stats: DecodeStats


class Settings:
    """Mixin for the config dataclasses of samplers and scorers: typed construction from loose dicts."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build from card/lm-eval settings, casting types and rejecting unknown keys.

        lm-eval's ``model_args`` parser turns "0.5" into floats and "true" into bools, and a card
        may write ints where floats are meant; casting here keeps every sampler honest about types.
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known) - {"sampler"})
        if unknown:
            raise ValueError(f"{cls.__name__} has no setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        kwargs = {}
        for name, value in values.items():
            if name == "sampler":
                continue
            default = getattr(cls(), name)
            kwargs[name] = _cast(value, default)
        return cls(**kwargs)


@dataclass
class SamplerConfig(Settings):
    """Settings shared by every sampler; each algorithm subclasses it with its own knobs."""

    max_new_tokens: int = 256
    eos_token_id: int | None = None
    seed: int = 1234


def _cast(value: Any, default: Any) -> Any:
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """``scores`` (..., vocab) with the tokens outside the top-p nucleus at -inf: a token is dropped once
    the probability mass before it already reaches ``top_p``, so the top token always stays (the AR and
    Evo samplers; BD3-LM's authors draw the boundary differently, ``decoding.block.nucleus``)."""
    if top_p >= 1.0:
        return scores
    ordered, order = torch.sort(scores, dim=-1, descending=True)
    probs = torch.softmax(ordered, dim=-1)
    drop = (probs.cumsum(-1) - probs) >= top_p
    return scores.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))


def truncate_at_eos(tokens: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """Generated ids up to (not including) the first end-of-sequence."""
    if eos_token_id is None or tokens.numel() == 0:
        return tokens
    hits = (tokens == eos_token_id).nonzero()
    return tokens[: int(hits[0])] if hits.numel() else tokens


def synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Sampler(ABC):
    """A decoding algorithm. Stateless apart from its config; one instance may serve many requests."""

    name: ClassVar[str]
    Config: ClassVar[type[SamplerConfig]] = SamplerConfig

    @abstractmethod
    def _sample(self, model: torch.nn.Module, prompt_ids: torch.Tensor, config: SamplerConfig,
                stats: DecodeStats, generator: torch.Generator | None, stop: StopFn | None) -> torch.Tensor:
        """Return the generated ids (1-D, prompt excluded), counting work into ``stats``."""

    def work(self, config: SamplerConfig, prompt_len: int, shape: dict[str, Any]) -> "Work":
        """The forwards one request costs at most (``max_new_tokens`` generated, no early stop), for
        ``plan``; ``shape`` is the card's. See evo_eval/work.py."""
        raise NotImplementedError(f"sampler {self.name} states no cost")

    def batch_key(self, config: SamplerConfig, prompt_len: int) -> Any:
        """Requests (of one config) with equal non-None keys may be decoded together by
        ``sample_batch``, each result equal to its own ``sample``; None (the default): alone."""
        return None

    def _sample_batch(self, model: torch.nn.Module, prompts: list[torch.Tensor], config: SamplerConfig,
                      stats: list[DecodeStats], generators: list[torch.Generator | None],
                      stops: list[StopFn | None]) -> list[torch.Tensor]:
        """Several canvases in lockstep, one forward per step for all of them; each request's draws
        from its own generator in ``_sample``'s order, and its decisions (what to commit, when to stop)
        its own. Samplers whose ``batch_key`` is not None implement it."""
        raise NotImplementedError(f"sampler {self.name} decodes one request at a time")

    @torch.inference_mode()
    def sample_batch(self, model: torch.nn.Module, prompts: list[torch.Tensor], config: SamplerConfig, *,
                     generators: list[torch.Generator | None], stops: list[StopFn | None]) -> list[SampleOutput]:
        """``sample`` of each prompt (all of one ``batch_key``) with its generator and stop; the wall time
        of the shared steps is split evenly among the requests."""
        if len(prompts) == 1 or self.batch_key(config, int(prompts[0].numel())) is None:
            return [self.sample(model, p, config, generator=g, stop=s)
                    for p, g, s in zip(prompts, generators, stops, strict=True)]
        prompts = [p.reshape(-1) for p in prompts]
        stats = [DecodeStats(prompt_tokens=int(p.numel())) for p in prompts]
        device = prompts[0].device
        synchronize(device)
        start = time.perf_counter()
        tokens = self._sample_batch(model, prompts, config, stats, generators, stops)
        synchronize(device)
        share = (time.perf_counter() - start) / len(prompts)
        outs = []
        for ids, st in zip(tokens, stats, strict=True):
            st.wall_s = share
            ids = truncate_at_eos(ids.reshape(-1), config.eos_token_id)
            st.new_tokens = int(ids.numel())
            outs.append(SampleOutput(tokens=ids, stats=st))
        return outs

    @torch.inference_mode()
    def sample(self, model: torch.nn.Module, prompt_ids: torch.Tensor, config: SamplerConfig, *,
               generator: torch.Generator | None = None, stop: StopFn | None = None) -> SampleOutput:
        if prompt_ids.dim() == 2:
            if prompt_ids.shape[0] != 1:
                raise ValueError("samplers decode one request at a time (batch 1)")
            prompt_ids = prompt_ids[0]
        stats = DecodeStats(prompt_tokens=int(prompt_ids.numel()))
        device = prompt_ids.device
        synchronize(device)
        start = time.perf_counter()
        tokens = self._sample(model, prompt_ids, config, stats, generator, stop)
        synchronize(device)
        stats.wall_s = time.perf_counter() - start
        tokens = truncate_at_eos(tokens.reshape(-1), config.eos_token_id)
        stats.new_tokens = int(tokens.numel())
        return SampleOutput(tokens=tokens, stats=stats)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen
