"""Synthetic results files: lm-eval's own layout (samples per leaf task, per-document metric values)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from evo_eval.store import KIND, SCHEMA_VERSION, atomic_write_text, result_path, to_json


def synthetic_record(model: str, benchmark: str, per_task: dict[str, list[float]], *, metric: str = "acc,none",
                     shots: int = 5, stage: str = "base", protocol: str = "p", weighted: bool = True,
                     prompts: dict[str, list[str]] | None = None, chat_template: bool = False,
                     answers: dict[str, list[str]] | None = None, records: list[dict] | None = None) -> dict[str, Any]:
    """A results file's data whose stored score is lm-eval's aggregate of the given per-document scores."""
    name, _, filt = metric.partition(",")
    samples, hashes = {}, {}
    for task, values in per_task.items():
        rows = []
        for i, v in enumerate(values):
            prompt = prompts[task][i] if prompts else f"{task} question {i}\nAnswer:"
            answer = answers[task][i] if answers else ("right" if v else "wrong")
            rows.append({"doc_id": i, "doc": {"q": f"q{i}"}, "target": "right", "arguments": [[prompt, " right"]],
                         "resps": [[answer]], "filtered_resps": [answer], "filter": filt, "metrics": [name], name: v})
        samples[task] = rows
        hashes[task] = {str(i): f"h-{task}-{(prompts or {}).get(task, [''] * len(values))[i]}-{i}"
                        for i in range(len(values))}
    means = [np.mean(v) for v in per_task.values()]
    pooled = float(np.mean(np.concatenate([np.asarray(v, float) for v in per_task.values()])))
    score = pooled if weighted or len(means) == 1 else float(np.mean(means))
    return {"schema_version": SCHEMA_VERSION, "kind": KIND, "model": model, "stage": stage, "benchmark": benchmark,
            "task": f"evo_{benchmark}", "metric": metric, "score": score, "shots": shots, "protocol": protocol,
            "prompt_hashes": hashes, "chat_template": chat_template, "limit": None,
            "lm_eval": {"results": {f"evo_{benchmark}": {metric: score}}}, "samples": samples,
            "requests": {"per_request": records or []}, "provenance": {}}


def write_record(root, *args, **kwargs) -> dict[str, Any]:
    data = synthetic_record(*args, **kwargs)
    atomic_write_text(result_path(root, data["stage"], data["model"], data["benchmark"]), to_json(data))
    return data


@pytest.fixture
def record():
    """``record(model, benchmark, {leaf task: [per-document scores]}, ...)``: a results file's data."""
    return synthetic_record


@pytest.fixture
def write():
    """``write(root, model, benchmark, {leaf task: [scores]}, ...)``: the same, written into a results folder."""
    return write_record
