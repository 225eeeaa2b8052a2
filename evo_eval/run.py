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

from .ablation import lm_for_entry
from .cards import ModelCard, get_card
from .checks import (_task_manager, check_gen_kwargs, check_shots_pool, check_output, check_tasks, resolve_checkpoint,
                     resolve_data_dir, resolve_stage)
from .errors import EXIT_INCOMPLETE, CheckpointError, UserError, first_line
from .journal import BATCHES_PER_CHUNK, Journal, JournalLM
# FEWSHOT_SEED: lm-eval's default few-shot seed, fixed (not tied to --seed) so every model sees the same shots.
from .data.prompts import FEWSHOT_SEED
from .devices import resolve_device, resolve_dtype
from .run_checks import check_card_tokenizer, check_card_values, check_values, output_locks
from .chat import check_chat_template
from .fewshot import per_document_shots
from .progress import RequestProgress, quiet_git_describe
from .precision import check_dtype, dtype_change, effective_dtype
from .fingerprint import SUPERSEDED, benchmark_fingerprint, differences, folder_hash, supersede
from .record import CODE_BENCHMARKS, _manifest_hash, build_record
from .store import atomic_write_text, journal_dir, read_result, result_path, to_json
from .suites import SuiteEntry, resolve, use_include_path



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
    include_path: Path | None = None  # the user's own task YAMLs (user_tasks.py)


@dataclass
class BenchmarkOutcome:
    benchmark: str
    status: str  # "done" | "skipped" | "missing-data" | "no-data" (skipped as asked) | "needs-opt-in" | "failed"
    path: Path | None = None
    score: float | None = None
    message: str = ""
    reused: int = 0
    computed: int = 0
    wall_s: float = 0.0
    model: str = ""  # the results folder's model name (a card, or card@variant in the ablation suite)


@dataclass
class RunSummary:
    card: ModelCard
    stage: str
    outcomes: list[BenchmarkOutcome]
    accept_incomplete: bool = False  # --skip-missing: benchmarks skipped for want of data or opt-in are fine

    @property
    def exit_code(self) -> int:
        """0 complete (or incomplete as accepted), 2 an error, EXIT_INCOMPLETE a suite cut short by a missing opt-in."""
        if any(o.status in ("missing-data", "failed") for o in self.outcomes):
            return 2
        if not self.accept_incomplete and any(o.status == "needs-opt-in" for o in self.outcomes):
            return EXIT_INCOMPLETE
        return 0


# ---- building the model ------------------------------------------------------------------------------


def build_lm(card: ModelCard, checkpoint: str, options: RunOptions):
    """The lm-eval LM for a card: lm-eval's HF backend for AR cards, our adapter otherwise."""
    if card.is_hf:
        from .adapters.hf import RankedHFLM

        device = resolve_device(options.device)
        dtype = str(resolve_dtype(options.dtype, device, card.dtype)).removeprefix("torch.")
        try:
            lm = RankedHFLM(
                pretrained=checkpoint, revision=None if options.checkpoint else card.revision, dtype=dtype,
                device=str(device), batch_size=options.batch_size, **_card_tokenizer(card), **options.model_args,
            )
        except TypeError as exc:  # transformers hands unknown model_args to the model's constructor
            raise UserError(f"--model-args: {first_line(exc, 300)}", "remove the setting; HF cards take HFLM's "
                            "arguments, e.g. max_length=2048") from exc
        except (OSError, RuntimeError, ValueError, ImportError) as exc:
            # Missing or truncated weights, weights of another shape than config.json, an unreachable hub.
            # transformers words a shape mismatch as "look at the above report", a table we keep quiet.
            reason = ("its weights do not have the shapes its config.json gives"
                      if "ignore_mismatched_sizes" in str(exc) else first_line(exc, 300))
            raise CheckpointError(f"cannot load {checkpoint}: {reason}",
                                  "pass --checkpoint DIR with a complete save_pretrained folder (config.json, "
                                  "weights, tokenizer) of the card's architecture") from exc
        except Exception as exc:
            if type(exc).__name__ != "SafetensorError":  # safetensors' own error class is not importable
                raise
            raise CheckpointError(f"cannot load {checkpoint}: the weights file is corrupt ({first_line(exc, 300)})",
                                  "restore the checkpoint's *.safetensors files") from exc
        _check_vocab(lm.tokenizer, lm.model, checkpoint)
        return lm
    from .adapters import adapter_class

    cls = adapter_class(card.family)
    try:
        return cls(pretrained=checkpoint, card=card, revision=None if options.checkpoint else card.revision,
                   device=options.device, dtype=options.dtype, batch_size=options.batch_size, seed=options.seed,
                   **_card_tokenizer(card), **options.model_args)
    except (ValueError, TypeError) as exc:  # the adapters reject unknown or ill-typed settings this way
        raise UserError(f"--model-args: {first_line(exc, 300)}", "fix or remove the setting") from exc


def _card_tokenizer(card: ModelCard) -> dict[str, str]:
    """A card's `tokenizer:` (hub id or folder) is what every backend loads, unless --model-args
    names another; without it, the checkpoint's own."""
    return {"tokenizer": card.tokenizer} if card.tokenizer else {}


def _check_vocab(tokenizer: Any, model: Any, checkpoint: str) -> None:
    """A tokenizer with ids the embedding lacks fails with an index error mid-run; say so before."""
    embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > embeddings:
        raise CheckpointError(f"the tokenizer of {checkpoint} has {len(tokenizer)} tokens but the model embeds "
                              f"only {embeddings}", "pass the tokenizer the checkpoint was trained with")


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


def evaluate_arguments(entry: SuiteEntry, card: ModelCard, options: RunOptions, task_manager: Any) -> dict[str, Any]:
    """simple_evaluate's arguments for one benchmark: the documents, shots, limit and templates a run
    uses (``plan`` renders its requests from the same call)."""
    return dict(
        tasks=[entry.task], num_fewshot=entry.shots, task_manager=task_manager,
        limit=options.limit, bootstrap_iters=options.bootstrap_iters, log_samples=True,
        apply_chat_template=card.chat_template, fewshot_as_multiturn=card.chat_template,
        gen_kwargs=options.gen_kwargs, confirm_run_unsafe_code=options.allow_code_exec,
        random_seed=options.seed, numpy_random_seed=options.seed, torch_random_seed=options.seed,
        fewshot_random_seed=FEWSHOT_SEED,
    )


def evaluate_benchmark(lm: Any, entry: SuiteEntry, card: ModelCard, options: RunOptions, task_manager: Any,
                       journal: Journal, progress: Any = None) -> dict[str, Any] | None:
    import lm_eval

    if hasattr(lm, "records"):
        lm.records.clear()
    # lm-eval's HF backend batches, and batched results depend on the batch: with a fixed batch size the
    # journal calls it with fixed chunks, so a resumed run equals an uninterrupted one (journal.py);
    # "auto" sizes have no such guarantee. Our adapters seed every request from itself; at batch 1 they
    # are given exactly the missing requests, batched they get fixed chunks too, so what shares a
    # forward never depends on what a killed run left (adapters/request_batches.py).
    if card.is_hf:
        chunk = options.batch_size * BATCHES_PER_CHUNK if isinstance(options.batch_size, int) else None
    else:  # the size our adapter resolved when it was built ("auto" included)
        chunk = lm.batch_size * BATCHES_PER_CHUNK if lm.batch_size > 1 else None
    wrapped = JournalLM(lm, journal, quiet=options.quiet, chunk_size=chunk, progress=progress)
    started = time.time()
    with per_document_shots(FEWSHOT_SEED), quiet_git_describe():  # same prompts on 1 or N processes (fewshot.py)
        results = lm_eval.simple_evaluate(model=wrapped, **evaluate_arguments(entry, card, options, task_manager))
    wall = time.time() - started
    journal.close()
    if progress is not None:
        progress.publish()
    # Every rank's counts and per-request stats, so the results say what the whole run did.
    gathered = wrapped.gather_object((wrapped.reused, wrapped.computed, wrapped.records), dst=0)
    if progress is not None:
        progress.finish()
    if results is None:  # not rank 0
        return None
    # The wrapper's records: every request's stats in request order (by rank under data parallelism),
    # read back from the journal for requests an interrupted run already answered.
    return {"results": results, "wall_s": wall, "reused": sum(g[0] for g in gathered),
            "computed": sum(g[1] for g in gathered), "records": [r for g in gathered for r in g[2]]}


# ---- the run --------------------------------------------------------------------------------------


def plan(options: RunOptions) -> tuple[ModelCard, str, list[SuiteEntry], str, Path | None]:
    """Everything that can be wrong with the input, checked before any model is loaded."""
    card = get_card(options.model)
    stage = resolve_stage(card, options.stage)
    use_include_path(options.include_path)
    entries = resolve_entries(card, stage, options)
    checkpoint = resolve_checkpoint(card, options.checkpoint)
    check_values(options.limit, options.seed, options.bootstrap_iters)
    check_card_tokenizer(card)
    check_card_values(card)
    check_chat_template(card, checkpoint)
    if options.limit is not None and options.limit <= 0:
        raise UserError(f"--limit must be positive, got {options.limit}", "pass a positive number of documents")
    resolve_device(options.device)
    check_dtype(options.dtype)
    check_gen_kwargs(options.gen_kwargs)
    data_dir = resolve_data_dir(options.data_dir)
    check_tasks(entries, data_dir, options.include_path)
    check_shots_pool(entries, options.shots, data_dir, options.include_path)
    check_output(options.output, stage, card.name)  # last: the only check that creates anything
    return card, stage, entries, checkpoint, data_dir


def _data_missing(entry: SuiteEntry, data_dir: Path | None) -> str | None:
    if data_dir is None:
        return None
    from .ablation import PPL_DATA, PPL_TASK
    from .data.mirror import mirror_problem

    return mirror_problem(data_dir, PPL_DATA if entry.task == PPL_TASK else entry.key, entry.shots)


def resolve_entries(card: ModelCard, stage: str, options: RunOptions) -> list[SuiteEntry]:
    """The suite's benchmarks; ``ablation`` is Figure 3's (MMLU, GSM8K, perplexity), for Evo cards only."""
    if options.suite != "ablation":
        return resolve(options.suite, stage, options.tasks, options.shots)
    from .ablation import ablation_entries

    if card.family != "evo":
        raise UserError(f"suite 'ablation' varies Evo's progression times; '{card.name}' is a {card.family} model",
                        "run it with an Evo card, e.g. --model evo-8b --checkpoint DIR")
    entries = ablation_entries(stage, options.shots)
    if options.tasks:
        known = [e.key for e in entries]
        unknown = [t for t in options.tasks if t not in known]
        if unknown:
            raise UserError(f"task(s) {', '.join(unknown)} are not in suite 'ablation'", f"choose from {', '.join(known)}")
        entries = [e for e in entries if e.key in options.tasks]
    return entries


def run_variants(card: ModelCard, options: RunOptions) -> list[tuple[str, dict[str, Any] | None]]:
    """(results model name, settings overrides): the card itself, or one entry per ablation variant."""
    if options.suite != "ablation":
        return [(card.name, None)]
    from .ablation import suite_variants

    return suite_variants(card)


def _fingerprint(card: ModelCard, checkpoint: str, entry: SuiteEntry, options: RunOptions, data_dir: Path | None,
                 overrides: dict[str, Any] | None) -> dict[str, Any]:
    index = _task_manager(data_dir, options.include_path).task_index
    yaml_path = getattr(index.get(entry.task), "yaml_path", None) if entry.task in index else None
    return benchmark_fingerprint(
        card=card, checkpoint=checkpoint, revision=None if options.checkpoint else card.revision,
        benchmark=entry.key, task=entry.task, shots=entry.shots, limit=options.limit,
        dtype=effective_dtype(card, options.dtype, options.device),
        seed=options.seed, model_args=options.model_args, gen_kwargs=options.gen_kwargs,
        data_manifest=_manifest_hash(data_dir), task_files=folder_hash(Path(yaml_path).parent if yaml_path else None),
        overrides=overrides)


def _triage(entry: SuiteEntry, model: str, stage: str, options: RunOptions, data_dir: Path | None,
            fingerprint: dict[str, Any] | None = None) -> BenchmarkOutcome | None:
    """Why a benchmark needs no model work now (done earlier, no data, no opt-in), or None to run it.

    A results file is reused only when its fingerprint equals this run's (docs/resume.md); otherwise
    the outcome "stale" says what changed, and the benchmark runs.
    """
    path = result_path(options.output, stage, model, entry.key)
    if path.exists() and not options.force:
        stored = read_result(path)  # a corrupt file stops the run here, before any work
        changed = differences(stored.data.get("fingerprint"), fingerprint) if fingerprint else []
        if not changed:
            return BenchmarkOutcome(entry.key, "skipped", path, stored.score, "already done", model=model)
        return BenchmarkOutcome(entry.key, "stale", path, stored.score,
                                f"{path} was made with other settings ({'; '.join(changed)}): re-running; the old "
                                f"file moves to {path.parent / SUPERSEDED}/", model=model)
    missing = _data_missing(entry, data_dir)
    if missing:
        return BenchmarkOutcome(entry.key, "missing-data" if not options.skip_missing else "no-data",
                                None, None, missing, model=model)
    if entry.key in CODE_BENCHMARKS and not options.allow_code_exec:
        return BenchmarkOutcome(entry.key, "needs-opt-in", None, None,
                                f"{entry.benchmark.label} executes model-written code; pass "
                                "--allow-code-exec to run it in the sandbox", model=model)
    return None


_EVENT = {"skipped": "skipped", "missing-data": "missing", "no-data": "missing", "needs-opt-in": "opt-in"}


def run(options: RunOptions, on_event: Callable[[str, SuiteEntry, BenchmarkOutcome | None], None] | None = None,
        planned: tuple | None = None) -> RunSummary:
    """Run a plan (``plan(options)``, computed here unless the caller already has it), holding
    the lock of every results folder it writes (run_checks.output_locks)."""
    planned = planned or plan(options)
    folders = [Path(options.output).expanduser() / planned[1] / model for model, _ in run_variants(planned[0], options)]
    with output_locks(folders):
        return _run(options, on_event, planned)


def _run(options: RunOptions, on_event: Callable[[str, SuiteEntry, BenchmarkOutcome | None], None] | None,
         planned: tuple) -> RunSummary:
    card, stage, entries, checkpoint, data_dir = planned
    notify = on_event or (lambda *_: None)
    outcomes: list[BenchmarkOutcome] = []
    pending: list[tuple[str, dict[str, Any] | None, list[SuiteEntry]]] = []
    fingerprints: dict[tuple[str, str], dict[str, Any]] = {}
    for model, overrides in run_variants(card, options):
        todo = []
        for entry in entries:
            fingerprints[model, entry.key] = _fingerprint(card, checkpoint, entry, options, data_dir, overrides)
            outcome = _triage(entry, model, stage, options, data_dir, fingerprints[model, entry.key])
            if outcome is not None and outcome.status == "stale":
                notify("stale", entry, outcome)
                outcome = None
            if outcome is None:
                todo.append(entry)
            else:
                outcomes.append(outcome)
                notify(_EVENT.get(outcome.status, "skipped"), entry, outcome)
        pending.append((model, overrides, todo))
    if not any(todo for _, _, todo in pending):
        return RunSummary(card, stage, _in_order(entries, outcomes), options.skip_missing)

    if options.allow_code_exec:
        os.environ["EVO_EVAL_ALLOW_CODE_EXEC"] = "1"
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    lm = build_lm(card, checkpoint, options)
    task_manager = _task_manager(data_dir, options.include_path)
    for model, overrides, todo in pending:
        if not todo:
            continue
        variant_lm = lm if overrides is None else lm.with_settings(**overrides)
        if overrides is not None:
            notify("variant", todo[0], BenchmarkOutcome("", "variant", message=model, model=model))
        outcomes += _evaluate_entries(card, stage, todo, checkpoint, data_dir, options, variant_lm,
                                      task_manager, model, notify, fingerprints)
    return RunSummary(card, stage, _in_order(entries, outcomes), options.skip_missing)


def _evaluate_entries(card: ModelCard, stage: str, todo: list[SuiteEntry], checkpoint: str, data_dir: Path | None,
                      options: RunOptions, lm: Any, task_manager: Any, model: str, notify: Callable,
                      fingerprints: dict[tuple[str, str], dict[str, Any]]) -> list[BenchmarkOutcome]:
    identity = run_identity(card, checkpoint, lm, options)
    outcomes = []
    for entry in todo:
        notify("start", entry, None)
        path = result_path(options.output, stage, model, entry.key)
        jdir = journal_dir(options.output, stage, model)
        if options.force:
            # Rank 0 alone clears, and everyone waits: a rank deleting files while another already
            # appends to its own would throw that rank's finished requests away.
            if getattr(lm, "rank", 0) == 0:
                for old in jdir.glob(f"{entry.key}.rank*.jsonl"):
                    old.unlink()
            lm.barrier()
        fingerprint = fingerprints[model, entry.key]
        # The fingerprint in the journal's identity: lines written under other settings (another
        # limit, checkpoint, data manifest, task definition, ...) are never reused.
        journal = Journal(jdir, entry.key, identity | {"benchmark": entry.key, "shots": entry.shots,
                                                       "limit": options.limit, "gen_kwargs": options.gen_kwargs,
                                                       "fingerprint": fingerprint["sha256"]},
                          rank=getattr(lm, "rank", 0))
        damaged = journal.report()
        if damaged:
            notify("journal", entry, BenchmarkOutcome(entry.key, "journal", None, None, damaged, model=model))
        # The card's settings for this benchmark apply (evo_eval/settings.py); lm-eval's HF backend has none.
        bench_lm = lm.with_settings(benchmark=entry.key) if hasattr(lm, "with_settings") else lm
        bench_lm = lm_for_entry(bench_lm, entry)  # the ablation's AR-limit perplexity scores with estimator=ar
        progress = RequestProgress(entry.key, jdir, getattr(lm, "rank", 0), getattr(lm, "world_size", 1),
                                   report=lambda snapshot, entry=entry: notify("progress", entry, snapshot))
        outcome = evaluate_benchmark(bench_lm, entry, card, options, task_manager, journal, progress)
        if outcome is not None:
            record = build_record(entry, card, checkpoint, bench_lm, options, outcome, data_dir, model=model)
            record["fingerprint"] = fingerprint
            record["provenance"]["card_dtype"] = card.dtype
            record["provenance"]["dtype_change"] = dtype_change(card, options.dtype, options.device)
            supersede(path, fingerprint)
            atomic_write_text(path, to_json(record))
            done = BenchmarkOutcome(entry.key, "done", path, record["score"], "", outcome["reused"],
                                    outcome["computed"], outcome["wall_s"], model=model)
        else:
            done = BenchmarkOutcome(entry.key, "done", None, None, f"rank {lm.rank}: results written by rank 0",
                                    model=model)
        lm.barrier()
        outcomes.append(done)
        notify("done", entry, done)
    return outcomes


def _in_order(entries: list[SuiteEntry], outcomes: list[BenchmarkOutcome]) -> list[BenchmarkOutcome]:
    """Outcomes by variant (in run order), then benchmark in the suite's order."""
    order = {e.key: i for i, e in enumerate(entries)}
    models = list(dict.fromkeys(o.model for o in outcomes))
    return sorted(outcomes, key=lambda o: (models.index(o.model), order[o.benchmark]))
