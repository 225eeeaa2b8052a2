"""Dream-v0's conditional likelihood: the Monte-Carlo estimate of DreamLM/Dream ``eval/eval.py``.

Facts from ``eval.py`` (``_encode_pair``, ``_forward_process``, ``get_logits``,
``_eval_target_nll_mc`` with its defaults ``nll_type: mc``, ``log_type: ftb``, ``mc_num: 128``,
``sampling_eps: 1e-3``, ``classifier_free_guidance: 1.0`` = off) and ``eval_dream_mc.sh``
(``--batch_size 32``, ``add_bos_token=true``), read, not copied:

* the continuation is scored with an EOS appended (``whole_enc = encode(context + continuation) +
  [eos]``), so the sequence is context ⊕ answer ⊕ EOS; only the answer-and-EOS part is noised
  (``ftb``), and the last position (that EOS) is never masked;
* a forward of ``b`` rows draws ``t_j = (u + j/b) mod 1`` (``u`` uniform, float32) and
  ``p_mask_j = (1 - eps)·t_j + eps``; each position of the row is masked when a uniform draw over
  the whole (b, length) sequence falls below ``p_mask_j`` (the context's draws are made and unused);
* the logits are the network's, shifted right by one (``models/dream.py``);
* the estimate is ``-mean over forwards of Σ_rows Σ_masked CE / p_mask / b`` over
  ``max(mc_num // b, 1)`` forwards; ``is_greedy`` is always False (the authors' TODO).

The random draws come from the request's generator in the authors' order (``u``, then the mask
uniforms) rather than torch's global one. NFE counts sequence rows. ``add_bos_token`` is the
adapter's (the BOS text before the context), as in the authors' harness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..decoding.base import MIN_STACK_ROWS
from ..work import Work
from .base import Scorer, ScorerConfig, ScoreOutput


@dataclass
class DreamScorerConfig(ScorerConfig):
    mc_num: int = 128
    batch: int = 32  # eval_dream_mc.sh --batch_size 32: rows per forward
    sampling_eps: float = 1e-3
    append_eos: bool = True  # _encode_pair appends EOS to the continuation
    mask_token_id: int | None = None  # None: the model config's
    eos_token_id: int | None = None  # None: the model config's

    def __post_init__(self) -> None:
        for name in ("mask_token_id", "eos_token_id"):
            if getattr(self, name) is not None:
                setattr(self, name, int(getattr(self, name)))
        if self.mc_num < 1 or self.batch < 1:
            raise ValueError("mc_num and batch must be at least 1")
        if not 0.0 <= self.sampling_eps < 1.0:
            raise ValueError(f"sampling_eps {self.sampling_eps} must lie in [0, 1)")


class DreamScorer(Scorer):
    method = "dream_mc"
    Config = DreamScorerConfig

    def work(self, config: DreamScorerConfig, context_len: int, continuation_len: int, shape: dict) -> Work:
        # mc_num // batch forwards (at least one) of `batch` rows over context + continuation (+ EOS).
        length = context_len + continuation_len + (1 if config.append_eos else 0)
        calls = max(config.mc_num // config.batch, 1) if continuation_len else 0
        return Work().add(calls, config.batch * length, config.batch * length * length, nfe=calls * config.batch)

    @torch.inference_mode()
    def score(self, model, context_ids: torch.Tensor, continuation_ids: torch.Tensor, config: DreamScorerConfig,
              *, generator: torch.Generator | None = None) -> ScoreOutput:
        return self.score_batch(model, [(context_ids, continuation_ids)], config, [generator])[0]

    def batch_key(self, config: DreamScorerConfig, context_len: int, continuation_len: int):
        # Sequences of one context and one answer length stack into the same forwards (no padding),
        # when the one-request forward is long enough (MIN_STACK_ROWS).
        rows = config.batch * (context_len + continuation_len + int(config.append_eos))
        return (context_len, continuation_len) if continuation_len and rows >= MIN_STACK_ROWS else None

    @torch.inference_mode()
    def score_batch(self, model, requests, config: DreamScorerConfig, generators) -> list[ScoreOutput]:
        """Requests of one (context, answer) length: each forward holds every request's ``batch`` rows,
        each request's ``u`` and mask uniforms drawn from its own generator, in ``score``'s order."""
        p = requests[0][0].numel()
        if requests[0][1].numel() == 0:
            return [ScoreOutput(0.0, False, self.method, nfe=0, stderr=0.0) for _ in requests]
        mask = config.mask_token_id if config.mask_token_id is not None else int(model.config.mask_token_id)
        seqs = []
        for ctx, cont in requests:
            cont = cont.reshape(-1)
            if config.append_eos:
                eos = config.eos_token_id if config.eos_token_id is not None else int(model.config.eos_token_id)
                cont = torch.cat([cont, cont.new_tensor([eos])])
            seqs.append(torch.cat([ctx.reshape(-1), cont])[None].repeat(config.batch, 1))
        b, length = config.batch, seqs[0].shape[1]
        device = seqs[0].device
        draws: list[list[float]] = [[] for _ in requests]
        for _ in range(max(config.mc_num // b, 1)):
            p_masks, masks = [], []
            for generator in generators:
                u0 = torch.rand(1, generator=generator, device=device, dtype=torch.float32)
                t = (u0 + torch.arange(b, device=device).float() / b) % 1
                p_mask = ((1 - config.sampling_eps) * t + config.sampling_eps)[:, None].repeat(1, length)
                masked = torch.rand((b, length), generator=generator, device=device) < p_mask
                masked[:, 0] = False
                masked[:, -1] = False
                masked[:, :p] = False  # ftb: only the continuation is noised
                p_masks.append(p_mask)
                masks.append(masked)
            noisy = torch.cat([torch.where(masked, mask, seq) for masked, seq in zip(masks, seqs)])
            logits = model.denoise(noisy)
            for r, (seq, masked, p_mask) in enumerate(zip(seqs, masks, p_masks)):
                mine = logits[r * b:(r + 1) * b]
                loss = F.cross_entropy(mine[masked], seq[masked], reduction="none") / p_mask[masked]
                draws[r].append(float(loss.sum()) / b)
        outs = []
        for mine in draws:
            values = torch.tensor(mine, dtype=torch.float64)
            stderr = float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else None
            outs.append(ScoreOutput(-float(values.mean()), False, self.method, nfe=len(mine) * b, stderr=stderr))
        return outs
