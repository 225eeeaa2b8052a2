"""HumanEval, HumanEval-FIM and MBPP through lm-eval with an oracle model: pass@1 is computed in the sandbox."""

from __future__ import annotations

import pytest
from lm_eval.api.model import LM

from evo_eval.scoring.code_exec import ALLOW_ENV, CodeExecNotAllowed


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
