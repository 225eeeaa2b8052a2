"""Rendered prompts: what a task sends the model for a document, and the hash that results record.

``rendered_requests`` builds a task's requests the way lm-eval's evaluator does (shots set, the
few-shot sampler seeded, ``build_all_requests``) without a model, so two tasks can be compared request
by request (tests/tasks/test_prompt_parity.py) and a run can hash the prompts it sent.
"""

from __future__ import annotations

from typing import Any

from ..store import sha256_text

# lm-eval's default few-shot seed (simple_evaluate's fewshot_random_seed); run.py uses the same.
FEWSHOT_SEED = 1234


def prompt_hash(text: str) -> str:
    """sha256 (hex) of a rendered prompt's UTF-8 bytes: equal hashes mean the model saw the same text."""
    return sha256_text(text)


def rendered_requests(task: Any, limit: int, shots: int, seed: int = FEWSHOT_SEED) -> dict[int, list[tuple]]:
    """{doc_id: [request arguments, ...]} for the first ``limit`` documents with ``shots`` shots.

    Arguments are lm-eval's: (context, continuation) per choice for likelihood tasks, (context,
    generation kwargs) for generative ones.
    """
    from ..fewshot import per_document_shots

    task.set_config("num_fewshot", shots)
    task.set_fewshot_seed(seed=seed)
    with per_document_shots(seed):  # shots drawn per document, as `evo-eval run` draws them
        task.build_all_requests(limit=limit, rank=0, world_size=1)
    out: dict[int, list[tuple]] = {}
    for instance in task.instances:
        out.setdefault(instance.doc_id, []).append(tuple(instance.args))
    return out
