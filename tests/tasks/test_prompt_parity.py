"""Matched prompts: every leaf of our tasks renders exactly what lm-eval's own task renders.

For each benchmark with an lm-eval built-in (suites.py ``builtin``), every leaf task of ours is
compared with the built-in leaf named in its ``metadata.builtin``, both reading the same mirror
documents, with the paper's shot count and lm-eval's few-shot seed: all request arguments (context,
continuation or generation settings) of the first two documents must be equal. Where our task file
declares a deviation, the config ``fields`` it names are copied from our task into the built-in
first, so the test proves that those fields, and nothing else, make the difference.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evo_eval.data.prompts import prompt_hash, rendered_requests
from evo_eval.suites import BENCHMARKS, resolve

BUILTIN_DIRS = ("mmlu/default", "mmlu/generative", "mmlu_pro", "bbh/cot_fewshot", "arc", "hellaswag", "truthfulqa",
                "winogrande", "piqa", "gsm8k", "minerva_math", "gpqa/n_shot", "gpqa/generative", "humaneval",
                "humaneval_infilling", "mbpp", "cmmlu", "ceval")
CASES = sorted({(stage, b.key) for b in BENCHMARKS for stage, name in b.builtin.items()
                if name and b.key != "gpqa"},
               key=lambda case: [(b.key, s) for b in BENCHMARKS for s in ("base", "instruct")].index(case[::-1]))


class _NoCodeEval:
    """Stands in for the hub's code_eval metric, which lm-eval's code task modules load at import;
    rendering prompts never calls it."""

    def compute(self, **_):
        return [{"pass@1": 0.0}], {}


@pytest.fixture(scope="module")
def builtin_index():
    import evaluate
    import lm_eval
    from lm_eval.tasks._index import TaskIndex

    root = Path(lm_eval.__file__).parent / "tasks"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate, "load", lambda *args, **kwargs: _NoCodeEval())
        yield TaskIndex.build([root / d for d in BUILTIN_DIRS])


def _raw(path: str) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(Path(path), resolve_func=True, recursive=True)


def builtin_twin(ours, builtin_index, mirror: Path):
    """lm-eval's built-in leaf for one of our leaves, reading our mirror, with our declared deviations."""
    from lm_eval.api.task import ConfigurableTask

    from evo_eval.data.source import load

    meta = ours.config.metadata
    mine = _raw(meta["config_source"])
    cfg = _raw(builtin_index[meta["builtin"]].yaml_path)
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)
    cfg.update(custom_dataset=load, dataset_kwargs=mine["dataset_kwargs"],
               metadata={**cfg.get("metadata", {}), "data_dir": str(mirror)})
    for deviation in meta["deviations"]:
        assert deviation["reason"].strip(), f"{ours.config.task}: deviation without a reason"
        for field in deviation["fields"]:
            if field in mine:
                cfg[field] = mine[field]
            else:
                cfg.pop(field, None)
    return _process_once(ConfigurableTask(config=cfg))


def _process_once(task):
    """lm-eval re-runs process_docs over the whole split on every pass over the documents (10k rows
    for HellaSwag); rendering the same task at several shot counts may reuse the first result."""
    process = task.config.process_docs
    if process is None:
        return task
    split = task.config.test_split or task.config.validation_split
    done: dict[int, object] = {id(task.dataset[split]): task.task_docs}  # processed once by __init__

    def once(dataset):
        if id(dataset) not in done:  # the mirror's datasets are cached, so ids stay valid
            done[id(dataset)] = process(dataset)
        return done[id(dataset)]

    task.config.process_docs = once
    return task


def _leaves(task_manager, stage: str, key: str):
    (entry,) = resolve("all", stage, tasks=[key])
    return entry, {name: _process_once(task) for name, task in task_manager.load([entry.task])["tasks"].items()}


# Benchmarks the paper runs 0-shot but whose few-shot source we changed: also compared with shots.
EXTRA_SHOTS = {("base", "hellaswag"): [2], ("base", "piqa"): [3], ("base", "truthfulqa"): [1],
               ("instruct", "arc_challenge"): [2]}


@pytest.mark.parametrize("stage, key", CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_every_leaf_renders_lm_evals_prompt(stage, key, task_manager, builtin_index, mirror):
    entry, leaves = _leaves(task_manager, stage, key)
    assert leaves, entry.task
    for name, ours in leaves.items():
        theirs = builtin_twin(ours, builtin_index, mirror)
        for shots in [entry.shots, *EXTRA_SHOTS.get((stage, key), [])]:
            mine, reference = rendered_requests(ours, 2, shots), rendered_requests(theirs, 2, shots)
            assert sorted(mine) == [0, 1], name
            assert mine == reference, f"{name} ({shots}-shot) differs from {ours.config.metadata['builtin']}"


def test_mbpp_three_shots_equal_lm_evals_own_exemplars(task_manager, builtin_index, mirror):
    """Without any override: our prompt-split order puts lm-eval's three exemplars first."""
    from lm_eval.api.task import ConfigurableTask

    from evo_eval.data.source import load

    _, leaves = _leaves(task_manager, "base", "mbpp")
    cfg = _raw(builtin_index["mbpp"].yaml_path)
    cfg.update(custom_dataset=load, dataset_kwargs={"benchmark": "mbpp", "config": "full"},
               metadata={"data_dir": str(mirror)})
    ours = rendered_requests(leaves["evo_mbpp"], 2, 3)
    assert ours == rendered_requests(ConfigurableTask(config=cfg), 2, 3)
    four = rendered_requests(leaves["evo_mbpp"], 1, 4)[0][0][0]
    assert four.count("[BEGIN]") == 5 and "Write a function to find the minimum cost path" in four


def test_fim_shots_come_from_other_problems(task_manager):
    _, leaves = _leaves(task_manager, "base", "humaneval_fim")
    task = leaves["evo_humaneval_fim"]
    requests = rendered_requests(task, 8, 2)
    docs = list(task.eval_docs)
    for doc_id, ((context, _),) in requests.items():
        # the evaluated problem's own signature appears once: in the evaluated prompt, never in a shot
        signature = docs[doc_id]["prompt"].split("\ndef ")[-1].split("(")[0]
        assert context.count(f"def {signature}(") == 1, doc_id
        assert context.endswith(docs[doc_id]["suffix"] + "\n\n" + docs[doc_id]["prompt"])


def test_generative_hellaswag_prompt(task_manager):
    _, leaves = _leaves(task_manager, "instruct", "hellaswag")
    task = leaves["evo_hellaswag_gen"]
    assert [d["what"] for d in task.config.metadata["deviations"]] == ["no_builtin"]
    ((context, gen_kwargs),) = rendered_requests(task, 1, 0)[0]
    assert context == (
        "The following are unfinished descriptions of everyday activities, each with four possible endings. "
        "Choose the most plausible ending.\n\n"
        "Roof shingle removal: A man is sitting on a roof. he\n"
        "A. is using wrap to wrap a pair of skis.\nB. is ripping level tiles off.\n"
        "C. is holding a rubik's cube.\nD. starts pulling up roofing on a roof.\nAnswer:")
    assert gen_kwargs["until"] == ["</s>", "\n"]
    assert task.doc_to_target(task.eval_docs[0]) == "D"


def test_prompt_hash():
    assert prompt_hash("Question: 1+1?\nAnswer:") == prompt_hash("Question: 1+1?\nAnswer:")
    assert prompt_hash("a") == "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
    assert prompt_hash("Answer:") != prompt_hash("Answer: ")


# ---- GPQA: no public copy exists, so made-up questions in the official columns stand in -------------

GPQA_HEADER = "Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3,Subdomain\n"


@pytest.fixture(scope="module")
def gpqa_manager(tmp_path_factory):
    from lm_eval.tasks import TaskManager

    from evo_eval.data.mirror import import_mirror
    from evo_eval.paths import tasks_dir

    src = tmp_path_factory.mktemp("gpqa-src")
    (src / "gpqa").mkdir()
    rows = "".join(f"What is {n} + {n}?,{2 * n},{2 * n + 1},{2 * n - 1},{n * n + 3},Arithmetic\n" for n in range(2, 12))
    (src / "gpqa" / "gpqa_main.csv").write_text(GPQA_HEADER + rows, encoding="utf-8")
    dst = tmp_path_factory.mktemp("gpqa-mirror") / "data"
    import_mirror(src, dst, ["gpqa"])
    return dst, TaskManager(include_path=str(tasks_dir()), include_defaults=False, metadata={"data_dir": str(dst)})


@pytest.mark.parametrize("stage", ["base", "instruct"])
def test_gpqa_renders_lm_evals_prompt_with_a_stable_choice_order(stage, gpqa_manager, builtin_index):
    dst, manager = gpqa_manager
    entry, leaves = _leaves(manager, stage, "gpqa")
    ((name, ours),) = leaves.items()
    theirs = builtin_twin(ours, builtin_index, dst)
    mine = rendered_requests(ours, 10, entry.shots)
    assert mine == rendered_requests(theirs, 10, entry.shots)
    again = rendered_requests(_leaves(manager, stage, "gpqa")[1][name], 10, entry.shots)
    assert again == mine  # a second load in the same process sees the same letters
    docs = list(ours.eval_docs)
    for doc_id, requests in mine.items():
        context = requests[0][0]
        assert context.count("Question: ") == 6 and context.count(docs[doc_id]["Question"]) == 1
        letter = docs[doc_id]["answer"][1]
        assert f"({letter}) {docs[doc_id]['Correct Answer']}\n" in context.split("Question: ")[-1]


def test_gpqa_without_data_says_how_to_get_it(task_manager):
    from evo_eval.errors import DataError

    with pytest.raises(DataError, match=r"GPQA is not in the data mirror .* Idavidrein/gpqa .*`hf auth login`"):
        task_manager.load(["evo_gpqa"])
