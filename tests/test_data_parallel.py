"""Data parallelism: `accelerate launch` with two CPU processes splits the documents and agrees with one process.

lm-eval alone draws random few-shot examples per rank from a sampler seeded once per task, so a task
with random shots would render other prompts under two processes than under one (its own
`build_all_requests` notes it); evo-eval draws them per document (evo_eval/fewshot.py), which the
last test proves with random 3-shot GSM8K and ARC-Challenge prompts. Batch size 1: padded batches
change greedy generations of a random-weight model.
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


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_random_shots_render_the_same_prompts_on_one_and_two_processes(cli_processes, small_mirror, tiny_llama_dir,
                                                                     tmp_path):
    """Few-shot draws seeded per document: 2 gloo ranks render byte-identical prompts to 1 process, and the
    results count every rank's requests, not rank 0's share."""
    common = ["run", "--model", "llama3-8b", "--checkpoint", str(tiny_llama_dir), "--data-dir", str(small_mirror),
              "--tasks", "gsm8k,arc_challenge", "--shots", "3", "--limit", "5", "--device", "cpu",
              "--bootstrap-iters", "0", "--gen-kwargs", "max_gen_toks=4", "--batch-size", "1"]
    code, single = cli_processes.run(*common, "--output", str(tmp_path / "one"))
    assert code == 0, single.stderr
    port = str(_free_port())
    ranks = [cli_processes.start(*common, "--output", str(tmp_path / "two"),
                                 env={"WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": "2",
                                      "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}) for r in range(2)]
    for command in ranks:
        assert command.wait() == 0, command.stderr
    for benchmark, requests in (("gsm8k", 5), ("arc_challenge", None)):  # requests at --limit 5
        one = json.loads((tmp_path / "one" / "base" / "llama3-8b" / f"{benchmark}.json").read_text())
        two = json.loads((tmp_path / "two" / "base" / "llama3-8b" / f"{benchmark}.json").read_text())
        assert two["provenance"]["world_size"] == 2
        (task,) = one["prompt_hashes"]
        assert sorted(one["prompt_hashes"][task]) == sorted(two["prompt_hashes"][task]) == ["0", "1", "2", "3", "4"]
        assert two["prompt_hashes"] == one["prompt_hashes"], benchmark
        contexts = {r["doc_id"]: r["arguments"] for r in one["samples"][task]}
        assert {r["doc_id"]: r["arguments"] for r in two["samples"][task]} == contexts
        # Three shots each, drawn at random: not all documents share the same shots.
        assert len({str(args[0][0]).split("Question:")[1] if benchmark == "gsm8k" else str(args[0][0])[:200]
                    for args in contexts.values()}) > 1
        # Every rank's requests (lm-eval pads the shorter rank with copies of its last request, so that
        # collectives line up: those are computed too), never rank 0's share alone (3 of 5 documents).
        total, both = one["requests"]["computed"], two["requests"]["computed"]
        assert total == (requests or total), benchmark
        share = sum(len(args) for doc, args in contexts.items() if doc % 2 == 0)
        assert total <= both < total + share and both > share, (benchmark, total, both)
        assert f"  {both} requests," in ranks[0].stderr
