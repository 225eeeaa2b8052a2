"""Data parallelism: `accelerate launch` with two CPU processes splits the documents and agrees with one process.

Zero shots: lm-eval draws random few-shot examples per rank from a sampler seeded once per task, so a
task with random shots renders different prompts under two processes than under one (its own
`build_all_requests` notes it). The results record one hash per prompt, and `table` flags such rows.
Batch size 1: padded batches change greedy generations of a random-weight model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ACCELERATE = Path(sys.executable).with_name("accelerate")


def launch(processes: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes == 1:
        command = [sys.executable, "-m", "evo_eval.cli", *args]
    else:
        # --multi_gpu is accelerate's multi-process launcher (torchrun); on a CPU machine the harness forms
        # a gloo process group itself (adapters/distributed.py).
        command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "evo_eval.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def samples(root: Path, model: str, benchmark: str) -> dict[int, list]:
    record = json.loads((root / "base" / model / f"{benchmark}.json").read_text())
    (rows,) = record["samples"].values()
    return {row["doc_id"]: row["filtered_resps"] for row in rows}, record


@pytest.mark.slow
@pytest.mark.parametrize("model_kind", ["hf", "evo"])
def test_two_cpu_processes_split_documents_and_match_one(model_kind, tmp_path, tiny_qwen_dir, tokenizer_dir,
                                                         small_mirror):
    if model_kind == "hf":
        model, checkpoint = "qwen2.5-7b", tiny_qwen_dir
    else:
        from evo_eval.tiny import build_tiny_family

        card, checkpoint = build_tiny_family("evo", tmp_path / "models", tokenizer_dir)
        model = str(card)
    name = "qwen2.5-7b" if model_kind == "hf" else "evo-tiny"
    common = ["run", "--model", model, "--checkpoint", str(checkpoint), "--data-dir", str(small_mirror),
              "--tasks", "gsm8k,arc_challenge", "--limit", "4", "--device", "cpu", "--bootstrap-iters", "0",
              "--gen-kwargs", "max_gen_toks=8", "--batch-size", "1", "--shots", "0"]
    single = launch(1, [*common, "--output", str(tmp_path / "one")], tmp_path)
    assert single.returncode == 0, single.stderr
    double = launch(2, [*common, "--output", str(tmp_path / "two")], tmp_path)
    assert double.returncode == 0, double.stderr
    for benchmark in ("gsm8k", "arc_challenge"):
        one, _ = samples(tmp_path / "one", name, benchmark)
        two, record = samples(tmp_path / "two", name, benchmark)
        assert record["provenance"]["world_size"] == 2
        journals = sorted(p.name for p in (tmp_path / "two" / "base" / name / ".journal").glob(f"{benchmark}.rank*"))
        assert journals == [f"{benchmark}.rank0.jsonl", f"{benchmark}.rank1.jsonl"]
        assert sorted(two) == sorted(one) == [0, 1, 2, 3]
        if benchmark == "gsm8k":  # greedy generations: identical whichever process produced them
            assert two == one
        else:  # log-likelihoods: equal to float32 round-off, whatever the batch composition
            for doc in one:
                assert [float(x[0]) for x in two[doc]] == pytest.approx([float(x[0]) for x in one[doc]], abs=1e-4)
