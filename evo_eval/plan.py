"""``evo-eval plan``: what a suite will cost a model card, before any weight is loaded.

For each benchmark the suite's real requests are rendered by the same ``simple_evaluate`` call ``run``
makes (``run.evaluate_arguments``: documents, shots, few-shot seed, limit, chat template), answered
by a collector that keeps the requests and stops lm-eval before any model work. Each request then
goes through the card's decoding and likelihood settings, merged exactly as the family's adapter
merges them (``EvalAdapter._split_settings`` / ``sampler_config_for``), into the family's own cost
statement (``Sampler.work`` / ``Scorer.work``, evo_eval/work.py): forwards, token positions computed
and FLOPs. One-token options after one context count one forward where the estimator shares it
(adapters/batching.py; lm-eval's HF backend for AR cards).

Tokens: the checkpoint's tokenizer when it is on this machine (``--checkpoint DIR``, or the card's
hub id in the local cache), else the proxy of ``speed_prompts`` (a lower bound on BPE lengths),
labelled. Generation is counted at ``max_gen_toks`` (or the sampler's fixed canvas) with no early
stop, so generation figures are upper bounds; where a count depends on the data the family says so
(``Work.exact``) and the table marks it with "≤" or "≈".

Batch size: the counts are those of ``--batch-size 1``. A larger batch leaves forwards (NFE), token
positions and FLOPs per request unchanged: the non-HF adapters stack only requests of exactly equal
shape into one network call (adapters/request_batches.py), and lm-eval's HF backend pads. What it
changes is the number of calls, so the weights are read fewer times; plan does not model which
requests will share a call, so for memory-bound calls (short generation steps) its device time is an
upper bound, while compute-bound calls (Monte-Carlo likelihood rows over long contexts) cost the same.

Device time: each forward call at the slower of reading the weights and computing its FLOPs, at rates
measured by ``evo-eval speed`` (``results/speed``: the device's measured matmul rate and datasheet
bandwidth, and the card's own achieved fraction where that card was timed) or, with ``--device``, a
named GPU's datasheet peaks (a floor, labelled so).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .cards import ModelCard
from .errors import UnknownNameError, UserError
from .suites import SuiteEntry
from .roofline import Rates, datasheet_rates, measured_rates
from .work import Work

DEFAULT_DEVICE = "A100 80GB"  # the paper times on one A100


@dataclass
class PlanOptions:
    model: str
    suite: str = "all"
    stage: str | None = None
    tasks: list[str] | None = None
    limit: int | float | None = None
    shots: int | None = None
    checkpoint: str | None = None
    data_dir: Path | None = None
    variant: str | None = None  # "cached": a second column with the sampler's cached variant
    device: str | None = None  # a datasheet GPU name instead of the measured rates
    speed_dir: Path = Path("results/speed")
    gen_kwargs: dict[str, Any] | None = None
    model_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Cost:
    """Totals of one benchmark (or suite) under one decoding."""

    nfe: float = 0.0
    calls: float = 0.0
    positions: float = 0.0
    flops: float = 0.0
    seconds: float = 0.0
    exact: bool = True
    notes: set[str] = field(default_factory=set)

    def add(self, work: Work, model: "ModelShape", rates: Rates) -> None:
        self.nfe += work.nfe
        self.calls += work.calls
        self.positions += work.positions
        self.flops += work.flops(model.dense_params, model.layers, model.width)
        self.seconds += work.seconds(model.weight_bytes, model.dense_params, model.layers, model.width,
                                     rates.bandwidth, rates.flop_rate)
        if not work.exact:
            self.exact = False
            self.notes.add(work.note)

    def merge(self, other: "Cost") -> None:
        for name in ("nfe", "calls", "positions", "flops", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.exact = self.exact and other.exact
        self.notes |= other.notes

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["notes"] = sorted(self.notes)
        return out


@dataclass
class BenchmarkPlan:
    benchmark: str
    mode: str
    shots: int
    documents: int
    requests: int
    prompt_tokens: int
    reference: Cost
    variant: Cost | None


@dataclass
class CardPlan:
    card: ModelCard
    stage: str
    tokenizer: str
    rates: Rates
    model: "ModelShape"
    benchmarks: list[BenchmarkPlan]
    variant: str | None

    def total(self, which: str = "reference") -> Cost:
        total = Cost()
        for b in self.benchmarks:
            cost = getattr(b, which)
            if cost is not None:
                total.merge(cost)
        return total

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "evo-eval/plan", "card": self.card.name, "stage": self.stage, "tokenizer": self.tokenizer,
            "rates": self.rates.as_dict(), "model": asdict(self.model), "variant": self.variant,
            "benchmarks": [{**{k: v for k, v in asdict(b).items() if k not in ("reference", "variant")},
                            "reference": b.reference.as_dict(),
                            "variant": b.variant.as_dict() if b.variant else None} for b in self.benchmarks],
            "total": self.total().as_dict(),
            "total_variant": self.total("variant").as_dict() if self.variant else None,
        }


@dataclass(frozen=True)
class ModelShape:
    params: int
    dense_params: int
    weight_bytes: int
    layers: int
    width: int
    max_length: int


# ---- the model's size, without weights ----------------------------------------------------------------


def model_shape(card: ModelCard) -> ModelShape:
    """Parameter counts of the card's architecture, built on the meta device (no memory, no weights)."""
    import torch

    from .devices import DTYPES
    from .families import model_module
    from .roofline import model_cost

    module = model_module(card.family)
    model = module.random_model(dict(card.shape), dtype=DTYPES.get(card.dtype, torch.bfloat16), device="meta")
    cost = model_cost(model, tied=bool(card.shape.get("tie_embeddings")))
    shape = card.shape
    # Our own layouts name them n_layers / d_model / max_seq_len; the Qwen2-layout stand-ins (Dream,
    # Fast-dLLM v2) keep their config.json names.
    max_length = int(shape.get("max_seq_len", shape.get("max_position_embeddings", 2048)))
    if card.family == "bd3lm":  # adapters/bd3lm.py: generation covers whole blocks
        max_length = max_length - int(shape.get("block_size", 1)) + 1
    return ModelShape(cost.params, cost.dense_params, cost.weight_bytes,
                      int(shape.get("n_layers", shape.get("num_hidden_layers"))),
                      int(shape.get("d_model", shape.get("hidden_size"))), max_length)


# ---- rates ----------------------------------------------------------------------------------------------


def rates_for(card: ModelCard, options: PlanOptions) -> Rates:
    if options.device:
        return datasheet_rates(options.device)
    return measured_rates(card, options.speed_dir) or datasheet_rates(DEFAULT_DEVICE)


# ---- tokenizer and request collection -------------------------------------------------------------------


class ProxyText:
    """The speed protocol's proxy tokenizer with the few methods lm-eval's request building needs."""

    def __init__(self, shape: dict[str, Any]):
        from .data.speed_prompts import ProxyTokenizer, proxy_limit

        vocab = int(shape.get("vocab_size", 32000))
        self.proxy = ProxyTokenizer(proxy_limit(shape, vocab))
        self.eos_token_id = int(shape.get("eos_token_id", vocab - 1))
        self.bos_token_id = self.eos_token_id
        self.chat_template = None
        self.name_or_path = "proxy"

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return ([self.bos_token_id] if add_special_tokens else []) + self.proxy.encode(text)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True, **_):
        # No template without the checkpoint's tokenizer: role-tagged turns of similar length.
        text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
        return text + ("<|assistant|>\n" if add_generation_prompt else "")


def plan_tokenizer(card: ModelCard, checkpoint: str | None) -> tuple[Any, str]:
    """The checkpoint's tokenizer where it is on this machine, else the labelled proxy."""
    from .data.speed_prompts import ProxyTokenizer

    name = checkpoint or card.checkpoint
    if name:
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(name), local_files_only=True)
            return tok, f"{name} ({type(tok).__name__})"
        except Exception:  # noqa: BLE001 - absent or unreadable: the proxy stands in, labelled
            pass
    return ProxyText(card.shape), ProxyTokenizer.label


class _Collected(Exception):
    """Raised by the collector once lm-eval hands it the requests: no model work follows."""


def _collector(tokenizer: Any, max_length: int):
    from lm_eval.api.model import TemplateLM

    class RequestCollector(TemplateLM):
        def __init__(self):
            super().__init__()
            self.tokenizer, self.requests = tokenizer, []

        @property
        def eot_token_id(self) -> int:
            return int(self.tokenizer.eos_token_id)

        @property
        def max_length(self) -> int:
            return max_length

        @property
        def tokenizer_name(self) -> str:
            return str(getattr(self.tokenizer, "name_or_path", "plan")).replace("/", "__")

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

        def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
            return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)

        def chat_template(self, chat_template: bool | str = False) -> str | None:
            return getattr(self.tokenizer, "chat_template", None) or ""

        def _collect(self, requests, disable_tqdm: bool = False):
            self.requests = list(requests)
            raise _Collected

        loglikelihood = loglikelihood_rolling = generate_until = _collect

        def _loglikelihood_tokens(self, requests, **kwargs):
            raise _Collected

    return RequestCollector()


def collect_requests(entry: SuiteEntry, card: ModelCard, options: PlanOptions, task_manager: Any, collector: Any) -> list:
    """The requests ``run`` would send for one benchmark, from run's own simple_evaluate arguments."""
    import lm_eval

    from .data.prompts import FEWSHOT_SEED
    from .fewshot import per_document_shots
    from .run import RunOptions, evaluate_arguments

    run_options = RunOptions(model=card.name, limit=options.limit, gen_kwargs=options.gen_kwargs, bootstrap_iters=0)
    collector.requests = []
    try:
        with per_document_shots(FEWSHOT_SEED):  # the shots run draws (evo_eval/fewshot.py)
            lm_eval.simple_evaluate(model=collector, **evaluate_arguments(entry, card, run_options, task_manager))
    except _Collected:
        return collector.requests
    raise UserError(f"lm-eval built no requests for {entry.task}", "check the task's data and --limit")


# ---- settings, as the family's adapter merges them ------------------------------------------------------


def family_settings(card: ModelCard, eos_token_id: int, model_args: dict[str, Any]):
    """The card's adapter holding settings only: no weights are loaded (``__init__`` would load them),
    so the merge of card, per-benchmark and model_args settings is the adapter's own code."""
    if card.is_hf:
        from .decoding.ar import ARConfig, ARSampler
        from .scoring.ar import ARScorer

        return SimpleNamespace(sampler=ARSampler(), scorer=ARScorer(), scorer_config=None, benchmark=None,
                               sampler_config_for=lambda kw: ARConfig(max_new_tokens=int(kw["max_gen_toks"]),
                                                                      eos_token_id=eos_token_id))
    from .adapters import adapter_class
    from .families import card_sampler, sampler_class, scorer_class

    cls = adapter_class(card.family)
    lm = cls.__new__(cls)
    lm.card, lm.seed, lm._max_gen_toks = card, 1234, 256
    lm.tokenizer = SimpleNamespace(eos_token_id=eos_token_id)
    lm.sampler_cls, lm.scorer_cls = sampler_class(card_sampler(card)), scorer_class(card.family)
    lm.sampler, lm.scorer, lm.benchmark = lm.sampler_cls(), lm.scorer_cls(), None
    lm._overrides = dict(model_args)
    try:
        lm._configure()
    except ValueError as exc:
        raise UserError(f"--model-args: {exc}", "fix or remove the setting") from None
    return lm


def with_variant(sampler: Any, config: Any, variant: str | None) -> Any | None:
    """The sampler config under a named variant (e.g. LLaDA's Fast-dLLM "cached"), None if it has none."""
    if variant in (None, "reference"):
        return config
    values = getattr(sampler, "variants", {}).get(variant)
    if values is None:
        return None
    return type(config).from_dict({**asdict(config), **values})


# ---- one benchmark -------------------------------------------------------------------------------------


def _truncate(ids: list[int], keep: int) -> list[int]:
    return ids[-keep:] if keep > 0 else ids[-1:]


def likelihood_items(collector: Any, requests: list, max_length: int) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) per scored sequence, as the adapters encode and truncate them."""
    from lm_eval import utils as lm_utils

    items = []
    for request in requests:
        if request.request_type == "loglikelihood_rolling":
            (string,) = request.args
            windows = lm_utils.get_rolling_token_windows(
                token_list=collector.tok_encode(string), prefix_token=collector.prefix_token_id,
                max_seq_len=max_length, context_len=1)
            items += [(list(c), list(t)) for c, t in map(lm_utils.make_disjoint_window, windows)]
            continue
        context, continuation = request.args
        if context == "":
            ctx, cont = [collector.prefix_token_id], collector.tok_encode(continuation)
        else:
            ctx, cont = collector._encode_pair(context, continuation)
        items.append((_truncate(ctx, max_length - len(cont)), cont))
    return items


def likelihood_cost(settings: Any, items: list[tuple[list[int], list[int]]], card: ModelCard,
                    model: ModelShape, rates: Rates) -> Cost:
    cost = Cost()
    shared = settings.scorer.shares_choices(settings.scorer_config)
    seen: set[tuple[int, ...]] = set()
    for ctx, cont in items:
        if shared and len(cont) == 1:
            key = tuple(ctx)
            if key in seen:
                continue  # this context's forward is already counted
            seen.add(key)
        cost.add(settings.scorer.work(settings.scorer_config, len(ctx), len(cont), card.shape), model, rates)
    return cost


def generation_cost(settings: Any, collector: Any, requests: list, card: ModelCard, model: ModelShape,
                    rates: Rates, variant: str | None) -> tuple[Cost, Cost | None, int]:
    from lm_eval.models.utils import normalize_gen_kwargs

    reference, other, prompt_tokens = Cost(), (Cost() if variant else None), 0
    bos = not card.is_hf or getattr(collector.tokenizer, "bos_token_id", None) is not None
    for request in requests:
        context, gen_kwargs = request.args
        kwargs = normalize_gen_kwargs(dict(gen_kwargs), default_max_gen_toks=256)
        config = settings.sampler_config_for(kwargs)
        budget = max(1, model.max_length - config.max_new_tokens)
        prompt = len(collector.tok_encode(context, add_special_tokens=bos)[-budget:])
        prompt_tokens += prompt
        reference.add(settings.sampler.work(config, prompt, card.shape), model, rates)
        if other is not None:
            varied = with_variant(settings.sampler, config, variant)
            if varied is None:
                other = None
            else:
                other.add(settings.sampler.work(varied, prompt, card.shape), model, rates)
    if requests:
        reference.exact = False
        reference.notes.add("upper bound: every answer runs to max_gen_toks (or the fixed canvas)")
    return reference, other, prompt_tokens


def plan_benchmark(entry: SuiteEntry, card: ModelCard, options: PlanOptions, task_manager: Any, collector: Any,
                   settings: Any, model: ModelShape, rates: Rates) -> BenchmarkPlan:
    requests = collect_requests(entry, card, options, task_manager, collector)
    if hasattr(settings, "with_settings"):  # the card's settings for this benchmark (evo_eval/settings.py)
        settings = settings.with_settings(benchmark=entry.key)
    docs = len({(r.task_name, r.doc_id) for r in requests})
    generation = [r for r in requests if r.request_type == "generate_until"]
    scored = [r for r in requests if r.request_type != "generate_until"]
    reference, variant, prompt_tokens = generation_cost(settings, collector, generation, card, model, rates, options.variant)
    if scored:
        items = likelihood_items(collector, scored, model.max_length)
        scoring = likelihood_cost(settings, items, card, model, rates)
        prompt_tokens += sum(len(c) for c, _ in items)
        reference.merge(scoring)
        if variant is not None:
            variant.merge(scoring)  # the variants change decoding only
    return BenchmarkPlan(entry.key, entry.mode, entry.shots, docs, len(requests), prompt_tokens, reference, variant)


# ---- the plan ------------------------------------------------------------------------------------------


def plan_card(options: PlanOptions, on_benchmark=None) -> CardPlan:
    from .cards import get_card
    from .checks import _task_manager, check_gen_kwargs, check_tasks, resolve_data_dir, resolve_stage
    from .run import RunOptions, resolve_entries

    card = get_card(options.model)
    stage = resolve_stage(card, options.stage)
    entries = resolve_entries(card, stage, RunOptions(model=card.name, suite=options.suite, tasks=options.tasks,
                                                      shots=options.shots))
    if options.limit is not None and options.limit <= 0:
        raise UserError(f"--limit must be positive, got {options.limit}", "pass a positive number of documents")
    if options.variant not in (None, "reference", "cached"):
        raise UnknownNameError("variant", options.variant, ["reference", "cached"])
    check_gen_kwargs(options.gen_kwargs)
    rates = rates_for(card, options)
    data_dir = resolve_data_dir(options.data_dir)
    check_tasks(entries, data_dir)
    model = model_shape(card)
    tokenizer, tokenizer_label = plan_tokenizer(card, options.checkpoint)
    collector = _collector(tokenizer, model.max_length)
    settings = family_settings(card, collector.eot_token_id, options.model_args)
    task_manager = _task_manager(data_dir)
    benchmarks = []
    for entry in entries:
        benchmarks.append(plan_benchmark(entry, card, options, task_manager, collector, settings, model, rates))
        if on_benchmark:
            on_benchmark(benchmarks[-1])
    return CardPlan(card, stage, tokenizer_label, rates, model, benchmarks, options.variant)
