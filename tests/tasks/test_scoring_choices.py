"""The scoring choices we state (suites.SCORING_CHOICES, resources/tasks/README.md), checked on lm-eval's
own scoring code: a correct 0-shot MATH reply in \\boxed{} scores 1 with math_verify and 0 with Minerva
exact_match; humaneval_instruct's reply is cut at its closing fence before the tests run."""

from __future__ import annotations

import pytest

from evo_eval.paths import tasks_dir
from evo_eval.sandbox.code_exec import ALLOW_ENV
from evo_eval.suites import BENCHMARKS, SCORING_CHOICES, resolve

PROBLEM = {"problem": "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
           "level": "Level 1", "type": "Precalculus",
           "solution": "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = "
                       "(2)(12) = \\boxed{24}.$"}


def _doc():
    import datasets
    from lm_eval.tasks.minerva_math.utils import process_docs

    return process_docs(datasets.Dataset.from_list([PROBLEM]))[0]


@pytest.mark.parametrize("reply, exact, verified", [
    # a post-trained model's 0-shot reply: right, but not in the shots' "Final Answer:" sentence
    ("Since det(AB) = det(A) det(B), we get $2 \\cdot 12 = 24$.\n\nThe answer is $\\boxed{24}$.", 0, 1),
    # the 4-shot format a base model copies: both metrics agree
    ("$(2)(12) = 24$.\nFinal Answer: The final answer is $24$. I hope it is correct.", 1, 1),
    ("The answer is $\\boxed{25}$.", 0, 0),
])
def test_math_metrics_on_lm_evals_own_process_results(reply, exact, verified):
    from lm_eval.tasks.minerva_math.utils import process_results

    assert process_results(_doc(), [reply]) == {"exact_match": exact, "math_verify": verified}


def test_instruct_math_is_scored_with_math_verify_and_base_with_minerva():
    (base,) = resolve("all", "base", tasks=["math"])
    (instruct,) = resolve("all", "instruct", tasks=["math"])
    assert base.benchmark.metric["base"] == "exact_match,none" and base.shots == 4
    assert instruct.benchmark.metric["instruct"] == "math_verify,none" and instruct.shots == 0


def test_every_choice_is_declared_in_the_tasks_readme():
    readme = (tasks_dir() / "README.md").read_text(encoding="utf-8")
    labels = {b.key: b.label for b in BENCHMARKS}
    for (key, stage), text in SCORING_CHOICES.items():
        row = f"| {labels[key]}, ".lower()
        assert f"{row}{stage}" in readme.lower() or f"{row}both" in readme.lower(), (key, stage)
        assert text.split(":")[0].split(" ")[-1] in readme  # the metric or filter it names
    for phrase in ("math_verify,none", "humaneval_instruct", "flexible-extract", "acc_norm", "twin"):
        assert phrase in readme


def test_humaneval_instruct_cuts_the_reply_at_its_closing_fence(tmp_path, monkeypatch):
    """A correct reply that closes its code fence and explains itself passes; the same reply scored
    without the cut (the base task's filter) fails, since the explanation is not Python."""
    import lm_eval
    from lm_eval.api.model import LM
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    from evo_eval.data.mirror import import_mirror
    from evo_eval.paths import sample_benchdata_dir

    import_mirror(sample_benchdata_dir(), tmp_path / "mirror", ["humaneval"])
    monkeypatch.setenv(ALLOW_ENV, "1")
    contexts = []

    class Chatty(LM):
        def generate_until(self, requests, disable_tqdm: bool = False):
            contexts.extend(r.args[0] for r in requests)
            return [r.doc["canonical_solution"] + "```\n\nThis function solves the problem." for r in requests]

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

    (tmp_path / "no-tasks").mkdir()
    manager = TaskManager(include_path=str(tmp_path / "no-tasks"), include_defaults=False)
    scores = {}
    for name in ("evo_humaneval_instruct", "evo_humaneval"):
        config = load_yaml(tasks_dir() / "code" / f"{name}.yaml", resolve_func=True, recursive=True)
        config["metadata"] = {**config["metadata"], "data_dir": str(tmp_path / "mirror")}
        out = lm_eval.simple_evaluate(model=Chatty(), tasks=[ConfigurableTask(config=config)], limit=2,
                                      bootstrap_iters=0, confirm_run_unsafe_code=True, task_manager=manager)
        scores[name] = out["results"][name]["pass@1,create_test"]
    assert scores == {"evo_humaneval_instruct": 1.0, "evo_humaneval": 0.0}
    assert contexts[0].startswith("Write a solution to the following problem") and "Here is the completed function:\n```python\n" in contexts[0]


def test_instruct_math_group_reports_math_verify(tmp_path):
    """The evo_math group aggregates math_verify too, so the instruct score is a number: boxed 0-shot
    replies with the right answer score 1 by math_verify, 0 by exact_match."""
    import lm_eval
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    from evo_eval.data.mirror import import_mirror
    from evo_eval.paths import sample_benchdata_dir
    from evo_eval.record import main_score

    import_mirror(sample_benchdata_dir(), tmp_path / "mirror", ["math"])

    class Boxed(LM):
        def generate_until(self, requests, disable_tqdm: bool = False):
            return [f"Working through it, the result follows.\n\nThe answer is $\\boxed{{{r.doc['answer']}}}$."
                    for r in requests]

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

    manager = TaskManager(include_path=str(tasks_dir()), include_defaults=False,
                          metadata={"data_dir": str(tmp_path / "mirror")})
    (entry,) = resolve("all", "instruct", tasks=["math"])
    out = lm_eval.simple_evaluate(model=Boxed(), tasks=[entry.task], num_fewshot=entry.shots, limit=1,
                                  bootstrap_iters=0, task_manager=manager)
    assert main_score(out, entry.task, entry.benchmark.metric["instruct"]) == 1.0
    assert main_score(out, entry.task, "exact_match,none") == 0.0
