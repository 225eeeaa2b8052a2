"""lm-eval's own command line, with evo-eval's backends, tasks and protocol.

lm-eval 0.4.13 discovers no plugins, so its ``lm-eval`` command cannot see our models or tasks. This
runs the very same CLI (same options, same results and samples files) with four additions, so that it
evaluates what ``evo-eval run`` evaluates:

* every backend of the family registry (``evo``, ``llada``, ``mdlm``, ``bd3lm``, ``ard``, ``dream``, ``fast_dllm_v2``) is registered;
* the tasks shipped in the package (evo_eval/resources/tasks) are found without ``--include_path``
  (a user's own ``--include_path`` is searched as well);
* the paper's shots apply per task when ``--num_fewshot`` is not given: the stage is the card's
  (``--model_args card=NAME``; an instruct card also switches on ``--apply_chat_template``), else
  instruct with ``--apply_chat_template`` and base without; seeds default to evo-eval's;
* few-shot examples are drawn per document from the few-shot seed and the document's id
  (evo_eval/fewshot.py), as ``evo-eval run`` draws them, so both routes render the same prompts.

The data folder is the one ``evo-eval run`` reads without ``--data-dir``: ``$EVO_EVAL_DATA`` (a mirror
made by ``evo-eval data import``), else the hub. Example::

    EVO_EVAL_DATA=~/.cache/evo-eval/data python -m evo_eval.lm_eval_cli run --model evo \\
        --model_args pretrained=DIR,card=evo-8b --tasks evo_arc_challenge,evo_gsm8k --output_path out --log_samples
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


def stage_of(args: Any) -> str:
    """The protocol stage of a parsed lm-eval command line (see the module docstring)."""
    model_args = getattr(args, "model_args", None)
    card = model_args.get("card") if isinstance(model_args, dict) else None
    if card:
        from .cards import get_card

        return get_card(str(card)).stage
    return "instruct" if getattr(args, "apply_chat_template", False) else "base"


def paper_shots(task: str, stage: str) -> int | None:
    """The paper's shots for one of our leaf tasks (``evo_mmlu_anatomy`` -> MMLU's), or None for a task
    that is not in a suite.

    A leaf belongs to the suite task whose name is the longest prefix of its own (``evo_arc_challenge_gen``
    is ARC-C's instruct task, not a subject of ``evo_arc_challenge``); ``stage`` decides only for tasks
    that serve both stages (GSM8K, MATH, MBPP).
    """
    from .suites import resolve

    owners: dict[str, dict[str, int]] = {}
    for st in ("base", "instruct"):
        for entry in resolve("all", st):
            owners.setdefault(entry.task, {})[st] = entry.shots
    matches = [name for name in owners if task == name or task.startswith(name + "_")]
    if not matches:
        return None
    by_stage = owners[max(matches, key=len)]
    return by_stage.get(stage, next(iter(by_stage.values())))


def only_our_tasks(tasks: list[str] | None, include_path: str | None) -> bool:
    """Whether every requested task is one of ours, so lm-eval need not index its 14k built-in YAMLs."""
    from lm_eval.tasks import TaskManager

    from .paths import tasks_dir

    if not tasks or include_path:
        return False
    names = [t for task in tasks for t in task.split(",") if t]
    ours = TaskManager(include_path=str(tasks_dir()), include_defaults=False).all_tasks
    return bool(names) and all(name in ours for name in names)


@contextlib.contextmanager
def evo_protocol(stage: str, apply_shots: bool, builtins: bool = True) -> Iterator[None]:
    """While lm-eval runs: our task folder beside any include path (lm-eval's own tasks only if
    ``builtins``), and the paper's shots on our leaves."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks import TaskManager

    from .paths import tasks_dir

    manager_init, task_init = TaskManager.__init__, ConfigurableTask.__init__

    def with_our_tasks(self, *args: Any, include_path: Any = None, **kwargs: Any) -> None:
        given = [] if include_path is None else [include_path] if isinstance(include_path, str) else list(include_path)
        paths = [str(tasks_dir()), *[str(p) for p in given if str(p) != str(tasks_dir())]]
        if not builtins:
            kwargs["include_defaults"] = False
        manager_init(self, *args, include_path=paths, **kwargs)

    def with_paper_shots(self, *args: Any, **kwargs: Any) -> None:
        task_init(self, *args, **kwargs)
        shots = paper_shots(str(self.config.task), stage) if apply_shots else None
        if shots is not None and self.config.num_fewshot is None:
            self.set_config(key="num_fewshot", value=shots)

    TaskManager.__init__, ConfigurableTask.__init__ = with_our_tasks, with_paper_shots
    try:
        yield
    finally:
        TaskManager.__init__, ConfigurableTask.__init__ = manager_init, task_init


def main() -> None:
    import evo_eval.adapters  # noqa: F401  (registers every family of evo_eval.families)
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    from .data.prompts import FEWSHOT_SEED
    from .errors import UserError
    from .fewshot import per_document_shots
    from .run import RunOptions

    setup_logging()
    parser = HarnessCLI()
    args = parser.parse_args()  # lm-eval's parser reads sys.argv itself
    if getattr(args, "command", None) == "run" or hasattr(args, "num_fewshot"):
        try:
            stage = stage_of(args)
        except UserError as exc:
            raise SystemExit(f"error: {exc}") from None
        if isinstance(args.model_args, dict) and (args.model or "hf") == "hf":
            args.model_args.pop("card", None)  # names the protocol only; lm-eval's HF backend takes no card
        if stage == "instruct" and not hasattr(args, "apply_chat_template"):
            args.apply_chat_template = True  # what evo-eval run does for a post-trained card
        if getattr(args, "seed", None) is None:
            seed = RunOptions.seed
            args.seed = [seed, seed, seed, FEWSHOT_SEED]
        builtins = not only_our_tasks(args.tasks, args.include_path)
        seeds = args.seed if isinstance(args.seed, (list, tuple)) and len(args.seed) == 4 else None
        fewshot_seed = int(seeds[3]) if seeds and seeds[3] is not None else FEWSHOT_SEED
        # Shots drawn per document, as `evo-eval run` draws them (evo_eval/fewshot.py).
        with evo_protocol(stage, apply_shots=getattr(args, "num_fewshot", None) is None, builtins=builtins), \
                per_document_shots(fewshot_seed):
            parser.execute(args)
        return
    with evo_protocol("base", apply_shots=False):  # `ls tasks`, `validate`: our tasks are listed too
        parser.execute(args)


if __name__ == "__main__":
    main()
