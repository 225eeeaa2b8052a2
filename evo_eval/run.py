"""``evo-eval run``: one model card over a suite, one ``simple_evaluate`` call per benchmark.

Order of work: resolve everything that can be wrong (card, stage, suite, tasks, checkpoint, data
mirror) before loading a model, so bad input costs nothing; then for each benchmark in the paper's
order, skip it if its results file is already there (``--force`` redoes it), otherwise evaluate it
through the request journal (so a killed run redoes only unfinished requests) and write the results
file atomically. Autoregressive cards run through lm-eval's own HF backend; every other family
through its adapter on the shared base.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .cards import ModelCard, get_card
from .errors import CheckpointError, DataError, UserError
from .journal import Journal, JournalLM
from .paths import tasks_dir
from .store import atomic_write_text, journal_dir, provenance, read_result, result_path, sha256_text, to_json
from .suites import SuiteEntry, check_stage, resolve

# lm-eval's default few-shot seed. Fixed, not tied to --seed, so every model sees the same shots.
FEWSHOT_SEED = 1234
CODE_BENCHMARKS = {"humaneval", "humaneval_fim", "mbpp"}


@dataclass
class RunOptions:
    model: str
    suite: str = "all"
    stage: str | None = None
    tasks: list[str] | None = None
    limit: int | float | None = None
    shots: int | None = None
    checkpoint: str | None = None
    data_dir: Path | None = None
    output: Path = Path("results")
    batch_size: int | str = 1
    device: str | None = None
    dtype: str | None = None
    seed: int = 1234
    force: bool = False
    allow_code_exec: bool = False
    skip_missing: bool = False
    bootstrap_iters: int = 1000
    gen_kwargs: dict[str, Any] | None = None
    quiet: bool = False  # hide lm-eval's own progress bars (the CLI shows its own)
    model_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchmarkOutcome:
    benchmark: str
    status: str  # "done" | "skipped" | "missing-data" | "needs-opt-in" | "failed"
    path: Path | None = None
    score: float | None = None
    message: str = ""
    reused: int = 0
    computed: int = 0
    wall_s: float = 0.0


@dataclass
class RunSummary:
    card: ModelCard
    stage: str
    outcomes: list[BenchmarkOutcome]

    @property
    def exit_code(self) -> int:
        return 2 if any(o.status in ("missing-data", "failed") for o in self.outcomes) else 0


# ---- checking the inputs -------------------------------------------------------------------------


def resolve_stage(card: ModelCard, stage: str | None) -> str:
    if stage is None:
        return card.stage
    check_stage(stage)
    if stage != card.stage:
        sibling = card.name + "-instruct" if stage == "instruct" else card.name.removesuffix("-instruct")
        raise UserError(f"model '{card.name}' is the {card.stage} card but --stage {stage} was given",
                        f"use --model {sibling} for the {stage} stage")
    return stage


def resolve_checkpoint(card: ModelCard, checkpoint: str | None) -> str:
    """A user checkpoint must be a folder that exists; the card's own is a hub id (or a local path)."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"checkpoint folder {checkpoint} does not exist",
                                  "pass --checkpoint DIR with a save_pretrained folder")
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{checkpoint} has no config.json, so it is not a save_pretrained folder",
                                  "point --checkpoint at the folder that holds config.json and the weights")
        return str(path.resolve())
    if card.needs_checkpoint:
        raise CheckpointError(f"model '{card.name}' has no public weights",
                              "pass --checkpoint DIR with a save_pretrained folder of its architecture")
    return card.checkpoint


def resolve_data_dir(data_dir: Path | None) -> Path | None:
    from .paths import default_data_dir

    chosen = data_dir if data_dir is not None else default_data_dir()
    if chosen is None:
        return None
    chosen = Path(chosen).expanduser()
    if not chosen.is_dir():
        raise DataError(f"data folder {chosen} does not exist",
                        "create it with `evo-eval data import SRC --dest DIR`, or drop --data-dir to use the hub")
    from .data import verify_mirror

    verify_mirror(chosen)
    return chosen.resolve()


# ---- building the model ------------------------------------------------------------------------------


def build_lm(card: ModelCard, checkpoint: str, options: RunOptions):
    """The lm-eval LM for a card: lm-eval's HF backend for AR cards, our adapter otherwise."""
    if card.is_hf:
        from .adapters.hf import RankedHFLM

        dtype = options.dtype or ("float32" if (options.device or _default_device()) == "cpu" else card.dtype)
        return RankedHFLM(
            pretrained=checkpoint, revision=None if options.checkpoint else card.revision, dtype=dtype,
            device=options.device or _default_device(), batch_size=options.batch_size, **options.model_args,
        )
    from .adapters import adapter_class

    cls = adapter_class(card.family)
    return cls(pretrained=checkpoint, card=card, revision=None if options.checkpoint else card.revision,
               device=options.device, dtype=options.dtype, batch_size=options.batch_size, seed=options.seed,
               **options.model_args)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_identity(card: ModelCard, checkpoint: str, lm: Any, options: RunOptions) -> dict[str, Any]:
    """What makes two runs' responses interchangeable; part of every journal key."""
    from .store import package_versions

    versions = package_versions(("evo-eval", "lm_eval", "torch", "transformers"))
    return {
        "card": card.to_dict() | {"path": None},
        "checkpoint": checkpoint,
        "dtype": str(getattr(lm, "dtype", options.dtype)),
        "device_type": str(getattr(lm, "device", options.device or "")).split(":")[0],
        "batch_size": str(options.batch_size),
        "seed": options.seed,
        "decoding": lm.decoding_settings() if hasattr(lm, "decoding_settings") else None,
        "model_args": options.model_args,
        "versions": versions,
    }


# ---- one benchmark --------------------------------------------------------------------------------


def _task_manager(data_dir: Path | None):
    from lm_eval.tasks import TaskManager

    metadata = {"data_dir": str(data_dir)} if data_dir else {}
    # Our tasks are self-contained: skipping lm-eval's 14k built-in YAMLs saves seconds per run.
    return TaskManager(include_path=str(tasks_dir()), include_defaults=False, metadata=metadata)


def main_score(results: dict[str, Any], task: str, metric: str) -> float | None:
    for section in ("groups", "results"):
        block = results.get(section, {}).get(task)
        if block and metric in block and isinstance(block[metric], (int, float)):
            return float(block[metric])
    return None


def prompt_hashes(samples: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, str]]:
    """{leaf task: {doc_id: hash of the rendered prompt}} from lm-eval's logged samples."""
    out: dict[str, dict[str, str]] = {}
    for task, rows in samples.items():
        per_doc = out.setdefault(task, {})
        for row in rows:
            args = row.get("arguments") or []
            first = args[0] if args else None
            context = first[0] if isinstance(first, (list, tuple)) and first else str(first)
            per_doc[str(row.get("doc_id"))] = sha256_text(str(context))
    return out


def protocol_fingerprint(results: dict[str, Any], shots: int, data_manifest: str | None) -> str:
    """Hash of what defines the matched protocol for a benchmark: task configs, shots and data.

    Equal fingerprints mean equal prompt templates, few-shot sources and documents, even where each
    post-trained model wraps the prompt in its own chat template.
    """
    configs = {name: {k: v for k, v in cfg.items() if k not in ("metadata",)}
               for name, cfg in sorted(results.get("configs", {}).items())}
    return sha256_text(to_json([configs, shots, data_manifest]))


def evaluate_benchmark(lm: Any, entry: SuiteEntry, card: ModelCard, options: RunOptions, task_manager: Any,
                       journal: Journal) -> dict[str, Any] | None:
    import lm_eval

    if hasattr(lm, "benchmark"):
        lm.benchmark = entry.key
    if hasattr(lm, "records"):
        lm.records.clear()
    wrapped = JournalLM(lm, journal, quiet=options.quiet)
    started = time.time()
    results = lm_eval.simple_evaluate(
        model=wrapped, tasks=[entry.task], num_fewshot=entry.shots, task_manager=task_manager,
        limit=options.limit, bootstrap_iters=options.bootstrap_iters, log_samples=True,
        apply_chat_template=card.chat_template, fewshot_as_multiturn=card.chat_template,
        gen_kwargs=options.gen_kwargs, confirm_run_unsafe_code=options.allow_code_exec,
        random_seed=options.seed, numpy_random_seed=options.seed, torch_random_seed=options.seed,
        fewshot_random_seed=FEWSHOT_SEED,
    )
    wall = time.time() - started
    journal.close()
    if results is None:  # not rank 0
        return None
    return {"results": results, "wall_s": wall, "reused": wrapped.reused, "computed": wrapped.computed,
            "records": [vars(r) for r in getattr(lm, "records", [])]}


def build_record(entry: SuiteEntry, card: ModelCard, checkpoint: str, lm: Any, options: RunOptions,
                 outcome: dict[str, Any], data_dir: Path | None) -> dict[str, Any]:
    from .store import KIND, SCHEMA_VERSION, device_info

    results = outcome["results"]
    samples = results.pop("samples", {})
    metric = entry.benchmark.metric[entry.stage]
    manifest = _manifest_hash(data_dir)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "model": card.name,
        "column": card.column,
        "system": card.system,
        "stage": entry.stage,
        "benchmark": entry.key,
        "task": entry.task,
        "shots": entry.shots,
        "mode": entry.mode,
        "metric": metric,
        "score": main_score(results, entry.task, metric),
        "limit": options.limit,
        "prompt_hashes": prompt_hashes(samples),
        "protocol": protocol_fingerprint(results, entry.shots, manifest),
        "chat_template": card.chat_template,
        "decoding": lm.decoding_settings() if hasattr(lm, "decoding_settings") else
        {"sampler": "hf-generate", "gen_kwargs": options.gen_kwargs},
        "requests": {"reused_from_journal": outcome["reused"], "computed": outcome["computed"],
                     "per_request": outcome["records"]},
        "lm_eval": results,
        "samples": samples,
        "provenance": provenance(
            checkpoint=checkpoint, revision=None if options.checkpoint else card.revision,
            dtype=str(getattr(lm, "dtype", options.dtype)), device=device_info(options.device),
            seeds={"random": options.seed, "numpy": options.seed, "torch": options.seed, "fewshot": FEWSHOT_SEED},
            shots=entry.shots, limit=options.limit, data_dir=str(data_dir) if data_dir else "hub",
            data_manifest_sha256=manifest, wall_time_s=outcome["wall_s"], world_size=getattr(lm, "world_size", 1),
            weights="checkpoint",
        ),
    }


def _manifest_hash(data_dir: Path | None) -> str | None:
    if data_dir is None:
        return None
    manifest = data_dir / "manifest.json"
    return sha256_text(manifest.read_text(encoding="utf-8")) if manifest.is_file() else None


# ---- the run --------------------------------------------------------------------------------------


def plan(options: RunOptions) -> tuple[ModelCard, str, list[SuiteEntry], str, Path | None]:
    """Everything that can be wrong with the input, checked before any model is loaded."""
    card = get_card(options.model)
    stage = resolve_stage(card, options.stage)
    entries = resolve(options.suite, stage, options.tasks, options.shots)
    checkpoint = resolve_checkpoint(card, options.checkpoint)
    if options.limit is not None and options.limit <= 0:
        raise UserError(f"--limit must be positive, got {options.limit}", "pass a positive number of documents")
    data_dir = resolve_data_dir(options.data_dir)
    return card, stage, entries, checkpoint, data_dir


def _data_missing(entry: SuiteEntry, data_dir: Path | None) -> str | None:
    if data_dir is None:
        return None
    from .data import mirror_has

    if mirror_has(data_dir, entry.key):
        return None
    if entry.key == "gpqa":
        return ("GPQA is not in the data mirror: it needs the gated hub dataset Idavidrein/gpqa (accept its "
                "terms, `huggingface-cli login`, run without --data-dir) or a mirror that holds it")
    return f"{entry.benchmark.label} is not in the data mirror {data_dir}; re-run `evo-eval data import SRC`"


def run(options: RunOptions, on_event: Callable[[str, SuiteEntry, BenchmarkOutcome | None], None] | None = None
        ) -> RunSummary:
    card, stage, entries, checkpoint, data_dir = plan(options)
    notify = on_event or (lambda *_: None)
    outcomes: list[BenchmarkOutcome] = []
    todo: list[SuiteEntry] = []
    for entry in entries:
        path = result_path(options.output, stage, card.name, entry.key)
        if path.exists() and not options.force:
            stored = read_result(path)  # a corrupt file stops the run here, before any work
            outcomes.append(BenchmarkOutcome(entry.key, "skipped", path, stored.score, "already done"))
            notify("skipped", entry, outcomes[-1])
            continue
        missing = _data_missing(entry, data_dir)
        if missing:
            outcomes.append(BenchmarkOutcome(entry.key, "missing-data" if not options.skip_missing else "skipped",
                                             None, None, missing))
            notify("missing", entry, outcomes[-1])
            continue
        if entry.key in CODE_BENCHMARKS and not options.allow_code_exec:
            outcomes.append(BenchmarkOutcome(entry.key, "needs-opt-in", None, None,
                                             f"{entry.benchmark.label} executes model-written code; pass "
                                             "--allow-code-exec to run it in the sandbox"))
            notify("opt-in", entry, outcomes[-1])
            continue
        todo.append(entry)
    if not todo:
        return RunSummary(card, stage, _in_order(entries, outcomes))

    if options.allow_code_exec:
        os.environ["EVO_EVAL_ALLOW_CODE_EXEC"] = "1"
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    lm = build_lm(card, checkpoint, options)
    identity = run_identity(card, checkpoint, lm, options)
    task_manager = _task_manager(data_dir)
    for entry in todo:
        notify("start", entry, None)
        path = result_path(options.output, stage, card.name, entry.key)
        jdir = journal_dir(options.output, stage, card.name)
        if options.force:
            for old in jdir.glob(f"{entry.key}.rank*.jsonl"):
                old.unlink()
        journal = Journal(jdir, entry.key, identity | {"benchmark": entry.key, "shots": entry.shots,
                                                       "limit": options.limit, "gen_kwargs": options.gen_kwargs},
                          rank=getattr(lm, "rank", 0))
        outcome = evaluate_benchmark(lm, entry, card, options, task_manager, journal)
        if outcome is not None:
            record = build_record(entry, card, checkpoint, lm, options, outcome, data_dir)
            atomic_write_text(path, to_json(record))
            done = BenchmarkOutcome(entry.key, "done", path, record["score"], "", outcome["reused"],
                                    outcome["computed"], outcome["wall_s"])
        else:
            done = BenchmarkOutcome(entry.key, "done", None, None, f"rank {lm.rank}: results written by rank 0")
        lm.barrier()
        outcomes.append(done)
        notify("done", entry, done)
    return RunSummary(card, stage, _in_order(entries, outcomes))


def _in_order(entries: list[SuiteEntry], outcomes: list[BenchmarkOutcome]) -> list[BenchmarkOutcome]:
    order = {e.key: i for i, e in enumerate(entries)}
    return sorted(outcomes, key=lambda o: order[o.benchmark])
