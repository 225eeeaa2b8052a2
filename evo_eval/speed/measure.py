"""``evo-eval speed``: the timing protocol (docs/architecture.md), one card at a time.

Per model card, one request at a time (batch 1):

1. Build the card's network through its family's contract (``families.ModelModule.random_model`` at the
   card's shape with synthetic weights; on a machine without a GPU, at the family's ``TINY_SHAPE``),
   or load the checkpoint's weights and tokenizer. AR cards (family ``hf``) are timed on the fast
   decoder of ``models/llama.py``.
2. Prompts: the suite's GSM8K prompts (the stage's shots), rendered from the real data by
   ``speed_prompts`` so the GPU machine needs neither lm-eval nor datasets. Real weights encode them
   with the checkpoint's tokenizer; synthetic weights with the labelled proxy tokenizer.
3. Warm-up requests (the longest prompt first, so any size-keyed compilation or graph capture
   happens before timing) are run and recorded but excluded from every figure.
4. Timed requests cycle through the prompts in document order. The timed span of a request opens
   (after a device synchronisation) before tokenisation and closes after the sampler returns and
   the device is synchronised again: tokenisation, host-to-device copy, prefill and decoding.
5. Generated tokens are the sampler's output (prompt excluded, cut at end-of-sequence); with
   synthetic weights EOS is disabled and the length is fixed at ``--gen-len``. E2E latency is the
   median (and p90) of the requests' wall times; tokens/s is generated tokens over wall time,
   summed over the timed requests; NFE and tokens per forward come from the sampler's stats; peak
   memory, achieved bandwidth and FLOP rate against the device's ceilings from ``roofline``.

A card that cannot be timed as asked (no checkpoint, no such variant) is skipped with one line.
Results go through ``store.write_speed_result`` to ``<output>/<card>.json`` (the card's own decoding,
which the table and plot read) or ``<output>/<card>--<label>.json`` for a variant or decoding override.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from ..cards import ModelCard
from ..decoding.base import SamplerConfig, make_generator, synchronize
from ..devices import resolve_device, resolve_dtype
from ..roofline import Roofline, copy_bandwidth, datasheet_bandwidth, device_name, matmul_rate, model_cost
from ..store import CHECKPOINT_LABEL, CPU_NOTE, SYNTHETIC_LABEL, SpeedResult, write_speed_result
from .build import Built, ModelPool, build_checkpoint, build_synthetic
from .options import SpeedOptions, Skip, family_module, plan_cards, sampler_config, sampler_for

PAPER_SPEED_ROWS = {"tokens_per_s": "Inference Speed (tokens/s)", "e2e_latency_s": "E2E Latency (s)"}


@dataclass
class RequestTiming:
    phase: str  # "warmup" | "timed"
    doc_id: int
    prompt_tokens: int
    new_tokens: int
    wall_s: float
    nfe: int
    active_token_steps: int
    sampler_wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


# ---- timing -------------------------------------------------------------------------------------------


def _stop_fn(built: Built):
    if not built.until:
        return None

    def stop(tokens: torch.Tensor) -> bool:
        text = built.tokenizer.decode(tokens.tolist(), skip_special_tokens=True)
        return any(s in text for s in built.until)

    return stop


def _encode(built: Built, text: str) -> list[int]:
    if hasattr(built.tokenizer, "limit"):  # the proxy
        return built.tokenizer.encode(text)
    return built.tokenizer.encode(text, add_special_tokens=True)


def timed_request(built: Built, sampler, config: SamplerConfig, text: str, device: torch.device,
                  generator: torch.Generator, phase: str, doc_id: int) -> RequestTiming:
    """One request inside the timed span: tokenisation, copy to the device, prefill and decoding."""
    stop = _stop_fn(built)
    synchronize(device)
    start = time.perf_counter()
    ids = _encode(built, text)
    prompt = torch.tensor(ids, dtype=torch.long, device=device)
    out = sampler.sample(built.model, prompt, config, generator=generator, stop=stop)
    synchronize(device)
    wall = time.perf_counter() - start
    stats = out.stats
    return RequestTiming(phase, doc_id, len(ids), stats.new_tokens, wall, stats.nfe, stats.active_token_steps,
                         stats.wall_s, dict(stats.extra))


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of a non-empty list."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(timed: list[RequestTiming]) -> dict[str, float]:
    """The headline figures from the timed requests only (warm-ups never reach this)."""
    walls = [r.wall_s for r in timed]
    tokens = sum(r.new_tokens for r in timed)
    forwards = sum(r.nfe for r in timed)
    return {
        "e2e_latency_s": statistics.median(walls),
        "e2e_latency_p90_s": percentile(walls, 90),
        "tokens_per_s": tokens / sum(walls),
        "tokens_per_s_median": statistics.median(r.new_tokens / r.wall_s for r in timed),
        "new_tokens": statistics.median(r.new_tokens for r in timed),
        "prompt_tokens": statistics.median(r.prompt_tokens for r in timed),
        "nfe": statistics.median(r.nfe for r in timed),
        "tokens_per_forward": tokens / forwards if forwards else 0.0,
    }


def roofline_for(timed: list[RequestTiming], cost, device: torch.device, dtype: torch.dtype) -> Roofline:
    kv = [r.extra.get("kv_bytes_read") for r in timed]
    return Roofline(
        bytes_moved=sum(r.nfe for r in timed) * cost.weight_bytes + sum(k or 0 for k in kv),
        dense_flops=2.0 * cost.dense_params * sum(r.active_token_steps for r in timed),
        wall_s=sum(r.wall_s for r in timed), tokens=sum(r.new_tokens for r in timed),
        datasheet_bandwidth=datasheet_bandwidth(device_name(device)) if device.type == "cuda" else None,
        measured_copy_bandwidth=copy_bandwidth(device), measured_matmul_rate=matmul_rate(device, dtype),
        kv_counted=all(k is not None for k in kv),
    )


def paper_speed(card: ModelCard) -> dict[str, float | None]:
    from ..suites import paper_table

    table = paper_table(card.stage)
    out = {}
    for key, row in PAPER_SPEED_ROWS.items():
        try:
            out[key] = float(table.get(row, {}).get(card.column))
        except (TypeError, ValueError):
            out[key] = None
    return out


def speed_provenance(device: torch.device) -> dict[str, Any]:
    """store.provenance, plus the git state passed in by environment where the tree has no .git
    (the GPU machine receives a copy of the working tree without it)."""
    from ..store import package_versions, provenance

    prov = provenance(device=device_name(device), cuda=torch.version.cuda,
                      gpu_count=torch.cuda.device_count() if device.type == "cuda" else 0)
    prov["packages"] = {**package_versions(("torch", "transformers", "evo-eval", "triton"))}
    if prov["git"].get("commit") is None and os.environ.get("EVO_EVAL_GIT_COMMIT"):
        prov["git"] = {"commit": os.environ["EVO_EVAL_GIT_COMMIT"],
                       "dirty": os.environ.get("EVO_EVAL_GIT_DIRTY", "unknown") in ("1", "true", "yes"),
                       "source": "EVO_EVAL_GIT_COMMIT"}
    return prov


# ---- one card -----------------------------------------------------------------------------------------


Event = Callable[..., None]


def measure_card(card: ModelCard, options: SpeedOptions, pool: ModelPool, device: torch.device,
                 on_event: Event | None = None) -> SpeedResult:
    from ..data.speed_prompts import gsm8k_prompts
    from ..suites import paper_shots

    emit = on_event or (lambda *a, **k: None)
    dtype = resolve_dtype(options.dtype, device, card.dtype)
    module = family_module(card)
    sampler = sampler_for(card)
    synthetic = options.weights == "synthetic"
    key = (card.family, repr(sorted(card.shape.items())), dtype, str(device), options.weights, options.checkpoint or card.checkpoint)
    built = pool.get(key, lambda: build_synthetic(card, module, device, dtype, options.seed) if synthetic
                     else build_checkpoint(card, options.checkpoint, device, dtype))
    config = sampler_config(card, sampler, options, built.eos_token_id)

    shots = paper_shots(options.prompts, card.stage)
    prompts = gsm8k_prompts(options.repeats, shots, options.data_dir)
    texts = [_render(built, card, p) for p in prompts]
    lengths = [len(_encode(built, t)) for t in texts]
    warm_order = sorted(range(len(texts)), key=lambda i: -lengths[i])

    def request(index: int, phase: str, number: int) -> RequestTiming:
        generator = make_generator(options.seed + number, device)
        return timed_request(built, sampler, config, texts[index], device, generator, phase, prompts[index].doc_id)

    emit("start", card=card, total=options.warmup + options.repeats)
    warmups = []
    for n in range(options.warmup):
        warmups.append(request(warm_order[n % len(warm_order)], "warmup", n))
        emit("advance", card=card)
    repeats = _affordable_repeats(options, warmups)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = []
    for n in range(repeats):
        timed.append(request(n % len(texts), "timed", options.warmup + n))
        emit("advance", card=card)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    cost = model_cost(built.model, tied=built.tied)
    notes = []
    if device.type != "cuda":
        notes.append(CPU_NOTE)
    if synthetic:
        notes.append(f"{SYNTHETIC_LABEL}: fixed generation length {options.gen_len} (EOS disabled); "
                     f"prompt ids from the {built.tokenizer_label}")
        short = sorted({r.new_tokens for r in timed if r.new_tokens != options.gen_len})
        if short:
            notes.append(f"sampler returned {short} tokens, not the fixed {options.gen_len}: it breaks the "
                         "sampler contract for synthetic weights")
    if options.warmup == 0:
        notes.append("no warm-up: the first request's compilation and allocation are inside the timings")
    if repeats < options.repeats:
        notes.append(f"{repeats} of {options.repeats} repeats, to fit the per-model time budget")
    if card.chat_template and synthetic:
        notes.append("post-trained card: no chat template without a tokenizer; the plain prompt is timed")
    return SpeedResult(
        model=card.name, stage=card.stage, system=card.system, column=card.column, family=card.family,
        label=options.label, weights=options.weights, synthetic=synthetic,
        weights_label=SYNTHETIC_LABEL if synthetic else CHECKPOINT_LABEL,
        comparable_to_paper=device.type == "cuda", device=device_name(device),
        dtype=str(dtype).replace("torch.", ""), shape=built.shape, cost=cost.as_dict(), sampler=sampler.name,
        sampler_config=asdict(config),
        protocol={
            "batch": 1, "prompts": options.prompts, "shots": shots, "documents": [p.doc_id for p in prompts],
            "gen_len": options.gen_len, "repeats": repeats, "warmup": options.warmup, "variant": options.variant,
            "decoding_overrides": options.decoding, "tokenizer": built.tokenizer_label,
            "timed_span": "tokenisation + host-to-device copy + prefill + decoding, device synchronised at both ends",
            "tokens_counted": "generated ids up to the first end-of-sequence; never the prompt",
            "warmup_order": "longest prompt first",
        },
        **summarise(timed), peak_memory_gib=peak,
        roofline=roofline_for(timed, cost, device, dtype).as_dict(), paper=paper_speed(card),
        requests=[asdict(r) for r in timed], warmup_requests=[asdict(r) for r in warmups], notes=notes,
        provenance=speed_provenance(device),
    )


def _render(built: Built, card: ModelCard, prompt) -> str:
    template = getattr(built.tokenizer, "chat_template", None)
    if card.chat_template and template:
        return built.tokenizer.apply_chat_template(list(prompt.messages), tokenize=False, add_generation_prompt=True)
    return prompt.text


def _affordable_repeats(options: SpeedOptions, warmups: list[RequestTiming]) -> int:
    if not options.time_budget_s or not warmups:
        return options.repeats
    per_request = warmups[-1].wall_s  # the first warm-up pays compilation; the last is representative
    return max(min(3, options.repeats), min(options.repeats, int(options.time_budget_s // max(per_request, 1e-9))))


# ---- the run ------------------------------------------------------------------------------------------


def run_speed(options: SpeedOptions, on_event: Event | None = None, pool: ModelPool | None = None) -> list[SpeedResult]:
    """Time every planned card; write one results file each; return the results.

    ``on_event(kind, card=..., ...)`` reports progress: "start" (total requests), "advance",
    "done" (result, path), "skip" (reason). Pass a ``pool`` to keep the last model across calls
    (the caller then clears it).
    """
    cards = plan_cards(options)
    device = resolve_device(options.device)
    emit = on_event or (lambda *a, **k: None)
    own_pool = pool is None
    pool = pool or ModelPool()
    results = []
    try:
        for card in cards:
            try:
                result = measure_card(card, options, pool, device, emit)
            except Skip as reason:
                emit("skip", card=card, reason=str(reason))
                continue
            path = write_speed_result(options.output, result)
            results.append(result)
            emit("done", card=card, result=result, path=path)
    finally:
        if own_pool:
            pool.clear()
    return results
