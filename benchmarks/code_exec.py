"""Throughput of the code-execution sandbox on HumanEval's 164 canonical solutions.

    .venv/bin/python benchmarks/code_exec.py [--data PATH] [--workers N ...] [--repeats R] [--output FILE]

For each worker count: wall time, programs/s and how many passed (all 164 should), median over
``--repeats`` batches. Two baselines put the figures in context on a machine that may be busy:
a bare ``python -I -S -c pass`` per program with the same workers (the floor any one-process-
per-program design pays), and the same solutions under the guard alone (no namespaces, Landlock
or seccomp), which shows what the kernel mechanisms cost. Prints the protections in force and
the load average, and writes everything as JSON with --output.
"""

from __future__ import annotations

import argparse
import contextlib
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

DEFAULT_DATA = REPO.parent / "shared" / "benchdata" / "humaneval" / "HumanEval.jsonl.gz"


def humaneval_programs(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        problems = [json.loads(line) for line in handle]
    return [p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + "\n" + f"check({p['entry_point']})"
            for p in problems]


def sandbox_batch(programs: list[str], workers: int) -> dict:
    start = time.perf_counter()
    results = check_programs(programs, workers=workers, allow=True)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "passed": sum(r.passed for r in results),
            "busy_s": sum(r.wall_s for r in results)}


def bare_batch(count: int, workers: int) -> dict:
    def start_one(_):
        subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], env={}, check=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(start_one, range(count)))
    return {"wall_s": time.perf_counter() - start}


def median_of(run, repeats: int) -> dict:
    rows = [run() for _ in range(repeats)]
    out = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    out["runs_wall_s"] = [round(row["wall_s"], 3) for row in rows]
    return out


@contextlib.contextmanager
def guard_only():
    """Run as if this machine had none of the kernel mechanisms."""
    real_probe = sandbox_layers.probe
    facts = real_probe().facts
    sandbox_layers.probe = lambda: sandbox_layers.Probe(sandbox_layers.GUARD_ONLY, facts)
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
    print(f"{'workers':>7} {'what':<22} {'wall s':>7} {'prog/s':>7} {'passed':>7} {'overlap':>7}")
    for workers in counts:
        rows = {"sandbox": median_of(lambda: sandbox_batch(programs, workers), args.repeats)}
        with guard_only():
            rows["guard only"] = median_of(lambda: sandbox_batch(programs, workers), args.repeats)
        rows["bare interpreter"] = median_of(lambda: bare_batch(len(programs), workers), args.repeats)
        for what, row in rows.items():
            rate = len(programs) / row["wall_s"]
            passed = f"{row['passed']:.0f}" if "passed" in row else "-"
            # overlap: summed per-program wall time over batch wall time, ~workers if they ran in parallel
            overlap = f"{row['busy_s'] / row['wall_s']:.2f}" if "busy_s" in row else "-"
            print(f"{workers:>7} {what:<22} {row['wall_s']:>7.2f} {rate:>7.1f} {passed:>7} {overlap:>7}")
            report["rows"].append({"workers": workers, "what": what, "programs_per_s": rate, **row})
    report["load_after"] = os.getloadavg()
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
    return 0 if all(r.get("passed", len(programs)) == len(programs) for r in report["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
