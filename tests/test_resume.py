"""Resume that loses nothing: a real `evo-eval run` SIGKILLed at twelve points ends as a clean run does.

The run: the tiny Llama under the llama3-8b card on real ARC-Challenge (likelihood) and GSM8K
(generation) data, 4 documents each, batch size 2, so that lm-eval's HF backend pads its batches.

Kill points, drawn from a seeded generator and spread over the run, each a real SIGKILL: twice at a
random moment of start-up (before the first request can be answered); at the n-th journal line of
the attempt, random n and random side of the write (before the line is written, or right after
the OS has it), five times, the journal's last line once cut in half afterwards, as a crash in the
middle of a write would leave it; while each benchmark's results are written (temporary file
complete and synced but not renamed; renamed but the folder not synced). After each kill the same
command resumes; the last attempt finds everything done. Kills inside the run are sent by the
process to itself at the exact point (tests/evo_child.py): a kill from outside, timed by polling,
would race with the scheduler of a loaded machine.

Equality with the clean run is byte for byte, except for exactly these fields, which measure time
or how much a resume reused rather than what the evaluation produced (``EXCLUDED``):

* ``provenance.written_at`` and ``provenance.wall_time_s`` — when the file was written, how long it took;
* ``lm_eval.date`` — lm-eval's start time stamp;
* ``requests.reused_from_journal`` and ``requests.computed`` — the journal's reuse counters;
* ``requests.per_request[*].wall_s`` — per-request wall time (the HF backend records none).
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

from evo_eval.store import to_json

RUN = ["run", "--model", "llama3-8b", "--tasks", "arc_challenge,gsm8k", "--limit", "4", "--shots", "1",
       "--batch-size", "2", "--device", "cpu", "--bootstrap-iters", "0", "--gen-kwargs", "max_gen_toks=16"]
BENCHMARKS = {"arc_challenge": 16, "gsm8k": 4}  # requests per benchmark at --limit 4
EXCLUDED = (("provenance", "written_at"), ("provenance", "wall_time_s"), ("lm_eval", "date"),
            ("requests", "reused_from_journal"), ("requests", "computed"))
SEED = 20240611


def comparable(path: Path) -> str:
    """The results file with the excluded fields blanked, serialised exactly as the store writes it."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    assert to_json(data) == text, f"{path} is not in the store's canonical form; re-serialising could hide a change"
    for section, key in EXCLUDED:
        assert key in data[section], f"{section}.{key} vanished from {path}: update EXCLUDED"
        data[section][key] = "<excluded>"
    for record in data["requests"]["per_request"]:
        record["wall_s"] = "<excluded>"
    return to_json(data)


def valid_lines(folder: Path, benchmark: str | None = None) -> int:
    """Complete journal lines that parse as JSON objects (a cut line does not count)."""
    count = 0
    for path in (folder / "base" / "llama3-8b" / ".journal").glob(f"{benchmark or '*'}.rank*.jsonl"):
        for line in path.read_bytes().splitlines(keepends=True):
            try:
                count += line.endswith(b"\n") and isinstance(json.loads(line), dict)
            except ValueError:
                pass
    return count


def tear_last_line(folder: Path, benchmark: str) -> None:
    """Cut the journal's last line in half, as a crash in the middle of a write would leave it."""
    path = folder / "base" / "llama3-8b" / ".journal" / f"{benchmark}.rank0.jsonl"
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: start + (len(data) - start) // 2])


@pytest.mark.slow
def test_sigkill_at_twelve_points_then_resume_matches_a_clean_run(cli_processes, small_mirror, tiny_llama_dir,
                                                                   tmp_path):
    args = [*RUN, "--checkpoint", str(tiny_llama_dir), "--data-dir", str(small_mirror)]
    # The same command line in two folders (the command is part of each file's provenance).
    args += ["--output", "results"]
    clean, resumed = tmp_path / "clean" / "results", tmp_path / "resumed" / "results"
    for folder in (clean, resumed):
        folder.parent.mkdir()
    code, command = cli_processes.run(*args, cwd=clean.parent)
    assert code == 0, command.stderr
    assert valid_lines(clean) == sum(BENCHMARKS.values())

    rng = random.Random(SEED)
    out = {"cwd": resumed.parent}
    results = resumed / "base" / "llama3-8b"
    kills: list[str] = []

    def killed(why: str, kill_at: tuple | None = None, after_s: float | None = None):
        command = cli_processes.start(*args, **out, kill_at=kill_at)
        if after_s is not None:
            assert command.wait_until(lambda: time.monotonic() - command.started >= after_s), command.stderr
            command.kill()
        assert command.wait() == -signal.SIGKILL, f"finished before the kill point ({why}):\n{command.stderr}"
        kills.append(why)
        return command

    def at_line(why: str):
        n, side = rng.randint(1, 3), rng.choice(["before", "after"])
        return killed(f"{why}: {side} journal line {n}", ("append", n, side))

    for _ in range(2):
        killed("start-up", after_s=rng.uniform(0.05, 0.5))
    for _ in range(2):
        at_line("ARC")
    tear_last_line(resumed, "arc_challenge")
    command = at_line("ARC after a torn line")
    assert "warning: 1 journal line(s) skipped and their requests redone" in command.stderr
    assert "arc_challenge.rank0.jsonl line" in command.stderr and "is truncated" in command.stderr
    for _ in range(2):
        at_line("ARC")
    assert not (results / "arc_challenge.json").exists()
    assert 0 < valid_lines(resumed, "arc_challenge") < BENCHMARKS["arc_challenge"]

    killed("ARC results: temporary file written", ("write", "arc_challenge.json", "before-rename"))
    assert not (results / "arc_challenge.json").exists()
    assert list(results.glob(".arc_challenge.json.*.tmp")), "the complete temporary file should be left"
    killed("ARC results: renamed", ("write", "arc_challenge.json", "after-rename"))
    assert comparable(results / "arc_challenge.json") == comparable(clean / "base" / "llama3-8b" / "arc_challenge.json")

    at_line("GSM8K")
    killed("GSM8K results: temporary file written", ("write", "gsm8k.json", "before-rename"))
    assert not (results / "gsm8k.json").exists()
    killed("GSM8K results: renamed", ("write", "gsm8k.json", "after-rename"))
    assert len(kills) >= 10, kills

    code, command = cli_processes.run(*args, **out)  # finds everything done: nothing to redo
    assert code == 0, command.stderr
    assert command.stderr.count("done earlier") == 2
    for benchmark in BENCHMARKS:
        mine, theirs = results / f"{benchmark}.json", clean / "base" / "llama3-8b" / f"{benchmark}.json"
        assert comparable(mine) == comparable(theirs), benchmark
    # Every request journaled exactly once, whatever was recomputed; the torn line is the only bad one.
    assert valid_lines(resumed) == sum(BENCHMARKS.values())
    journal = results / ".journal"
    assert sum(p.read_bytes().count(b"\n") for p in journal.glob("*.jsonl")) == sum(BENCHMARKS.values()) + 1


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def data_parallel(cli_processes, args: list[str], ranks: int = 2) -> str:
    """One `evo-eval run` as `accelerate launch` would start it: one process per rank, gloo on CPU.

    Returns rank 0's stderr (the other ranks keep quiet).
    """
    port = str(free_port())
    commands = [cli_processes.start(*args, env={"WORLD_SIZE": str(ranks), "RANK": str(r), "LOCAL_RANK": str(r),
                                                "LOCAL_WORLD_SIZE": str(ranks), "MASTER_ADDR": "127.0.0.1",
                                                "MASTER_PORT": port})
                for r in range(ranks)]
    for command in commands:
        assert command.wait() == 0, command.stderr
    return commands[0].stderr


def evaluation(path: Path) -> dict:
    """What a run measured, leaving out provenance and timing."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {"score": data["score"], "results": data["lm_eval"]["results"], "samples": data["samples"]}


@pytest.mark.slow
def test_data_parallel_ranks_keep_their_own_journals(cli_processes, small_mirror, tiny_llama_dir, tmp_path):
    """Two ranks append to their own files, a resume reads both, and --force clears them only once.

    A resume keeps the number of processes: the HF backend's journal chunks are a function of each
    rank's request list (docs/resume.md).
    """
    out = tmp_path / "results"
    args = [*RUN, "--checkpoint", str(tiny_llama_dir), "--data-dir", str(small_mirror), "--output", str(out)]
    args[args.index("--limit") + 1] = "3"  # 12 ARC and 3 GSM8K requests, split over two ranks
    results, journal = out / "base" / "llama3-8b", out / "base" / "llama3-8b" / ".journal"
    data_parallel(cli_processes, [*args, "--force"])
    files = sorted(p.name for p in journal.glob("*.jsonl"))
    assert files == ["arc_challenge.rank0.jsonl", "arc_challenge.rank1.jsonl", "gsm8k.rank0.jsonl", "gsm8k.rank1.jsonl"]
    assert valid_lines(out) == 15 and all(valid_lines(out, b) for b in BENCHMARKS)
    measured = {b: evaluation(results / f"{b}.json") for b in BENCHMARKS}

    for benchmark in BENCHMARKS:
        (results / f"{benchmark}.json").unlink()
    stderr = data_parallel(cli_processes, args)
    assert stderr.count("  0 requests,") == 2, stderr  # every answer from the journals, on either rank
    assert valid_lines(out) == 15
    assert {b: evaluation(results / f"{b}.json") for b in BENCHMARKS} == measured

    # --force under two ranks: rank 0 clears the old journals before either rank appends to its own.
    data_parallel(cli_processes, [*args, "--force"])
    assert valid_lines(out) == 15 and sorted(p.name for p in journal.glob("*.jsonl")) == files
    assert {b: evaluation(results / f"{b}.json") for b in BENCHMARKS} == measured


def test_results_are_reused_only_under_the_same_fingerprint(cli_processes, small_mirror, tiny_llama_dir, tmp_path):
    """A `--limit 2` smoke test, then the full run into one --output, re-runs; so does another checkpoint;
    the same settings reuse; the replaced file is kept aside; stale journal lines are not reused."""
    import shutil

    out = tmp_path / "results"
    base = ["run", "--model", "llama3-8b", "--tasks", "arc_challenge", "--shots", "0", "--batch-size", "1",
            "--device", "cpu", "--bootstrap-iters", "0", "--data-dir", str(small_mirror), "--output", str(out)]
    results = out / "base" / "llama3-8b"
    path = results / "arc_challenge.json"

    code, command = cli_processes.run(*base, "--checkpoint", str(tiny_llama_dir), "--limit", "2")
    assert code == 0, command.stderr
    smoke = json.loads(path.read_text())
    assert smoke["limit"] == 2 and smoke["fingerprint"]["fields"]["limit"] == 2

    code, command = cli_processes.run(*base, "--checkpoint", str(tiny_llama_dir), "--limit", "3")
    assert code == 0, command.stderr
    lines = [line for line in command.stderr.splitlines() if "settings changed" in line]
    assert len(lines) == 1 and "--limit 2 → 3" in lines[0], command.stderr
    assert "done earlier" not in command.stderr
    full = json.loads(path.read_text())
    assert full["limit"] == 3 and len(full["samples"]["evo_arc_challenge"]) == 3
    # The smoke test's journal lines (another limit) were not reused: all 12 requests computed anew.
    assert full["requests"]["computed"] == 12 and full["requests"]["reused_from_journal"] == 0
    kept = list((results / ".superseded").glob("arc_challenge.*.json"))
    assert [json.loads(p.read_text())["limit"] for p in kept] == [2]

    code, command = cli_processes.run(*base, "--checkpoint", str(tiny_llama_dir), "--limit", "3")
    assert code == 0 and "done earlier" in command.stderr and "settings changed" not in command.stderr
    assert json.loads(path.read_text())["provenance"]["written_at"] == full["provenance"]["written_at"]

    other = tmp_path / "other-checkpoint"
    shutil.copytree(tiny_llama_dir, other)
    code, command = cli_processes.run(*base, "--checkpoint", str(other), "--limit", "3")
    assert code == 0, command.stderr
    assert "settings changed" in command.stderr and "checkpoint" in command.stderr
    assert json.loads(path.read_text())["provenance"]["checkpoint"] == str(other.resolve())
    assert len(list((results / ".superseded").glob("arc_challenge.*.json"))) == 2
