"""pass@1 for the code tasks, executed in the project's sandbox (evo_eval.scoring.code_exec).

lm-eval's own humaneval/mbpp tasks load the hub's ``code_eval`` metric when they are imported, which
fails offline; these metrics run the same program (completion + tests, as code_eval joins them) in
our sandbox instead. lm-eval refuses the tasks without ``confirm_run_unsafe_code=True``
(``unsafe_code: true``), and the sandbox refuses to run anything unless the user opted in
(``--allow-code-exec``, i.e. EVO_EVAL_ALLOW_CODE_EXEC=1).

With greedy decoding there is one sample per problem, so pass@1 is whether that sample passed.
"""

from __future__ import annotations

from lm_eval.api.samplers import ContextSampler

# Seconds per program: lm-eval's code_eval default, so a slow or looping completion fails as it would
# there (HumanEval's and MBPP's reference solutions pass in a fraction of that).
TIMEOUT_S = 3.0


def _passed(program: str) -> float:
    from evo_eval.scoring.code_exec import check_program

    return 1.0 if check_program(program, timeout=TIMEOUT_S).passed else 0.0


def _program(prediction, reference: str) -> str:
    completion = prediction[0] if isinstance(prediction, list) else prediction
    return f"{completion}\n{reference}"


def pass_at_k(references: list[str], predictions: list, **_: object) -> dict[str, float]:
    """HumanEval(-FIM): {"pass@1": 0 or 1}; the prediction is the filtered complete program."""
    return {"pass@1": _passed(_program(predictions[0], references[0]))}


def pass_at_1(references: list[str], predictions: list, **_: object) -> float:
    """MBPP: 0 or 1; the prediction is the raw completion, the reference the three asserts."""
    return _passed(_program(predictions[0], references[0]))


def humaneval_programs(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval's `create_test` filter for HumanEval: the prompt followed by the completion."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def infilling_programs(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval's `create_test` filter for infilling: prefix, the generated middle, suffix."""
    return [[doc["prompt"] + r + doc["suffix"] for r in resp] for resp, doc in zip(resps, docs)]


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


