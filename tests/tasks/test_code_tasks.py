"""HumanEval, HumanEval-FIM and MBPP through lm-eval with an oracle model: pass@1 is computed in the sandbox."""

from __future__ import annotations

import pytest
from lm_eval.api.model import LM

from evo_eval.sandbox.code_exec import ALLOW_ENV, CodeExecNotAllowed


class Scripted(LM):
    """Answers every generation request from the document itself (the reference solution, or a wrong one)."""

    def __init__(self, right: bool):
        super().__init__()
        self.right = right

    def generate_until(self, requests, disable_tqdm: bool = False):
        out = []
        for request in requests:
            doc = request.doc
            solution = doc["code"] if "code" in doc else doc["canonical_solution"]
            out.append(solution if self.right else "    return None\n")
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError


def _evaluate(task_manager, lm, task, shots):
    import lm_eval

    return lm_eval.simple_evaluate(model=lm, tasks=[task], num_fewshot=shots, task_manager=task_manager, limit=2,
                                   bootstrap_iters=0, confirm_run_unsafe_code=True, log_samples=False)


@pytest.mark.parametrize("task, shots, metric", [
    ("evo_humaneval", 0, "pass@1,create_test"),
    ("evo_humaneval_fim", 2, "pass@1,create_test"),
    ("evo_mbpp", 4, "pass_at_1,none"),
])
def test_reference_solutions_pass_and_wrong_ones_fail(task, shots, metric, task_manager, monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "1")
    assert _evaluate(task_manager, Scripted(right=True), task, shots)["results"][task][metric] == 1.0
    assert _evaluate(task_manager, Scripted(right=False), task, shots)["results"][task][metric] == 0.0


def test_code_runs_only_with_the_users_consent(task_manager, monkeypatch):
    import lm_eval

    monkeypatch.delenv(ALLOW_ENV, raising=False)
    with pytest.raises(CodeExecNotAllowed, match="pass --allow-code-exec"):
        _evaluate(task_manager, Scripted(right=True), "evo_humaneval", 0)
    with pytest.raises(ValueError, match="marked as unsafe"):  # lm-eval's own gate, before any model call
        lm_eval.simple_evaluate(model=Scripted(right=True), tasks=["evo_mbpp"], task_manager=task_manager, limit=1)


@pytest.mark.parametrize("task, shots", [("evo_humaneval", 0), ("evo_mbpp", 4)])
def test_a_tasks_programs_run_as_one_parallel_batch(task, shots, task_manager, monkeypatch):
    import evo_eval.sandbox.code_exec as code_exec

    monkeypatch.setenv(ALLOW_ENV, "1")
    batches = []
    real = code_exec.check_programs

    def counting(programs, *args, **kwargs):
        batches.append(len(programs))
        return real(programs, *args, **kwargs)

    monkeypatch.setattr(code_exec, "check_programs", counting)
    results = lm_eval_limit(task_manager, FreshScripted(right=True), task, shots, limit=3)
    assert batches == [3]  # the filter ran all three at once; the metric found every verdict
    assert results["results"][task]["pass@1,create_test" if task == "evo_humaneval" else "pass_at_1,none"] == 1.0


class FreshScripted(Scripted):
    """Reference solutions with a comment no earlier test produced, so no verdict is remembered."""

    def generate_until(self, requests, disable_tqdm: bool = False):
        import uuid

        tag = uuid.uuid4().hex
        return [text + f"\n# {tag}\n" for text in super().generate_until(requests, disable_tqdm)]


def lm_eval_limit(task_manager, lm, task, shots, limit):
    import lm_eval

    return lm_eval.simple_evaluate(model=lm, tasks=[task], num_fewshot=shots, task_manager=task_manager, limit=limit,
                                   bootstrap_iters=0, confirm_run_unsafe_code=True, log_samples=False)
