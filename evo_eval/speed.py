"""``evo-eval speed``: the timing protocol of DESIGN.md, its results files, and the speed/plot commands.

Per model card, one request at a time (batch 1):

1. Build the card's network through its family's contract (``models/<family>.random_model`` at the
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

A family whose model or sampler module is not there yet is skipped with one line, so families are
picked up as they land. Results go to ``<output>/<card>.json`` (the card's own decoding, which the
table and plot read) or ``<output>/<card>--<label>.json`` for a variant or decoding override.
"""

from __future__ import annotations

import gc
import os
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import torch
import typer

from .cards import STAGES, ModelCard, all_cards, get_card, paper_order
from .decoding.base import SamplerConfig, make_generator, synchronize
from .devices import resolve_device
from .errors import ResultsError, UnknownNameError, UserError
from .roofline import Roofline, copy_bandwidth, datasheet_bandwidth, device_name, matmul_rate, model_cost

KIND = "evo-eval/speed-result"
SCHEMA_VERSION = 1
SYNTHETIC_LABEL = "synthetic weights"
CHECKPOINT_LABEL = "checkpoint weights"
CPU_NOTE = "CPU run at each family's tiny shape: figures are not comparable to the paper's (one A100, 8B shapes)"
PROMPT_SETS = ("gsm8k",)
WEIGHTS = ("synthetic", "checkpoint")
PAPER_SPEED_ROWS = {"tokens_per_s": "Inference Speed (tokens/s)", "e2e_latency_s": "E2E Latency (s)"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---- what a run is asked to do ----------------------------------------------------------------------


@dataclass
class SpeedOptions:
    models: list[str] | None = None  # card names; None = every card (of --stage, if given)
    stage: str | None = None
    weights: str = "synthetic"
    checkpoint: str | None = None  # overrides the card's checkpoint with --weights checkpoint
    prompts: str = "gsm8k"
    gen_len: int = 256
    repeats: int = 5
    warmup: int = 2
    # reference: the card's decoding; any other name: that entry of the sampler's ``variants`` dict
    # (Config overrides, e.g. LLaDA's "cached"); a sampler without it skips the card with one line.
    variant: str | None = None
    decoding: dict[str, Any] = field(default_factory=dict)  # sampler Config overrides, e.g. schedule=fixed:0.5
    output: Path = Path("results/speed")
    device: str | None = None
    dtype: str | None = None  # default: the card's dtype on GPUs, float32 on the CPU
    data_dir: Path | None = None
    seed: int = 1234
    time_budget_s: float | None = None  # per model: fewer timed repeats (never under 3) if they would not fit

    @property
    def label(self) -> str | None:
        """Results-file suffix: what differs from the card's own decoding, in file-name-safe letters."""
        parts = [self.variant] if self.variant and self.variant != "reference" else []
        parts += [f"{k}-{v}" for k, v in sorted(self.decoding.items())]
        return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(map(str, parts))) if parts else None


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


@dataclass
class SpeedResult:
    """One card's timing, as written to and read from its results file."""

    model: str
    stage: str
    system: str
    column: str
    family: str
    label: str | None  # None: the card's own decoding (what the table shows)
    weights: str
    synthetic: bool
    weights_label: str
    comparable_to_paper: bool
    device: str
    dtype: str
    shape: dict[str, Any]
    cost: dict[str, Any]
    sampler: str
    sampler_config: dict[str, Any]
    protocol: dict[str, Any]
    e2e_latency_s: float
    e2e_latency_p90_s: float
    tokens_per_s: float
    tokens_per_s_median: float
    new_tokens: float
    prompt_tokens: float
    nfe: float
    tokens_per_forward: float
    peak_memory_gib: float | None
    roofline: dict[str, Any]
    paper: dict[str, Any]
    requests: list[dict[str, Any]]
    warmup_requests: list[dict[str, Any]]
    notes: list[str]
    provenance: dict[str, Any]

    @property
    def key(self) -> str:
        return self.model if self.label is None else f"{self.model}--{self.label}"

    def to_record(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "kind": KIND, **asdict(self)}

    @classmethod
    def from_record(cls, record: dict[str, Any], where: str = "speed record") -> "SpeedResult":
        if record.get("kind") != KIND:
            raise ResultsError(f"{where} is not an evo-eval speed result", "move it out of the speed folder")
        if record.get("schema_version") != SCHEMA_VERSION:
            raise ResultsError(f"{where} has speed schema version {record.get('schema_version')}, this evo-eval "
                               f"reads {SCHEMA_VERSION}", "re-run evo-eval speed for that model")
        names = set(cls.__dataclass_fields__)
        missing = sorted(names - set(record))
        if missing:
            raise ResultsError(f"{where} lacks field(s) {', '.join(missing)}", "re-run evo-eval speed for that model")
        return cls(**{k: record[k] for k in names})


class Skip(Exception):
    """A card that cannot be timed yet (its family has not landed, no checkpoint ...): one line why."""


# ---- the plan ---------------------------------------------------------------------------------------


def plan_cards(options: SpeedOptions) -> list[ModelCard]:
    """The cards to time, in the paper's order, with every option checked before anything is built."""
    if options.stage is not None and options.stage not in STAGES:
        raise UnknownNameError("stage", options.stage, list(STAGES))
    if options.weights not in WEIGHTS:
        raise UnknownNameError("weights", options.weights, list(WEIGHTS))
    if options.prompts not in PROMPT_SETS:
        raise UnknownNameError("prompt set", options.prompts, list(PROMPT_SETS))
    if options.dtype is not None and options.dtype not in _DTYPES:
        raise UnknownNameError("dtype", options.dtype, list(_DTYPES))
    for name, value, least in (("--gen-len", options.gen_len, 1), ("--repeats", options.repeats, 1),
                               ("--warmup", options.warmup, 0)):
        if value < least:
            raise UserError(f"{name} must be at least {least}, got {value}", f"pass {name} {max(least, 1)} or more")
    if options.checkpoint and options.weights != "checkpoint":
        raise UserError("--checkpoint is given but --weights is synthetic", "add --weights checkpoint")
    order = {s: i for i, s in enumerate(paper_order())}
    if not options.models or options.models == ["all"]:
        cards = [c for c in all_cards().values() if options.stage in (None, c.stage)]
    else:
        cards = [get_card(name) for name in options.models]
        wrong = [c.name for c in cards if options.stage not in (None, c.stage)]
        if wrong:
            raise UserError(f"{', '.join(wrong)} is not a {options.stage} card", "drop --stage or name that stage's cards")
    if options.checkpoint and len(cards) != 1:
        raise UserError("--checkpoint applies to one model", "name exactly one card with --models")
    # System by system (base, then post-trained): cards of one shape follow each other, so the
    # model pool builds (and compiles) each architecture once.
    return sorted(cards, key=lambda c: (order.get(c.system, 99), STAGES.index(c.stage)))


def family_module(card: ModelCard):
    """``models/<family>.py`` (AR cards: the fast decoder ``models/llama.py``), or Skip if not landed."""
    name = "llama" if card.is_hf else card.family
    return _import_or_skip(f"evo_eval.models.{name}", f"{card.family} model")


def _import_or_skip(module: str, what: str):
    try:
        return import_module(module)
    except ModuleNotFoundError as exc:
        if _not_landed(exc):
            raise Skip(f"{what} not available yet ({exc.name} does not exist)") from None
        raise


def _not_landed(exc: ModuleNotFoundError) -> bool:
    # One of our own modules is missing (its family has not landed); a missing third-party
    # package, or a broken import inside a module that exists, is a real error and propagates.
    return bool(exc.name) and exc.name.startswith("evo_eval.")


def sampler_for(card: ModelCard, benchmark: str):
    from .decoding import get_sampler

    settings = card.decoding_for(benchmark)
    name = settings.get("sampler")
    if not name:
        raise UserError(f"card {card.name} names no sampler in its decoding block", f"add sampler: ... to {card.path}")
    try:
        return get_sampler(name)
    except ModuleNotFoundError as exc:
        if _not_landed(exc):
            raise Skip(f"sampler '{name}' not available yet ({exc.name} does not exist)") from None
        raise


def fit_canvas(values: dict[str, Any], gen_len: int, user: dict[str, Any]) -> None:
    """Size a fixed canvas (LLaDA's gen_length) to the protocol's generation length.

    Every system must generate the same number of tokens in a timed request. A card whose canvas is
    larger (LLaDA base: 1024, though tables time 256 tokens) keeps its steps per token and its block
    length (capped at the canvas), so the algorithm is the card's, only its length is the protocol's.
    Settings the user passed with --decoding are left alone.
    """
    canvas = values.get("gen_length")
    if not canvas or "gen_length" in user or int(canvas) == gen_len:
        return
    canvas = int(canvas)
    values["gen_length"] = gen_len
    if "steps" in values and "steps" not in user:
        values["steps"] = max(1, round(int(values["steps"]) * gen_len / canvas))
    if "block_length" in values and "block_length" not in user:
        values["block_length"] = min(int(values["block_length"]), gen_len)


def sampler_config(card: ModelCard, sampler, options: SpeedOptions, eos_token_id: int | None) -> SamplerConfig:
    """The card's decoding for the prompt benchmark, then the variant's and the user's overrides;
    the generation length and end-of-sequence are the protocol's."""
    values = card.decoding_for(options.prompts)
    values.pop("sampler", None)
    variants = getattr(sampler, "variants", {})
    if options.variant is not None:
        if options.variant not in variants and options.variant != "reference":
            raise Skip(f"sampler '{sampler.name}' has no '{options.variant}' variant "
                       f"(it offers: {', '.join(variants) or 'none'})")
        values.update(variants.get(options.variant, {}))
    values.update(options.decoding)
    fit_canvas(values, options.gen_len, user=options.decoding)
    values.update(max_new_tokens=options.gen_len, eos_token_id=eos_token_id, seed=options.seed)
    try:
        return sampler.Config.from_dict(values)
    except ValueError as exc:
        raise UserError(f"{card.name}: {exc}", "fix --decoding or the card's decoding block") from None


# ---- building the model and its tokenizer -------------------------------------------------------------


@dataclass
class Built:
    model: torch.nn.Module
    tokenizer: Any
    shape: dict[str, Any]
    tokenizer_label: str
    eos_token_id: int | None
    until: tuple[str, ...]
    tied: bool


class ModelPool:
    """Keeps the last built model, so base and post-trained cards of one shape share one build."""

    def __init__(self):
        self._key: Any = None
        self._built: Built | None = None

    def get(self, key: Any, build: Callable[[], Built]) -> Built:
        if key != self._key:
            self.clear()
            self._built, self._key = build(), key
        return self._built

    def clear(self) -> None:
        self._built, self._key = None, None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _vocab_size(model: torch.nn.Module, shape: dict[str, Any]) -> int:
    if "vocab_size" in shape:
        return int(shape["vocab_size"])
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            return module.num_embeddings
    raise UserError("cannot tell the model's vocabulary size", "add vocab_size to the family's shape")


def build_synthetic(card: ModelCard, module, device: torch.device, dtype: torch.dtype, seed: int) -> Built:
    from .speed_prompts import ProxyTokenizer, proxy_limit

    shape = dict(card.shape) if device.type == "cuda" else dict(module.TINY_SHAPE)
    model = module.random_model(shape, dtype=dtype, device=device, seed=seed)
    model.eval()
    tokenizer = ProxyTokenizer(proxy_limit(shape, _vocab_size(model, shape)))
    return Built(model, tokenizer, shape, ProxyTokenizer.label, None, (), _tied(model, shape))


def _tied(model: torch.nn.Module, shape: dict[str, Any]) -> bool:
    """Whether the output head reads the embedding table (then it counts as read per forward)."""
    config = getattr(model, "config", None)
    return bool(shape.get("tie_embeddings") or getattr(config, "tie_word_embeddings", False))


def build_checkpoint(card: ModelCard, checkpoint: str | None, device: torch.device, dtype: torch.dtype) -> Built:
    from .speed_prompts import GSM8K_UNTIL

    path = checkpoint or card.checkpoint
    if not path:
        raise Skip(f"no public checkpoint for {card.name}; pass --checkpoint DIR")
    if card.is_hf:
        from transformers import AutoTokenizer

        from .models.llama import load_pretrained, resolve_checkpoint

        model = load_pretrained(path, revision=card.revision, dtype=dtype, device=device)
        tokenizer = AutoTokenizer.from_pretrained(str(resolve_checkpoint(path, card.revision)))
    else:  # every other family loads through its adapter, the one place that knows its checkpoint layout
        from .adapters import adapter_class

        name = {v: k for k, v in _DTYPES.items()}[dtype]
        adapter = adapter_class(card.family)(pretrained=path, card=card, device=str(device), dtype=name)
        model, tokenizer = adapter.model, adapter.tokenizer
    shape = getattr(model, "shape", None)
    shape = shape.as_dict() if hasattr(shape, "as_dict") else dict(card.shape)
    return Built(model, tokenizer, shape, f"checkpoint ({type(tokenizer).__name__})", tokenizer.eos_token_id,
                 GSM8K_UNTIL, _tied(model, shape))


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
    from .suites import paper_table

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
    from .store import package_versions, provenance

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
    from .speed_prompts import gsm8k_prompts
    from .suites import paper_shots

    emit = on_event or (lambda *a, **k: None)
    dtype = _DTYPES[options.dtype] if options.dtype else (_DTYPES[card.dtype] if device.type == "cuda" else torch.float32)
    module = family_module(card)
    sampler = sampler_for(card, options.prompts)
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


def result_path(output: Path, result: SpeedResult) -> Path:
    return Path(output) / f"{result.key}.json"


def write_result(output: Path, result: SpeedResult) -> Path:
    from .store import atomic_write_text, to_json

    path = result_path(output, result)
    atomic_write_text(path, to_json(result.to_record()))
    return path


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
            path = write_result(options.output, result)
            results.append(result)
            emit("done", card=card, result=result, path=path)
    finally:
        if own_pool:
            pool.clear()
    return results


def load_speed_results(directory: Path, variants: bool = False) -> dict[str, dict]:
    """Card name -> speed record for every results file in ``directory`` (the card's own decoding).

    ``variants=True`` adds the variant files under ``<card>--<label>``. Files of another kind (a
    summary) are ignored; a malformed speed file is a ResultsError.
    """
    import json

    out: dict[str, dict] = {}
    for path in sorted(Path(directory).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ResultsError(f"speed results file {path} is not valid JSON", "delete it and re-run evo-eval speed") from None
        if not isinstance(record, dict) or record.get("kind") != KIND:
            continue
        result = SpeedResult.from_record(record, str(path))
        if result.label is None or variants:
            out[result.key] = record
    return out


def format_result(result: SpeedResult) -> str:
    """One console line: the headline figures, the paper's, and the labels that qualify them."""
    roof = result.roofline
    bw = f"{roof['achieved_bandwidth_tbs']:.2f} TB/s"
    if roof.get("bandwidth_fraction") is not None:
        bw += f" ({roof['bandwidth_fraction']:.0%} of {roof['datasheet_bandwidth_tbs']:.2f})"
    paper = result.paper.get("tokens_per_s")
    memory = f"{result.peak_memory_gib:.1f} GiB" if result.peak_memory_gib is not None else "—"
    roof_frac = f"{roof['roofline_fraction']:.0%} of {roof['bound']} roofline" if roof.get("roofline_fraction") else ""
    return (f"{result.key:<28} {result.tokens_per_s:8.1f} tok/s (paper {paper if paper is not None else '—'})  "
            f"E2E {result.e2e_latency_s:.2f} s (p90 {result.e2e_latency_p90_s:.2f})  NFE {result.nfe:.0f}  "
            f"{result.tokens_per_forward:.2f} tok/fwd  {memory}  {bw}  {roof_frac}  [{result.weights_label}"
            f"{'' if result.comparable_to_paper else '; CPU tiny, not comparable'}]")


# ---- the commands -------------------------------------------------------------------------------------


def parse_settings(text: str | None) -> dict[str, Any]:
    """``key=value,key2=value2`` -> dict (values stay strings; the sampler Config casts them)."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"cannot parse '{item}' in --decoding", "write key=value pairs separated by commas")
        out[key.strip()] = value.strip()
    return out


def speed_command(
    models: Annotated[str, typer.Option("--models", help="Comma-separated card names, or all.")] = "all",
    stage: Annotated[Optional[str], typer.Option(help="base or instruct (default: both, with --models all).")] = None,
    weights: Annotated[str, typer.Option(help="synthetic (random weights at the card's shape) or checkpoint.")] = "synthetic",
    checkpoint: Annotated[Optional[str], typer.Option(help="Checkpoint folder or hub id for --weights checkpoint.")] = None,
    prompts: Annotated[str, typer.Option(help="Benchmark whose rendered prompts are timed.")] = "gsm8k",
    gen_len: Annotated[int, typer.Option(help="Tokens to generate per request (fixed with synthetic weights).")] = 256,
    repeats: Annotated[int, typer.Option(help="Timed requests per model (median and p90 over them).")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up requests per model.")] = 2,
    variant: Annotated[Optional[str], typer.Option(help="reference (the card's decoding), or a variant the sampler offers (e.g. cached).")] = None,
    decoding: Annotated[Optional[str], typer.Option(help="Sampler overrides, e.g. schedule=fixed:0.5.")] = None,
    output: Annotated[Path, typer.Option(help="Folder for the per-model results files.")] = Path("results/speed"),
    device: Annotated[Optional[str], typer.Option(help="cuda, cuda:1, cpu (default: cuda if available).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="Override the card's dtype.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder with gsm8k/train.jsonl and test.jsonl.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for weights and sampling.")] = 1234,
) -> None:
    """Time models under the matched protocol: batch 1, prompt encoding included, warm-ups excluded."""
    from .cli import handle_errors

    options = SpeedOptions(
        models=[m.strip() for m in models.split(",") if m.strip()], stage=stage, weights=weights,
        checkpoint=checkpoint, prompts=prompts, gen_len=gen_len, repeats=repeats, warmup=warmup, variant=variant,
        decoding=parse_settings(decoding), output=output, device=device, dtype=dtype, data_dir=data_dir, seed=seed,
    )
    handle_errors(run_with_progress)(options)


def run_with_progress(options: SpeedOptions) -> list[SpeedResult]:
    """run_speed with a rich progress bar and one line per model (skips included)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    plan_cards(options)  # bad input fails here, as one line, before anything is printed
    device = resolve_device(options.device)
    if device.type != "cuda":
        console.print(f"[yellow]{CPU_NOTE}[/yellow]")
    if options.weights == "synthetic":
        console.print(f"[yellow]{SYNTHETIC_LABEL}[/yellow]: random weights at each card's shape, "
                      f"fixed length {options.gen_len}, proxy prompt tokenizer")
    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        def on_event(kind: str, card: ModelCard, **info: Any) -> None:
            if kind == "start":
                tasks[card.name] = progress.add_task(f"{card.name}", total=info["total"])
            elif kind == "advance":
                progress.advance(tasks[card.name])
            elif kind == "done":
                progress.console.print(format_result(info["result"]) + f"  -> {info['path']}")
            elif kind == "skip":
                progress.console.print(f"{card.name:<28} skipped: {info['reason']}")

        return run_speed(options, on_event)


def plot_command(
    stage: Annotated[str, typer.Option(help="base (Table 1) or instruct (Table 2).")] = "base",
    task: Annotated[str, typer.Option(help="Benchmark key for the accuracy axis, or mean (over benchmarks every model has).")] = "gsm8k",
    accuracy: Annotated[str, typer.Option(help="measured (results files) or paper (the paper's table).")] = "measured",
    speed: Annotated[str, typer.Option(help="measured (speed results) or paper (the paper's speed row).")] = "measured",
    results: Annotated[Path, typer.Option("--results", help="Results folder to read.")] = Path("results"),
    speed_dir: Annotated[Optional[Path], typer.Option(help="Speed results (default RESULTS/speed).")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Figure file (.png, .pdf or .svg; default RESULTS/speed/accuracy_vs_speed_STAGE.png).")] = None,
) -> None:
    """Accuracy against decoding speed, one point per system, Pareto frontier marked."""
    from .cli import handle_errors

    def make() -> None:
        from .report.plot import plot_accuracy_vs_speed

        path = plot_accuracy_vs_speed(stage=stage, task=task, accuracy=accuracy, speed=speed, results=results,
                                      speed_dir=speed_dir or results / "speed", output=output)
        typer.echo(f"wrote {path}", err=True)

    handle_errors(make)()
