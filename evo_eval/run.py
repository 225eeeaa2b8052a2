"""``evo-eval run``: one model card over a suite, one ``simple_evaluate`` call per benchmark.

Order of work: resolve everything that can be wrong (card, stage, suite, tasks, checkpoint, data
mirror) before loading a model, so bad input costs nothing; then for each benchmark in the paper's
order, skip it if its results file is already there (``--force`` redoes it), otherwise evaluate it
through the request journal (so a killed run redoes only unfinished requests) and write the results
file atomically. Autoregressive cards run through lm-eval's own HF backend; every other family
through its adapter on the shared base.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from .ablation import lm_for_entry
from .cards import ModelCard, get_card
from .errors import CheckpointError, DataError, ResultsError, UnknownNameError, UserError
from .journal import BATCHES_PER_CHUNK, Journal, JournalLM
from .paths import tasks_dir
# FEWSHOT_SEED: lm-eval's default few-shot seed, fixed (not tied to --seed) so every model sees the same shots.
from .data_prompts import FEWSHOT_SEED, prompt_hash
from .devices import resolve_device, resolve_dtype
from .store import atomic_write_text, journal_dir, provenance, read_result, result_path, sha256_text, to_json
from .suites import SuiteEntry, check_stage, resolve

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
        if card.is_hf:
            _check_architecture(card, path)
        return str(path.resolve())
    if card.needs_checkpoint:
        raise CheckpointError(f"model '{card.name}' has no public weights",
                              "pass --checkpoint DIR with a save_pretrained folder of its architecture")
    return card.checkpoint


def _check_architecture(card: ModelCard, path: Path) -> None:
    """An HF card runs any checkpoint of its architecture (the demo's tiny models), but not another one.

    The other families' loaders compare the whole shape with the card; lm-eval's HF backend would load
    a Qwen checkpoint under a Llama card without a word.
    """
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path / 'config.json'} is not valid JSON",
                              "restore the checkpoint's config.json") from None
    found = config.get("architectures") if isinstance(config, dict) else None
    expected = card.shape.get("architecture")
    if expected and isinstance(found, list) and found and expected not in found:
        raise CheckpointError(f"{path} holds a {found[0]} checkpoint but model card {card.name} is {expected}",
                              "pass a checkpoint of the card's architecture, or the card that matches it")


# Generation settings lm-eval and every sampler understand; anything else would reach
# transformers' generate (which refuses unknown keys deep inside a run) or be silently ignored.
_GEN_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_gen_toks": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "max_new_tokens": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "temperature": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "top_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "top_k": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "min_p": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "repetition_penalty": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "do_sample": (lambda v: isinstance(v, bool), "true or false"),
    "until": (lambda v: (isinstance(v, str) and v != "") or
              (isinstance(v, list) and all(isinstance(x, str) and x for x in v)), "a stop string"),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def check_gen_kwargs(gen_kwargs: dict[str, Any] | None) -> None:
    for key, value in (gen_kwargs or {}).items():
        if key not in _GEN_CHECKS:
            raise UnknownNameError("generation setting", key, list(_GEN_CHECKS), hint="in --gen-kwargs")
        test, wanted = _GEN_CHECKS[key]
        if value == "" or not test(value):
            shown = "no value" if value == "" else repr(value)
            raise UserError(f"--gen-kwargs {key} must be {wanted}, got {shown}",
                            "write key=value pairs, e.g. --gen-kwargs max_gen_toks=256,temperature=0")


def check_output(output: Path, stage: str, model: str) -> None:
    """The results folder can be created and written, before hours of work are spent filling it."""
    folder = Path(output).expanduser() / stage / model
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise ResultsError(f"{parent} is a file, so results cannot go under it", "choose another --output")
        if parent == Path(output).expanduser():
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ResultsError(f"results folder {folder} is not writable ({exc.strerror or exc})",
                           "choose another --output, or fix its permissions") from None


def check_tasks(entries: list[SuiteEntry], data_dir: Path | None = None) -> None:
    """Every chosen task is one lm-eval can load from the task folder; lm-eval itself skips a YAML it cannot read."""
    index = _task_manager(data_dir).task_index
    for entry in entries:
        if entry.task not in index:
            raise _missing_task(entry.task)
        yaml_path = getattr(index[entry.task], "yaml_path", None)
        if yaml_path is not None:
            _resolve_task_yaml(Path(yaml_path), entry.task)


def _missing_task(task: str) -> UserError:
    import re

    declares = re.compile(rf"^\s*task:\s*['\"]?{re.escape(task)}['\"]?\s*$", re.MULTILINE)
    for path in sorted(tasks_dir().rglob("*.yaml")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if declares.search(text):
            reason = _task_yaml_error(path) or "lm-eval skipped it"
            return UserError(f"task YAML {path} (task {task}) cannot be read: {reason}", f"fix {path}")
    return UserError(f"no task YAML under {tasks_dir()} defines task '{task}'",
                     "reinstall evo-eval (its tasks ship in evo_eval/resources/tasks), or point EVO_EVAL_TASKS at a folder that has it")


def _task_yaml_error(path: Path, resolve_func: bool = False) -> str | None:
    """lm-eval's own YAML loader's complaint about one file, in one line (None: it loads)."""
    from lm_eval.tasks._yaml_loader import load_yaml  # the loader lm-eval's task index uses

    try:
        load_yaml(path, resolve_func=resolve_func)
    except Exception as exc:  # yaml, include and import errors alike: all mean the file cannot be used
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:  # a YAML syntax error: where, and what the parser expected
            return f"not valid YAML at line {mark.line + 1} ({getattr(exc, 'problem', None) or 'syntax error'})"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return f"{type(exc).__name__}: {first}"
    return None


def _resolve_task_yaml(path: Path, task: str) -> None:
    # Resolving the !function tags imports the task's Python helpers, which lm-eval would otherwise
    # only do after the model is loaded.
    problem = _task_yaml_error(path, resolve_func=True)
    if problem:
        raise UserError(f"task YAML {path} (task {task}) cannot be loaded: {problem}", f"fix {path}")


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

        device = resolve_device(options.device)
        dtype = str(resolve_dtype(options.dtype, device, card.dtype)).removeprefix("torch.")
        try:
            lm = RankedHFLM(
                pretrained=checkpoint, revision=None if options.checkpoint else card.revision, dtype=dtype,
                device=str(device), batch_size=options.batch_size, **options.model_args,
            )
        except TypeError as exc:  # transformers hands unknown model_args to the model's constructor
            raise UserError(f"--model-args: {_first_line(exc)}", "remove the setting; HF cards take HFLM's "
                            "arguments, e.g. max_length=2048") from exc
        except (OSError, RuntimeError, ValueError, ImportError) as exc:
            # Missing or truncated weights, weights of another shape than config.json, an unreachable hub.
            # transformers words a shape mismatch as "look at the above report", a table we keep quiet.
            reason = ("its weights do not have the shapes its config.json gives"
                      if "ignore_mismatched_sizes" in str(exc) else _first_line(exc))
            raise CheckpointError(f"cannot load {checkpoint}: {reason}",
                                  "pass --checkpoint DIR with a complete save_pretrained folder (config.json, "
                                  "weights, tokenizer) of the card's architecture") from exc
        except Exception as exc:
            if type(exc).__name__ != "SafetensorError":  # safetensors' own error class is not importable
                raise
            raise CheckpointError(f"cannot load {checkpoint}: the weights file is corrupt ({_first_line(exc)})",
                                  "restore the checkpoint's *.safetensors files") from exc
        _check_vocab(lm.tokenizer, lm.model, checkpoint)
        return lm
    from .adapters import adapter_class

    cls = adapter_class(card.family)
    try:
        return cls(pretrained=checkpoint, card=card, revision=None if options.checkpoint else card.revision,
                   device=options.device, dtype=options.dtype, batch_size=options.batch_size, seed=options.seed,
                   **options.model_args)
    except (ValueError, TypeError) as exc:  # the adapters reject unknown or ill-typed settings this way
        raise UserError(f"--model-args: {_first_line(exc)}", "fix or remove the setting") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


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


def _task_manager(data_dir: Path | None):
    root = tasks_dir()
    # Indexing the YAMLs costs most of a second and plan() needs the index too: one manager per
    # process for as long as no task file changes (their paths and mtimes are part of the key).
    files = sorted(root.rglob("*.yaml")) if root.is_dir() else []
    stamp = tuple((str(p), p.stat().st_mtime_ns) for p in files)
    return _cached_task_manager(str(root), str(data_dir) if data_dir else None, stamp)


@lru_cache(maxsize=4)
def _cached_task_manager(root: str, data_dir: str | None, stamp: tuple):
    from lm_eval.tasks import TaskManager

    metadata = {"data_dir": data_dir} if data_dir else {}
    # Our tasks are self-contained: skipping lm-eval's 14k built-in YAMLs saves seconds per run.
    return TaskManager(include_path=root, include_defaults=False, metadata=metadata)


def main_score(results: dict[str, Any], task: str, metric: str) -> float | None:
    for section in ("groups", "results"):
        block = results.get(section, {}).get(task)
        if block and metric in block and isinstance(block[metric], (int, float)):
            value = float(block[metric])
            # lm-eval reports NaN when a metric is undefined (e.g. TruthfulQA mc2 when every choice's
            # probability underflows): that is no result, shown as a dash, not a number.
            return None if math.isnan(value) else value
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
            per_doc[str(row.get("doc_id"))] = prompt_hash(str(context))
    return out


def protocol_fingerprint(results: dict[str, Any], shots: int, data_manifest: str | None) -> str:
    """Hash of what defines the matched protocol for a benchmark: task configs, shots and data.

    Equal fingerprints mean equal prompt templates, few-shot sources and documents, even where each
    post-trained model wraps the prompt in its own chat template.
    """
    configs = {name: {k: v for k, v in cfg.items() if k not in ("metadata",)}
               for name, cfg in sorted(results.get("configs", {}).items())}
    # lm-eval writes functions as "<function f at 0x7f...>": the address differs per process.
    text = re.sub(r" at 0x[0-9a-f]+>", ">", to_json([configs, shots, data_manifest]))
    return sha256_text(text)


def evaluate_benchmark(lm: Any, entry: SuiteEntry, card: ModelCard, options: RunOptions, task_manager: Any,
                       journal: Journal) -> dict[str, Any] | None:
    import lm_eval

    if hasattr(lm, "benchmark"):
        lm.benchmark = entry.key
    if hasattr(lm, "records"):
        lm.records.clear()
    # lm-eval's HF backend batches, and batched results depend on the batch: with a fixed batch size the
    # journal calls it with fixed chunks, so a resumed run equals an uninterrupted one (journal.py);
    # "auto" sizes have no such guarantee. Our adapters answer each request alone, seeded from the
    # request, so they are given exactly the missing requests.
    chunk = options.batch_size * BATCHES_PER_CHUNK if card.is_hf and isinstance(options.batch_size, int) else None
    wrapped = JournalLM(lm, journal, quiet=options.quiet, chunk_size=chunk)
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
    # The wrapper's records: every request's stats in request order, read back from the journal for
    # requests an interrupted run already answered.
    return {"results": results, "wall_s": wall, "reused": wrapped.reused, "computed": wrapped.computed,
            "records": wrapped.records}


def build_record(entry: SuiteEntry, card: ModelCard, checkpoint: str, lm: Any, options: RunOptions,
                 outcome: dict[str, Any], data_dir: Path | None, model: str | None = None) -> dict[str, Any]:
    from .store import KIND, SCHEMA_VERSION, device_info

    results = outcome["results"]
    samples = results.pop("samples", {})
    metric = entry.benchmark.metric[entry.stage]
    manifest = _manifest_hash(data_dir)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "model": model or card.name,
        "card": card.name,
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
            dtype=_model_dtype(lm, options), device=device_info(options.device),
            seeds={"random": options.seed, "numpy": options.seed, "torch": options.seed, "fewshot": FEWSHOT_SEED},
            shots=entry.shots, limit=options.limit, data_dir=str(data_dir) if data_dir else "hub",
            data_manifest_sha256=manifest, wall_time_s=outcome["wall_s"], world_size=getattr(lm, "world_size", 1),
            weights="checkpoint",
        ),
    }


def _model_dtype(lm: Any, options: RunOptions) -> str:
    """The dtype the weights ran in: our adapters say it; lm-eval's HFLM only has it on its model."""
    dtype = getattr(lm, "dtype", None) or getattr(getattr(lm, "model", None), "dtype", None) or options.dtype
    return str(dtype).removeprefix("torch.")


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
    entries = resolve_entries(card, stage, options)
    checkpoint = resolve_checkpoint(card, options.checkpoint)
    if options.limit is not None and options.limit <= 0:
        raise UserError(f"--limit must be positive, got {options.limit}", "pass a positive number of documents")
    resolve_device(options.device)
    check_gen_kwargs(options.gen_kwargs)
    data_dir = resolve_data_dir(options.data_dir)
    check_tasks(entries, data_dir)
    check_output(options.output, stage, card.name)  # last: the only check that creates anything
    return card, stage, entries, checkpoint, data_dir


def _data_missing(entry: SuiteEntry, data_dir: Path | None) -> str | None:
    if data_dir is None:
        return None
    from .ablation import PPL_DATA, PPL_TASK
    from .data import mirror_problem

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


def _triage(entry: SuiteEntry, model: str, stage: str, options: RunOptions, data_dir: Path | None
            ) -> BenchmarkOutcome | None:
    """Why a benchmark needs no model work now (done earlier, no data, no opt-in), or None to run it."""
    path = result_path(options.output, stage, model, entry.key)
    if path.exists() and not options.force:
        stored = read_result(path)  # a corrupt file stops the run here, before any work
        return BenchmarkOutcome(entry.key, "skipped", path, stored.score, "already done", model=model)
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
    """Run a plan (``plan(options)``, computed here unless the caller already has it)."""
    card, stage, entries, checkpoint, data_dir = planned or plan(options)
    notify = on_event or (lambda *_: None)
    outcomes: list[BenchmarkOutcome] = []
    pending: list[tuple[str, dict[str, Any] | None, list[SuiteEntry]]] = []
    for model, overrides in run_variants(card, options):
        todo = []
        for entry in entries:
            outcome = _triage(entry, model, stage, options, data_dir)
            if outcome is None:
                todo.append(entry)
            else:
                outcomes.append(outcome)
                notify(_EVENT.get(outcome.status, "skipped"), entry, outcome)
        pending.append((model, overrides, todo))
    if not any(todo for _, _, todo in pending):
        return RunSummary(card, stage, _in_order(entries, outcomes))

    if options.allow_code_exec:
        os.environ["EVO_EVAL_ALLOW_CODE_EXEC"] = "1"
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    lm = build_lm(card, checkpoint, options)
    task_manager = _task_manager(data_dir)
    for model, overrides, todo in pending:
        if not todo:
            continue
        variant_lm = lm if overrides is None else lm.with_settings(**overrides)
        if overrides is not None:
            notify("variant", todo[0], BenchmarkOutcome("", "variant", message=model, model=model))
        outcomes += _evaluate_entries(card, stage, todo, checkpoint, data_dir, options, variant_lm,
                                      task_manager, model, notify)
    return RunSummary(card, stage, _in_order(entries, outcomes))


def _evaluate_entries(card: ModelCard, stage: str, todo: list[SuiteEntry], checkpoint: str, data_dir: Path | None,
                      options: RunOptions, lm: Any, task_manager: Any, model: str, notify: Callable
                      ) -> list[BenchmarkOutcome]:
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
        journal = Journal(jdir, entry.key, identity | {"benchmark": entry.key, "shots": entry.shots,
                                                       "limit": options.limit, "gen_kwargs": options.gen_kwargs},
                          rank=getattr(lm, "rank", 0))
        damaged = journal.report()
        if damaged:
            notify("journal", entry, BenchmarkOutcome(entry.key, "journal", None, None, damaged, model=model))
        entry_lm = lm_for_entry(lm, entry)  # the ablation's AR-limit perplexity scores with estimator=ar
        outcome = evaluate_benchmark(entry_lm, entry, card, options, task_manager, journal)
        if outcome is not None:
            record = build_record(entry, card, checkpoint, entry_lm, options, outcome, data_dir, model=model)
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
