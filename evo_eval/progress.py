"""What `evo-eval run` tells its user while and after it works (the CLI draws it; run.py reports events)."""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator


def _keys(outcomes: list[Any], status: str) -> list[str]:
    return list(dict.fromkeys(o.benchmark for o in outcomes if o.status == status))


def skipped_summary(summary: Any) -> str | None:
    """One closing line on what the suite is missing and why, or None when nothing was skipped.

    Errors (data missing without --skip-missing, failures) get their own ``error:`` lines; this line
    covers what a run skips by design: code benchmarks without --allow-code-exec, and benchmarks not
    in the mirror when --skip-missing accepts that.
    """
    from .errors import EXIT_INCOMPLETE

    opt_in, no_data = _keys(summary.outcomes, "needs-opt-in"), _keys(summary.outcomes, "no-data")
    if not opt_in and not no_data:
        return None
    total = len(dict.fromkeys(o.benchmark for o in summary.outcomes))
    reasons = []
    if opt_in:
        reasons.append(f"{', '.join(opt_in)} execute model-written code and --allow-code-exec was not given")
    if no_data:
        reasons.append(f"{', '.join(no_data)} not in the data mirror")
    head = f"{len(opt_in) + len(no_data)} of {total} benchmark(s) not run: {'; '.join(reasons)}"
    if summary.exit_code == EXIT_INCOMPLETE:
        return (f"incomplete: {head} — pass --allow-code-exec to run them in the sandbox, or --skip-missing to "
                f"accept an incomplete suite (exit status {EXIT_INCOMPLETE})")
    return f"incomplete, as --skip-missing accepts: {head}"


# ---- requests within a benchmark ------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Requests answered so far in one benchmark, over every data-parallel rank that has reported."""

    benchmark: str
    done: int
    total: int
    rate: float | None  # requests computed per second (journal reuse is instant and left out)
    eta_s: float | None
    ranks: int
    final: bool = False

    def line(self) -> str:
        """The plain progress line for logs (slurm, nohup), e.g. ``120/400 requests, 3.2/s, ETA 1m27s``."""
        parts = [f"{self.done}/{self.total} requests"]
        if self.ranks > 1:
            parts[0] += f" over {self.ranks} ranks"
        if self.rate:
            parts.append(f"{self.rate:.1f}/s" if self.rate >= 1 else f"{60 * self.rate:.1f}/min")
        if self.eta_s is not None and not self.final:
            parts.append(f"ETA {duration(self.eta_s)}")
        return ", ".join(parts)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class RequestProgress:
    """Counts one benchmark's requests as the journal answers them, and reports them at most every ``every_s``.

    Under data parallelism each rank answers its own share; ranks other than 0 publish their counts
    in ``<journal folder>/<benchmark>.rank<r>.progress.json`` (a tiny file replaced atomically), and
    rank 0 adds them to its own, so the numbers shown are the whole benchmark's.
    """

    def __init__(self, benchmark: str, folder: Path, rank: int = 0, world_size: int = 1,
                 report: Callable[[Snapshot], None] | None = None, every_s: float | None = None):
        self.benchmark, self.folder, self.rank, self.world_size = benchmark, Path(folder), rank, world_size
        self.report = report or (lambda _snapshot: None)
        # Twice a second is enough for a bar; a log asking for lines more often gets them more often.
        self.every_s = min(0.5, _every_s()) if every_s is None else every_s
        self.done = self.total = self.computed = 0
        self.started = time.time()
        self._asked: float | None = None
        self._last = 0.0

    def _path(self, rank: int) -> Path:
        return self.folder / f"{self.benchmark}.rank{rank}.progress.json"

    def begin(self, count: int) -> None:
        if self._asked is None:  # the rate counts from when the model was first asked
            self._asked = time.monotonic()
        self.total += count
        self._emit(force=True)

    def advance(self, count: int, computed: bool = True) -> None:
        if count <= 0:
            return
        if computed:
            self.computed += count
        self.done += count
        self._emit()

    def publish(self) -> None:
        """Every rank's final counts on disk; call before the ranks synchronise, then ``finish`` on rank 0."""
        if self.rank != 0:
            self._write()

    def finish(self) -> None:
        if self.rank == 0:
            self.report(self._snapshot(final=True))
            for rank in range(1, self.world_size):
                self._path(rank).unlink(missing_ok=True)

    def _rate(self) -> float | None:
        if self._asked is None or not self.computed:
            return None
        elapsed = time.monotonic() - self._asked
        return self.computed / elapsed if elapsed > 0 else None

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        if self.rank != 0:
            self._write()
        else:
            self.report(self._snapshot())

    def _write(self) -> None:
        data = {"done": self.done, "total": self.total, "rate": self._rate()}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self._path(self.rank).with_suffix(".tmp")
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, self._path(self.rank))
        except OSError:  # progress is a courtesy: a full disk must fail in the journal, not here
            pass

    def _others(self) -> list[dict[str, Any]]:
        out = []
        for rank in range(1, self.world_size):
            path = self._path(rank)
            try:
                if path.stat().st_mtime < self.started - 1:  # left by an earlier, killed run
                    continue
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return out

    def _snapshot(self, final: bool = False) -> Snapshot:
        mine = {"done": self.done, "total": self.total, "rate": self._rate()}
        ranks = [mine, *self._others()]
        done, total = sum(r["done"] for r in ranks), sum(r["total"] for r in ranks)
        rates = [r.get("rate") for r in ranks]
        rate = sum(r for r in rates if r) or None
        # The benchmark ends when its slowest rank does.
        etas = [(r["total"] - r["done"]) / r["rate"] for r in ranks if r.get("rate")]
        eta = max(etas) if etas and len(etas) == len(ranks) else None
        return Snapshot(self.benchmark, done, total, rate, eta, self.world_size, final)


@contextmanager
def quiet_git_describe() -> Iterator[None]:
    """lm-eval's results record ``git describe`` of the current folder; outside a git checkout git prints
    ``fatal: not a git repository`` to the terminal once per benchmark. Same value, without that line."""
    import subprocess

    import lm_eval.evaluator as evaluator
    from lm_eval.loggers.utils import get_commit_from_path

    original = evaluator.get_git_commit_hash

    def get_git_commit_hash() -> str | None:
        try:
            return subprocess.check_output(["git", "describe", "--always"], stderr=subprocess.DEVNULL).strip().decode()
        except (subprocess.CalledProcessError, FileNotFoundError):
            return get_commit_from_path(os.getcwd())  # lm-eval's own fallback

    evaluator.get_git_commit_hash = get_git_commit_hash
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = original


# ---- showing it -------------------------------------------------------------------------------------

# Seconds between plain progress lines when stderr is not a terminal (a slurm or nohup log).
EVERY_ENV = "EVO_EVAL_PROGRESS_EVERY"
DEFAULT_EVERY_S = 60.0


def _every_s() -> float:
    try:
        return max(0.0, float(os.environ.get(EVERY_ENV, DEFAULT_EVERY_S)))
    except ValueError:
        return DEFAULT_EVERY_S


class BenchmarkProgress:
    """One benchmark's request progress: a rich bar on a terminal, a plain line every so often in a log."""

    def __init__(self, progress: Any, console: Any, every_s: float | None = None):
        self.progress, self.console = progress, console
        self.interactive = bool(console.is_interactive)
        self.every_s = _every_s() if every_s is None else every_s
        self.tasks: dict[str, Any] = {}
        self.last_line: dict[str, float] = {}

    def update(self, snapshot: Snapshot) -> None:
        key = snapshot.benchmark
        if self.interactive:
            detail = snapshot.line().split(", ", 1)[1] if ", " in snapshot.line() else ""
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(f"  {key}", total=snapshot.total or None, detail=detail)
            self.progress.update(self.tasks[key], completed=snapshot.done, total=snapshot.total or None,
                                 detail=detail + (f" over {snapshot.ranks} ranks" if snapshot.ranks > 1 else ""))
            return
        if snapshot.final:  # the benchmark's own closing line follows
            return
        now = time.monotonic()
        started = self.last_line.setdefault(key, now)
        if now - started >= self.every_s and snapshot.total:
            self.last_line[key] = now
            self.console.print(f"  {key:<15} {snapshot.line()}", markup=False, highlight=False)

    def close(self, key: str) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            self.progress.remove_task(task)
        self.last_line.pop(key, None)


def results_line(summary: Any, output: Path) -> str | None:
    """Where this run's results are: the folder(s) written now or found done earlier."""
    written = [o for o in summary.outcomes if o.status == "done" and o.path is not None]
    earlier = [o for o in summary.outcomes if o.status == "skipped" and o.path is not None]
    folders = list(dict.fromkeys(str(o.path.parent) for o in written + earlier))
    if not folders:
        return None
    return (f"results in {', '.join(folders)}: {len(written)} written now, {len(earlier)} kept from earlier runs "
            f"(`evo-eval table --results {output}` shows them)")
