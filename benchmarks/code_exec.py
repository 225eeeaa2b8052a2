"""Throughput of the code-execution sandbox on HumanEval's 164 canonical solutions.

    .venv/bin/python benchmarks/code_exec.py [--data PATH] [--workers N ...] [--repeats R] [--output FILE]

For each worker count: wall time, programs/s and how many passed (all 164 should), median over
``--repeats`` batches. The sandbox runs each program split (the tests in a checker process, the
solution in a candidate process; evo_eval.sandbox.split); "one process" is the same programs
joined, as before the split verdict (issue 13 item 6), the comparison that change is held to.
Baselines put the figures in context on a machine that may be busy,
each measured interleaved with the sandbox: a bare ``python -I -S -c pass`` per program with the
same workers (the floor any one-process-per-program design pays), the same solutions under the
guard alone (no namespaces, Landlock or seccomp), which shows what the kernel mechanisms cost, and
(where they are available) the sandbox without its user, PID and mount namespaces, as it was
before issue 13. Prints the protections in force and
the load average, and writes everything as JSON with --output.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evo_eval.sandbox import layers as sandbox_layers  # noqa: E402
from evo_eval.sandbox.code_exec import check_programs, protections  # noqa: E402
from evo_eval.scoring.pass_at_k import split_program  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "benchdata" / "humaneval" / "HumanEval.jsonl.gz"


def humaneval_programs(path: Path) -> list:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        problems = [json.loads(line) for line in handle]
    return [split_program(p, p["canonical_solution"]) for p in problems]


def sandbox_batch(programs: list, workers: int, joined: bool = False) -> dict:
    if joined:
        programs = [p.joined() for p in programs]
    start = time.perf_counter()
    results = check_programs(programs, workers=workers, allow=True)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "passed": sum(r.passed for r in results),
            "split": sum(r.verdict == "split" for r in results), "busy_s": sum(r.wall_s for r in results)}


def bare_batch(count: int, workers: int) -> dict:
    def start_one(_):
        subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], env={}, check=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(start_one, range(count)))
    return {"wall_s": time.perf_counter() - start}


def median_row(rows: list[dict]) -> dict:
    out = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    out["runs_wall_s"] = [round(row["wall_s"], 3) for row in rows]
    return out


@contextlib.contextmanager
def layers_as(layers: sandbox_layers.Layers | None):
    """Run with these layers (None: as probed): GUARD_ONLY is a machine with none of the kernel
    mechanisms; the probed layers less `userns` are the sandbox before issue 13 (no user, PID or
    mount namespaces), the comparison its change is held to."""
    real_probe = sandbox_layers.probe
    found = real_probe()
    sandbox_layers.probe = lambda: sandbox_layers.Probe(layers or found.layers, found.facts)
    try:
        yield
    finally:
        sandbox_layers.probe = real_probe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HumanEval.jsonl.gz")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="worker counts to measure (default: 1 and the usable CPUs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    programs = humaneval_programs(args.data)
    cpus = len(os.sched_getaffinity(0))
    counts = args.workers or sorted({1, cpus})
    report = {"programs": len(programs), "cpus": cpus, "load_before": os.getloadavg(),
              "protections": protections(), "rows": []}
    for key, line in report["protections"].items():
        print(f"{key:>12}: {line}")
    print(f"\n{len(programs)} HumanEval canonical solutions, {cpus} usable CPUs, "
          f"load average {report['load_before'][0]:.2f}, median of {args.repeats}\n")
    print(f"{'workers':>7} {'what':<26} {'wall s':>7} {'prog/s':>7} {'passed':>7} {'overlap':>7}")
    probed = sandbox_layers.probe().layers
    # (layers, joined): None is as probed; joined runs each program in one process
    profiles = {"sandbox (split)": (None, False), "one process (before)": (None, True),
                "guard only (split)": (sandbox_layers.GUARD_ONLY, False)}
    if probed.userns:
        profiles["without user/pid/mount ns"] = (dataclasses.replace(probed, userns=False), False)
    for workers in counts:
        # Interleaved, one batch of each profile per repeat: on a shared machine the load drifts,
        # and batches run back to back see the same load.
        runs: dict[str, list[dict]] = {what: [] for what in [*profiles, "bare interpreter"]}
        for _ in range(args.repeats):
            for what, (layers, joined) in profiles.items():
                with layers_as(layers):
                    runs[what].append(sandbox_batch(programs, workers, joined))
            runs["bare interpreter"].append(bare_batch(len(programs), workers))
        rows = {what: median_row(batches) for what, batches in runs.items()}
        for what, row in rows.items():
            rate = len(programs) / row["wall_s"]
            passed = f"{row['passed']:.0f}" if "passed" in row else "-"
            # overlap: summed per-program wall time over batch wall time, ~workers if they ran in parallel
            overlap = f"{row['busy_s'] / row['wall_s']:.2f}" if "busy_s" in row else "-"
            print(f"{workers:>7} {what:<26} {row['wall_s']:>7.2f} {rate:>7.1f} {passed:>7} {overlap:>7}")
            report["rows"].append({"workers": workers, "what": what, "programs_per_s": rate, **row})
    for workers in counts:
        rate = {row["what"]: row["programs_per_s"] for row in report["rows"] if row["workers"] == workers}
        change = rate["sandbox (split)"] / rate["one process (before)"] - 1
        print(f"{workers} workers: split {rate['sandbox (split)']:.1f} programs/s, one process "
              f"{rate['one process (before)']:.1f} programs/s ({change:+.0%})")
    report["load_after"] = os.getloadavg()
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
    return 0 if all(r.get("passed", len(programs)) == len(programs) for r in report["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
