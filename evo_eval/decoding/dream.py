"""Dream-v0's masked-diffusion sampler (``diffusion_generate``), conditioned on a prompt.

Facts from Dream's ``generation_utils.py`` (``DreamGenerationMixin._sample``, ``sample_tokens``,
``top_p_logits``, ``top_k_logits``; as vendored in NVlabs/Fast-dLLM ``dream/model/``), its
``DreamGenerationConfig`` defaults and DreamLM/Dream ``eval/eval.py`` / ``eval_dream_gen.sh``, read,
not copied:

* the canvas is the prompt followed by ``max_new_tokens`` [MASK] (``max_length`` = prompt +
  ``max_new_tokens``), denoised over ``steps`` steps on the grid ``timesteps = linspace(1, eps,
  steps + 1)`` (``eps = 1e-3``), the network run on the whole canvas every step, its logits shifted
  right by one (``models/dream.py``);
* ``sample_tokens``: logits ``/ temperature`` (if > 0), then top-p (keep the sorted tokens up to and
  including the first whose cumulative probability exceeds p) and top-k (both to ``finfo.min``),
  ``probs = softmax`` in the logits' dtype; at temperature > 0 the token is a categorical draw from
  the (renormalised) ``probs`` and its confidence ``probs[token]``, else ``probs.max``;
  ``topk_margin``'s confidence is top-1 minus top-2 probability, ``entropy``'s is
  ``Σ p log(p + 1e-10)`` (the negative entropy);
* ``alg: origin``: each masked position is revealed with probability ``1 - s/t`` (all of them at the
  last step), drawn by ``sample_tokens``; other algorithms reveal ``int(#masked · (1 - s/t))``
  positions (all at the last step): the ``topk`` confidences over the whole canvas, or, with
  ``alg_temp > 0``, a draw without replacement from ``softmax(confidence / alg_temp)``;
* the eval harness's defaults (``eval.py``): ``alg: entropy``, ``alg_temp: 0``, ``temperature: 0``;
  ``eval_dream_gen.sh`` sets ``diffusion_steps = max_new_tokens`` (one token per step) and
  ``top_p: 0.95``; the answer is cut at the first EOS, then at the stop strings.

Choices: the random draws (``torch.rand``, the categorical draw, ``torch.multinomial``) come from the
request's generator in the authors' order rather than torch's global one (``Categorical.sample`` is
``torch.multinomial`` of the renormalised probabilities). The authors' harness sizes the canvas by
its ``max_new_tokens`` model argument, not by the task's ``max_gen_toks``: a card sets it as
``gen_length`` (0: the request's ``max_new_tokens``), and the whole canvas comes back, cut at EOS and
the stop strings; ``steps: 0`` means the canvas length. The canvas is decoded whole (positions are
revealed anywhere in it, so no part is final early).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..work import Work
from .base import MIN_STACK_ROWS, DecodeStats, Sampler, SamplerConfig, StopFn

ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy")


@dataclass
class DreamSamplerConfig(SamplerConfig):
    gen_length: int = 0  # the canvas (the harness's max_new_tokens model arg); 0 = the request's max_new_tokens
    steps: int = 0  # 0 = the canvas length (eval_dream_gen.sh: diffusion_steps = max_new_tokens)
    eps: float = 1e-3
    alg: str = "entropy"  # eval.py's default (DreamGenerationConfig's is origin)
    alg_temp: float = 0.0
    temperature: float = 0.0
    top_p: float = 1.0  # 1 = off (None in the authors' config)
    top_k: int = 0  # 0 = off (None in the authors' config)
    mask_token_id: int | None = None  # None: the model config's

    def __post_init__(self) -> None:
        if self.mask_token_id is not None:
            self.mask_token_id = int(self.mask_token_id)
        if self.alg not in ALGORITHMS:
            raise ValueError(f"alg '{self.alg}' is not one of {', '.join(ALGORITHMS)}")
        if self.temperature < 0 or self.alg_temp < 0 or self.top_k < 0:
            raise ValueError("temperature, alg_temp and top_k must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p {self.top_p} must lie in (0, 1]")
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"eps {self.eps} must lie in [0, 1)")


def top_p_logits(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    ordered, order = torch.sort(logits, descending=True)
    remove = torch.cumsum(F.softmax(ordered, dim=-1), dim=-1) > top_p
    remove[..., 1:] = remove[..., :-1].clone()  # keep the first token past the threshold
    remove[..., 0] = False
    drop = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, remove)
    return logits.masked_fill(drop, torch.finfo(logits.dtype).min)


def top_k_logits(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    top_k = min(top_k, logits.size(-1))
    drop = logits < torch.topk(logits, top_k)[0][..., -1, None]
    return logits.masked_fill(drop, torch.finfo(logits.dtype).min)


def sample_tokens(logits: torch.Tensor, config: DreamSamplerConfig, generator: torch.Generator | None,
                  margin: bool = False, neg_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, token) per row, as Dream's ``sample_tokens``."""
    if config.temperature > 0:
        logits = logits / config.temperature
    if config.top_p < 1:
        logits = top_p_logits(logits, config.top_p)
    if config.top_k > 0:
        logits = top_k_logits(logits, config.top_k)
    probs = torch.softmax(logits, dim=-1)
    if config.temperature > 0 and probs.shape[0] > 0:
        draw = torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, True, generator=generator)
        x0 = draw[:, 0]
        confidence = torch.gather(probs, -1, draw)[:, 0]
    else:
        confidence, x0 = probs.max(dim=-1)
    if margin:
        top = torch.sort(probs, dim=-1, descending=True)[0]
        confidence = top[:, 0] - top[:, 1]
    if neg_entropy:
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, x0


class DreamSampler(Sampler):
    name = "dream"
    Config = DreamSamplerConfig
    variants: ClassVar[dict[str, dict]] = {}

    def work(self, config: DreamSamplerConfig, prompt_len: int, shape: dict) -> Work:
        # Every step is one bidirectional forward over prompt + canvas (no cache), and the loop runs all
        # steps whatever the answer holds: the count is exact.
        n = int(config.gen_length) if config.gen_length > 0 else int(config.max_new_tokens)
        steps = config.steps if config.steps > 0 else n
        positions = prompt_len + n
        return Work().add(steps if n > 0 else 0, positions, positions * positions)

    def batch_key(self, config: DreamSamplerConfig, prompt_len: int):
        # Every step is one forward over prompt + canvas and runs whatever the answer holds (no early
        # stop), so canvases of one prompt length decode in lockstep (when long enough: MIN_STACK_ROWS).
        n = int(config.gen_length) if config.gen_length > 0 else int(config.max_new_tokens)
        return (prompt_len,) if prompt_len + n >= MIN_STACK_ROWS else None

    def _sample(self, model, prompt_ids: torch.Tensor, config: DreamSamplerConfig, stats: DecodeStats,
                generator: torch.Generator | None, stop: StopFn | None) -> torch.Tensor:
        return self._sample_batch(model, [prompt_ids], config, [stats], [generator], [stop])[0]

    def _sample_batch(self, model, prompts, config: DreamSamplerConfig, stats, generators, stops) -> list[torch.Tensor]:
        p = int(prompts[0].numel())
        n = int(config.gen_length) if config.gen_length > 0 else int(config.max_new_tokens)
        if n <= 0:
            return [prompt.new_zeros(0) for prompt in prompts]
        mask = config.mask_token_id if config.mask_token_id is not None else int(model.config.mask_token_id)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and p + n > int(limit):
            raise ValueError(f"prompt ({p}) + max_new_tokens ({n}) exceeds the model's {limit} positions")
        steps = config.steps if config.steps > 0 else n
        xs = [torch.cat([prompt, torch.full((n,), mask, dtype=prompt.dtype, device=prompt.device)]) for prompt in prompts]
        timesteps = torch.linspace(1, config.eps, steps + 1, device=xs[0].device)
        for i in range(steps):
            logits = model.denoise(torch.stack(xs))  # one forward for every canvas
            for x, row, st, generator in zip(xs, logits, stats, generators):
                st.nfe += 1
                st.active_token_steps += p + n
                self._step(x, row, i, steps, timesteps, mask, config, generator)
        for st in stats:
            st.extra.update(alg=config.alg, steps=steps, canvas=n)
        return [x[p:] for x in xs]

    @staticmethod
    def _step(x: torch.Tensor, logits: torch.Tensor, i: int, steps: int, timesteps: torch.Tensor, mask: int,
              config: DreamSamplerConfig, generator: torch.Generator | None) -> None:
        """Step ``i`` of one canvas ``x`` (in place) from its logits."""
        masked = x == mask
        mask_logits = logits[masked]
        t, s = timesteps[i], timesteps[i + 1]
        last = i == steps - 1
        if config.alg == "origin":
            p_transfer = 1 - s / t if not last else 1
            x0 = torch.full((mask_logits.shape[0],), mask, dtype=torch.long, device=x.device)
            transfer = torch.rand(x0.shape, device=x.device, generator=generator) < p_transfer
            x0[transfer] = sample_tokens(mask_logits[transfer], config, generator)[1]
            x[masked] = x0
            return
        confidence, x0 = sample_tokens(mask_logits, config, generator, margin=config.alg == "topk_margin",
                                       neg_entropy=config.alg == "entropy")
        count = masked.sum() / 1  # the authors' per-row mean: a float tensor
        k = int(count * (1 - s / t)) if not last else int(count)
        if k <= 0:
            return
        full = torch.full(x.shape, float("-inf"), dtype=logits.dtype, device=x.device)
        full[masked] = confidence
        if config.alg_temp == 0:
            chosen = torch.topk(full, k).indices
        else:
            chosen = torch.multinomial(F.softmax(full / config.alg_temp, dim=-1), k, generator=generator)
        proposal = torch.full_like(x, mask)
        proposal[masked] = x0
        x[chosen] = proposal[chosen]
