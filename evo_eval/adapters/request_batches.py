"""Several requests in one forward (``--batch-size N|auto``) for the non-HF adapters, with every
result equal to answering the request alone.

What is stacked. A request's scorer decides (``Scorer.batch_key``, scoring/base.py) which requests it
can answer together: those whose inputs have *exactly* the same shape (context and continuation
lengths). Nothing is padded. Padding changes the tensors' shapes, and with them the order in which
attention sums over positions, so a padded row's numbers would differ from its unpadded ones in the
last bits (a bidirectional denoiser has no padding mask at all); equal-shape buckets avoid that
question instead of hoping. A bucket is answered ``batch_size`` requests at a time; a request whose
key is None (an estimator or case that cannot batch exactly: see each scorer's ``batch_key``) is
answered alone, as at batch 1.

Why the numbers are the same. Every random draw of a request comes from that request's own generator
(seeded from the run seed and the request's content, adapters/base.request_seed, EvalAdapter._ll_generator), in the order the
one-request path draws it: a batched scorer draws for request 1, then request 2, ... and then runs
one forward over all their rows, so no generator sees another request's draws. Per-request decisions
(Monte-Carlo weights, which rows mask nothing, is_greedy) stay per request. What remains shared is the
forward itself: a row's output must not depend on the other rows in the pass. It does, a little, for
GEMMs over few rows: BLAS picks its kernel by the row count, and a row's rounding changes with it
(measured with this project's torch/MKL on a CPU: the classes are 1 | 2-15 | 16+ rows at width 4096,
1 | 2 | 3+ at width 64). The body's GEMMs run over rows x positions, far above those counts for any
real request, so stacking leaves them in their class; the GEMMs whose row count is the number of
sequences are kept at their one-request shape: LLaDA's head over the scored positions runs per
request (``models.llada.denoise(head_split=)``), and the DiT families (MDLM, BD3-LM), whose adaLN
conditioning is a GEMM over one row per sequence in every block, are not stacked. The tests compare
batch 1 with batch 3 and with other batch mates for every family, floats compared with ``==``
(tests/adapters/test_request_batches.py), and a whole ``evo-eval run`` at both sizes. A GPU GEMM may
choose another kernel for another row count too (not measured here: no device was lent); run.py
therefore hands a batched non-HF adapter fixed chunks of requests (as it does lm-eval's HF backend),
so a resumed run equals an uninterrupted one whatever the device (docs/resume.md).

Records. Each request keeps the NFE it costs alone (the per-row work does not change with batching:
the same rows are evaluated, in fewer network calls); ``extra.request_batch`` says how many requests
shared its calls, and the calls' wall time is split evenly among them.

``auto``: these adapters have no memory probe; ``auto`` means ``AUTO_BATCH`` requests, a fixed rule,
logged when chosen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from ..errors import UserError
from .batching import Encoded, answer_group, shared_context_groups, truncate

log = logging.getLogger(__name__)

# --batch-size auto for the non-HF adapters: a fixed rule, not a memory probe. Eight requests keep
# the largest likelihood forwards of the paper cards' defaults (LLaDA: 8 rows of a 126K vocabulary)
# within an 80 GB device at the tasks' context lengths.
AUTO_BATCH = 8


def resolve_batch_size(value: int | str | None) -> int:
    """Requests per batched forward: a positive integer, or ``auto`` (``auto:N``) = AUTO_BATCH."""
    if value is None or value == "":
        return 1
    text = str(value).strip().lower()
    if text.isdigit() and int(text) > 0:
        return int(text)
    if text == "auto" or text.startswith("auto:"):
        log.info("--batch-size %s: %d requests per batched forward (adapters/request_batches.AUTO_BATCH)",
                 value, AUTO_BATCH)
        return AUTO_BATCH
    raise UserError(f"--batch-size must be a positive integer or auto, got '{value}'", "pass e.g. --batch-size 8")


class Generation(NamedTuple):
    """One generation request, ready for the sampler."""

    request: Any  # the lm-eval Instance
    until: list[str]
    config: Any  # its SamplerConfig (the card's settings with the request's gen_kwargs)
    prompt_ids: torch.Tensor
    stop: Callable[[torch.Tensor], bool] | None
    generator: torch.Generator


def generation_batches(lm: Any, prepared: Sequence[Generation]) -> list[list[int]]:
    """Indices of the generation requests decoded together: at batch 1 each alone, in order; batched,
    requests of one sampler config whose sampler key (``Sampler.batch_key``: the prompt length, where
    the sampler decodes in lockstep exactly) is equal, ``lm.batch_size`` at a time; the rest alone."""
    if lm.batch_size <= 1:
        return [[i] for i in range(len(prepared))]
    buckets: dict[Any, list[int]] = {}
    alone: list[list[int]] = []
    for i, g in enumerate(prepared):
        key = lm.sampler.batch_key(g.config, int(g.prompt_ids.numel()))
        if key is None:
            alone.append([i])
        else:
            buckets.setdefault((repr(g.config), key), []).append(i)
    batches = [members[start:start + lm.batch_size] for members in buckets.values()
               for start in range(0, len(members), lm.batch_size)]
    return batches + alone


def answer_in_batches(lm: Any, items: Sequence[Encoded], group: bool = True) -> list[tuple[float, bool]]:
    """Every request's (logprob, is_greedy): one-token options of one context share a forward as at
    batch 1 (adapters/batching.py, when ``group``), and requests (or such groups) of one bucket are
    stacked ``lm.batch_size`` at a time."""
    results: list[tuple[float, bool] | None] = [None] * len(items)
    groups = shared_context_groups(items, lm.max_length) if group else [[i] for i in range(len(items))]
    scorer, config = lm.scorer, lm.scorer_config
    buckets: dict[Any, list[list[int]]] = {}
    alone: list[list[int]] = []
    for members in groups:
        first = items[members[0]]
        if len(members) > 1:
            if scorer.shares_choices(config):
                context = truncate(first.context_ids, 1, lm.max_length)
                key = scorer.batch_key(config, len(context), 1)
                if key is not None:
                    buckets.setdefault(("choices", key), []).append(members)
                    continue
            alone.append(members)
            continue
        context = truncate(first.context_ids, len(first.continuation_ids), lm.max_length)
        key = scorer.batch_key(config, len(context), len(first.continuation_ids))
        if key is None:
            alone.append(members)
        else:
            buckets.setdefault(("one", key), []).append(members)
    for (kind, _), units in buckets.items():
        for start in range(0, len(units), lm.batch_size):
            chunk = units[start:start + lm.batch_size]
            if len(chunk) == 1:  # nobody to share with: the one-request path itself
                alone.append(chunk[0])
            elif kind == "choices":
                _answer_choices(lm, items, chunk, results)
            else:
                _answer_singles(lm, items, [u[0] for u in chunk], results)
    for members in alone:
        answer_group(lm, items, members, results)
    return results  # type: ignore[return-value]


def _answer_singles(lm: Any, items: Sequence[Encoded], indices: list[int], results: list) -> None:
    requests, generators, prompt_lens = [], [], []
    for i in indices:
        item = items[i]
        context_ids = truncate(item.context_ids, len(item.continuation_ids), lm.max_length)
        requests.append((torch.tensor(context_ids, dtype=torch.long, device=lm.device),
                         torch.tensor(item.continuation_ids, dtype=torch.long, device=lm.device)))
        generators.append(lm._ll_generator(context_ids, item.continuation_ids))  # _score_one's: the same draws
        prompt_lens.append(len(context_ids))
    start = time.perf_counter()
    with torch.inference_mode():
        outs = lm.scorer.score_batch(lm.model, requests, lm.scorer_config, generators)
    share = (time.perf_counter() - start) / len(indices)
    for i, out, prompt_len in zip(indices, outs, prompt_lens, strict=True):
        results[i] = lm._answer_ll(out, prompt_len, share, items[i].key, items[i].request,
                                   {"request_batch": len(indices)})


def _answer_choices(lm: Any, items: Sequence[Encoded], units: list[list[int]], results: list) -> None:
    contexts, candidates = [], []
    for members in units:
        context_ids = truncate(items[members[0]].context_ids, 1, lm.max_length)
        contexts.append(torch.tensor(context_ids, dtype=torch.long, device=lm.device))
        candidates.append(torch.tensor([items[i].continuation_ids[0] for i in members], dtype=torch.long,
                                       device=lm.device))
    start = time.perf_counter()
    with torch.inference_mode():
        outs = lm.scorer.choices_batch(lm.model, contexts, candidates, lm.scorer_config)
    share = (time.perf_counter() - start) / len(units)
    for members, group_outs, ctx in zip(units, outs, contexts, strict=True):
        for n, (i, out) in enumerate(zip(members, group_outs, strict=True)):
            results[i] = lm._answer_ll(out, int(ctx.numel()), share if n == 0 else 0.0, items[i].key,
                                       items[i].request, {"shared_forward": len(members), "request_batch": len(units)})
