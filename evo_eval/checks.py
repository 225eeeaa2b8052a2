"""What ``run`` checks before it loads a model, so bad input costs nothing: the stage, the checkpoint
folder (and, for HF cards, its architecture), ``--gen-kwargs``, the results folder, the task YAMLs
(through lm-eval's own loader and task index) and the data mirror. Each problem is one ``UserError``.
"""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from .cards import ModelCard
from .errors import CheckpointError, DataError, ResultsError, UnknownNameError, UserError, first_line
from .paths import tasks_dir
from .run_checks import folder_problem
from .suites import SuiteEntry, check_stage


# ---- checking the inputs -------------------------------------------------------------------------


def resolve_stage(card: ModelCard, stage: str | None) -> str:
    if stage is None:
        return card.stage
    check_stage(stage)
    if stage != card.stage:
        from .chat import sibling_card

        sibling = sibling_card(card, stage)
        fix = (f"use --model {sibling} for the {stage} stage" if sibling else
               f"write a card with stage: {stage} for it and pass its YAML path as --model")
        raise UserError(f"model '{card.name}' is the {card.stage} card but --stage {stage} was given", fix)
    return stage


def resolve_checkpoint(card: ModelCard, checkpoint: str | None) -> str:
    """A user checkpoint must be a folder that exists; the card's own is a hub id (or a local path)."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_dir():
            raise CheckpointError(folder_problem(path, "checkpoint folder"),
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


def check_tasks(entries: list[SuiteEntry], data_dir: Path | None = None, include_path: Path | None = None) -> None:
    """Every chosen task is one lm-eval can load from the task folder; lm-eval itself skips a YAML it cannot read."""
    index = _task_manager(data_dir, include_path).task_index
    for entry in entries:
        if entry.task not in index:
            raise _missing_task(entry.task)
        yaml_path = getattr(index[entry.task], "yaml_path", None)
        if yaml_path is not None:
            _resolve_task_yaml(Path(yaml_path), entry.task)


def check_shots_pool(entries: list[SuiteEntry], shots: int | None, data_dir: Path | None = None,
                     include_path: Path | None = None) -> None:
    """``--shots N`` asks every task for N examples from its few-shot split; lm-eval's sampler would
    fail on the first document (``random.sample``: sample larger than population) after the model
    has loaded. Only an explicit ``--shots`` above a benchmark's protocol shots is checked: it builds
    the tasks, which reads their data (seconds for MMLU's 57 subjects)."""
    if not shots:
        return
    from lm_eval.api.task import Task
    from lm_eval.tasks import get_task_dict

    def leaves(node):
        for value in node.values():
            if isinstance(value, Task):
                yield value
            elif isinstance(value, dict):
                yield from leaves(value)

    from .data.mirror import mirror_problem

    manager = _task_manager(data_dir, include_path)
    for entry in entries:
        if data_dir is not None and mirror_problem(data_dir, entry.key, shots):
            continue  # not in the mirror: the run reports (or, with --skip-missing, skips) it
        if shots <= _protocol_shots(entry):
            continue  # the protocol's own shots are served by the hub and every mirror (tests/data)
        for task in leaves(get_task_dict([entry.task], manager)):
            docs = task.fewshot_docs()
            pool = len(list(docs if docs is not None else task.test_docs() or []))
            # Drawn from the split under test, the shots exclude the document itself.
            if (task.config.fewshot_split or None) == task.config.test_split or docs is None:
                pool -= 1
            if shots > pool:
                name = task.config.task
                raise UserError(f"--shots {shots} is more than the few-shot pool of {entry.key} ({name} has "
                                f"{max(pool, 0)} examples to draw from)",
                                f"pass --shots {max(pool, 0)} or fewer, or leave --shots out for the paper's shots")


def _protocol_shots(entry: SuiteEntry) -> int:
    from .suites import paper_shots

    try:
        return paper_shots(entry.key, entry.stage)
    except (KeyError, UserError):  # the ablation's perplexity entries have no paper row
        return 0


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
        first = first_line(exc, 200)
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
        if data_dir is None:  # the environment named it, not the command line
            raise DataError(f"EVO_EVAL_DATA names {chosen}, which does not exist",
                            f"create it with `evo-eval data import SRC --dest {chosen}`, or unset EVO_EVAL_DATA to use the hub")
        raise DataError(folder_problem(chosen, "data folder"),
                        "create it with `evo-eval data import SRC --dest DIR`, or drop --data-dir to use the hub")
    from .data.mirror import verify_mirror

    verify_mirror(chosen)
    return chosen.resolve()


def _task_manager(data_dir: Path | None, include_path: Path | None = None):
    roots = [tasks_dir()] + ([Path(include_path).expanduser()] if include_path is not None else [])
    # Indexing the YAMLs costs most of a second and plan() needs the index too: one manager per
    # process for as long as no task file changes (their paths and mtimes are part of the key).
    files = sorted(p for root in roots if root.is_dir() for p in root.rglob("*.yaml"))
    stamp = tuple((str(p), p.stat().st_mtime_ns) for p in files)
    return _cached_task_manager(tuple(map(str, roots)), str(data_dir) if data_dir else None, stamp)


@lru_cache(maxsize=4)
def _cached_task_manager(roots: tuple[str, ...], data_dir: str | None, stamp: tuple):
    from lm_eval.tasks import TaskManager

    metadata = {"data_dir": data_dir} if data_dir else {}
    # Our tasks are self-contained: skipping lm-eval's 14k built-in YAMLs saves seconds per run (a user's
    # own tasks in --include-path may still `include` a built-in YAML by path).
    return TaskManager(include_path=list(roots), include_defaults=False, metadata=metadata)
