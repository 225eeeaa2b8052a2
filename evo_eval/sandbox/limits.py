"""Kernel resource limits for one sandboxed program (child side, stdlib only).

Runs inside the sandboxed process, after the interpreter and the bootstrap have started and before
the program's first line: limits set earlier would also have to fit the interpreter's own start-up.
"""

from __future__ import annotations

import resource

MIB = 1024 * 1024


def apply_limits(cpu_s: int, memory_mb: int, file_mb: int, open_files: int, processes: int,
                 pid_one: bool = False) -> None:
    # CPU: SIGXCPU at the soft limit, SIGKILL one second later at the hard one, so a loop that
    # ignores SIGXCPU still dies. Python does not handle SIGXCPU, so the soft limit already kills,
    # except in a namespace's PID 1 (userns.py), to which the kernel does not deliver it: there
    # the hard limit (SIGKILL) is the CPU limit.
    _lower(resource.RLIMIT_CPU, cpu_s, cpu_s if pid_one else cpu_s + 1)
    # Address space rather than RSS: the kernel enforces RLIMIT_AS at allocation time, so a memory
    # bomb gets MemoryError instead of pushing the host into swap or the OOM killer.
    _lower(resource.RLIMIT_AS, memory_mb * MIB)
    # Python ignores SIGXFSZ, so an over-long write raises OSError(EFBIG) in the program.
    _lower(resource.RLIMIT_FSIZE, file_mb * MIB)
    _lower(resource.RLIMIT_NOFILE, open_files)
    # Per real user id, and ignored for root: see the sandbox package docstring for what stops a
    # fork bomb when it does not apply.
    _lower(resource.RLIMIT_NPROC, processes)
    _lower(resource.RLIMIT_CORE, 0)


def _lower(which: int, soft: int, hard: int | None = None) -> None:
    """Set a limit, never above the hard limit already in force (an unprivileged process may only
    lower it, and an administrator's stricter limit wins)."""
    _, current_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))
