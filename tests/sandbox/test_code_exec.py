"""The code-execution sandbox: opt-in, verdicts, hostile programs, throughput on real HumanEval.

Hostile programs (tests/sandbox/hostile/) each run in one batch per protection profile: "probed"
(whatever this machine allows: namespaces, Landlock, seccomp) and "guard-only" (the audit-hook
fallbacks alone, as on a machine with none of them). Each is written so that it would *pass* if its
attack worked, and each must fail for the expected reason; the host must be unchanged afterwards.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import resource
import socket
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from evo_eval.errors import UserError
from evo_eval.sandbox import layers as sandbox_layers
from evo_eval.sandbox import runner
from evo_eval.sandbox.cleanup import remove_tree
from evo_eval.scoring.pass_at_k import split_program
from evo_eval.sandbox.code_exec import (
    ALLOW_ENV, BadExecRequest, CodeExecNotAllowed, Limits, SandboxUnavailable, Split, check_program, check_programs,
    protections,
)

HOSTILE = Path(__file__).with_name("hostile")
GOOD = "def add(a, b):\n    return a + b\n\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n\n\ncheck(add)\n"
WRONG = GOOD.replace("return a + b", "return a - b")
# Refused, or (in a private mount view) simply not there.
REFUSED = r"PermissionError|Operation not permitted|Permission denied|not allowed|No such file or directory"
# hostile program -> (statuses it may end with, what its output must show: why it failed)
EXPECTED = {
    "infinite_loop": ({"timeout", "killed:SIGXCPU", "killed:SIGKILL"}, None),
    "sleep_forever": ({"timeout"}, None),
    "fork_bomb": ({"failed"}, REFUSED),
    "multiprocessing_bomb": ({"failed"}, REFUSED),
    "memory_bomb": ({"failed"}, r"MemoryError"),
    "huge_file": ({"failed"}, r"File too large"),
    "delete_outside": ({"failed"}, REFUSED),
    "write_outside": ({"failed"}, REFUSED),
    "read_home": ({"failed"}, REFUSED),
    "symlink_escape": ({"failed"}, REFUSED),
    "hardlink_escape": ({"failed"}, REFUSED + r"|Invalid cross-device link"),
    "proc_escape": ({"failed"}, REFUSED),
    "open_socket": ({"failed"}, REFUSED + r"|Network is unreachable"),
    "kill_parent": ({"failed"}, REFUSED),
    "exit_before_asserts": ({"failed"}, r"SystemExit: 0"),
    "os_exit_before_asserts": ({"failed"}, None),
    "exit_from_atexit": ({"failed"}, r"AssertionError"),
    "trace_rebinds_check": ({"failed"}, r"settrace is not allowed"),
    "profile_swaps_code": ({"failed"}, r"code is not allowed"),
    "forge_verdict": ({"failed"}, None),
    # ctypes is refused only where the guard stands in for a kernel mechanism; elsewhere seccomp stops
    # the fork it reaches for.
    "native_door": ({"failed"}, r"importing ctypes is not allowed|AssertionError"),
    # issue 13's red-team pass
    "prlimit_harness": ({"failed"}, REFUSED + r"|No such process"),
    "unix_socket_outside": ({"failed"}, REFUSED + r"|Connection refused"),
    "metadata_outside": ({"failed"}, REFUSED + r"|Read-only file system"),
    # Under the guard alone every mkdir resolves its whole path, so the tree may still be growing
    # at the time limit; test_cleanup_survives_a_deep_unreadable_tree covers that cleanup directly.
    # Under the guard alone each path check walks the deepening tree, so it may run out of CPU first.
    "deep_tree": ({"failed", "timeout", "killed:SIGXCPU"}, r"AssertionError|^$"),
    "thread_bomb": ({"failed"}, r"can't start new thread"),
    "file_bomb": ({"failed"}, r"No space left on device"),
    "memfd": ({"failed"}, REFUSED),
}
# Protections only a kernel mechanism gives (a user namespace, seccomp): where it is missing,
# protections() must say so in these words, and the harness must still come through intact.
GAPS = {"thread_bomb": ("processes", "NO thread cap"), "file_bomb": ("quota", "NO disk or file-count quota"),
        "memfd": ("limits", "memfd NOT refused")}
# Attacks on the verdict alone, harmless outside a sandbox: a plain interpreter exits 0 on each,
# so an exit-status grader would have passed them.
VERDICT_ATTACKS = ("exit_before_asserts", "os_exit_before_asserts", "exit_from_atexit",
                   "trace_rebinds_check", "profile_swaps_code", "forge_verdict")
BATCH_TIMEOUT = 2.0
# The memory bomb then stops at 512 MiB, not 2 GiB; the file bomb at 2,000 inodes (the deep tree
# needs 1,500 of them).
BATCH_LIMITS = Limits(memory_mb=512, files=2000)


@pytest.fixture(autouse=True)
def _no_opt_in_from_outside(monkeypatch):
    monkeypatch.delenv(ALLOW_ENV, raising=False)


# ---------------------------------------------------------------- opt-in

def test_refused_without_opt_in():
    with pytest.raises(CodeExecNotAllowed) as refused:
        check_programs([GOOD])
    assert isinstance(refused.value, UserError)
    message = str(refused.value)
    assert "\n" not in message and "--allow-code-exec" in message and ALLOW_ENV in message


def test_environment_variable_opts_in_and_allow_false_overrides(monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "1")
    assert check_program(GOOD).passed
    with pytest.raises(CodeExecNotAllowed):
        check_program(GOOD, allow=False)
    monkeypatch.setenv(ALLOW_ENV, "yes")  # only "1" opts in: no guessing at truthy spellings
    with pytest.raises(CodeExecNotAllowed):
        check_program(GOOD)


# ---------------------------------------------------------------- verdicts

def test_pass_fail_and_order_kept():
    programs = [GOOD, WRONG, "syntax error here\n", GOOD + "raise ValueError('late')\n",
                "if __name__ == '__main__':\n    input()\n" + GOOD]
    results = check_programs(programs, timeout=5, allow=True)
    assert [r.status for r in results] == ["passed", "failed", "failed", "failed", "passed"]
    assert [r.passed for r in results] == [True, False, False, False, True]
    assert "SyntaxError" in results[2].output and "ValueError: late" in results[3].output
    assert all(0 < r.wall_s < 5 for r in results)


def test_empty_batch():
    assert check_programs([], allow=True) == []


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"timeout": -1.0}, {"timeout": "10"}, {"workers": 0},
                                    {"workers": 2.5}, {"programs": [GOOD, b"print(1)"]}])
def test_bad_requests_are_one_line_user_errors(kwargs):
    call = {"programs": [GOOD], **kwargs}
    with pytest.raises(BadExecRequest) as raised:
        check_programs(allow=True, **call)
    assert isinstance(raised.value, UserError) and "\n" not in str(raised.value)


def test_wall_clock_ends_a_sleeping_program_and_threads_do_not_hold_a_pass():
    sleeper = "import time\ntime.sleep(60)\n"
    lingering = "import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()\n" + GOOD
    slept, lingered = check_programs([sleeper, lingering], timeout=0.5, allow=True)
    assert slept.status == "timeout" and not slept.passed
    assert slept.wall_s < 0.5 + runner.STARTUP_GRACE_S + 1.0
    assert lingered.status == "passed" and lingered.wall_s < 2  # passed without waiting for its thread


def test_output_is_capped_and_kept_for_diagnosis():
    flood = "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n"
    result = check_program(flood, timeout=5, allow=True, limits=Limits(output_kb=8))
    # The file-size limit stops the flood (even the traceback no longer fits), the parent keeps a tail.
    assert result.status == "failed" and result.returncode == 1
    assert 0 < len(result.output) <= 8 * 1024


def test_set_up_failure_is_loud_not_a_zero_score(monkeypatch, tmp_path):
    # An interpreter that dies before running the program (as a broken sandbox set-up would):
    # no "ready" on the verdict socket, so no program can be blamed, and the batch raises.
    broken = tmp_path / "child.py"
    broken.write_text("import sys\n\n\ndef main():\n"
                      "    print('sandbox set-up failed: simulated breakage', file=sys.stderr)\n"
                      "    raise SystemExit(121)\n")
    sandbox_layers.probe()  # probed (and cached) with the real bootstrap first
    monkeypatch.setattr(sandbox_layers, "CHILD", broken)
    with pytest.raises(SandboxUnavailable) as raised:
        check_programs([GOOD], allow=True)
    assert "simulated breakage" in str(raised.value) and "\n" not in str(raised.value)


def test_verdict_attacks_would_fool_an_exit_status_grader(tmp_path):
    for name in VERDICT_ATTACKS:
        shutil_copy = tmp_path / f"{name}.py"
        shutil_copy.write_text((HOSTILE / f"{name}.py").read_text())
        done = subprocess.run([sys.executable, "-I", shutil_copy.name], cwd=tmp_path,
                              capture_output=True, timeout=30)
        assert done.returncode == 0, name


# ---------------------------------------------------------------- protections

def test_protections_say_which_mechanism_is_in_force():
    found = protections()
    assert {"network", "filesystem", "processes", "signals", "limits", "verdict"} <= set(found)
    assert all(isinstance(v, str) and v and "\n" not in v for v in found.values())
    probed = sandbox_layers.probe().layers
    assert ("network namespace" in found["network"]) == probed.namespaces
    assert ("Landlock" in found["filesystem"]) == bool(probed.landlock)
    assert ("seccomp" in found["processes"]) == probed.seccomp


def test_seccomp_alone_refuses_network_sockets(monkeypatch, tmp_path):
    # As on a machine where no network namespace can be made (a container, a locked-down kernel):
    # then seccomp, not the Python guard, must refuse the socket.
    probed = sandbox_layers.probe()
    if not probed.layers.seccomp:
        pytest.skip("no seccomp on this machine: " + protections()["processes"])
    layers = sandbox_layers.Layers(namespaces=False, landlock=probed.layers.landlock, seccomp=True)
    monkeypatch.setattr(sandbox_layers, "probe", lambda: sandbox_layers.Probe(layers, probed.facts))
    host = _Host(tmp_path)
    try:
        result = check_program(_render("open_socket", host), timeout=5, allow=True)
        assert result.status == "failed" and "[Errno 1] Operation not permitted" in result.output
        assert "not allowed" not in result.output  # the kernel said no, not the guard
        assert host.nobody_called()
        assert "seccomp refuses every socket" in protections()["network"]
    finally:
        host.close()


def test_network_namespace_really_has_no_interfaces():
    if not sandbox_layers.probe().layers.namespaces:
        pytest.skip("no network namespace on this machine: " + protections()["network"])
    program = "import socket\nassert [name for _, name in socket.if_nameindex()] == ['lo'], socket.if_nameindex()\n"
    assert check_program(program, allow=True).passed


# ---------------------------------------------------------------- hostile programs

@pytest.fixture(scope="module", params=["probed", "guard-only", "split"])
def hostile_batch(request, tmp_path_factory):
    """Run every hostile program, between two good ones, against a host with things to lose;
    "split": each as the candidate of a split program (the tests only look it up), so its
    process is the candidate's, with the checker beside it."""
    base = tmp_path_factory.mktemp(f"host-{request.param}")
    host = _Host(base)
    programs = {name: _render(name, host) for name in EXPECTED}
    if request.param == "split":
        programs = {name: Split(text, "assert check is not None\n") for name, text in programs.items()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(host.work))  # every sandbox workdir lands here
        if request.param == "guard-only":
            facts = sandbox_layers.probe().facts
            patch.setattr(sandbox_layers, "probe", lambda: sandbox_layers.Probe(sandbox_layers.GUARD_ONLY, facts))
        before = host.snapshot()
        start = time.monotonic()
        results = check_programs([GOOD, *programs.values(), GOOD], timeout=BATCH_TIMEOUT,
                                 limits=BATCH_LIMITS, allow=True)
        elapsed = time.monotonic() - start
        said = protections(BATCH_LIMITS)
    yield {"results": dict(zip(["first", *programs, "last"], results)), "host": host, "before": before,
           "after": host.snapshot(), "elapsed": elapsed, "leftovers": _processes_inside(host.work),
           "protections": said}
    host.close()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_program_is_contained_and_fails(hostile_batch, name):
    result = hostile_batch["results"][name]
    statuses, why = EXPECTED[name]
    if name in GAPS:
        key, words = GAPS[name]
        if words in hostile_batch["protections"][key]:  # declared missing here: the batch test checks the rest
            return
    assert not result.passed, f"{name} passed: {result.output[-2000:]}"
    assert result.status in statuses, (result.status, result.output[-2000:])
    if why:
        assert re.search(why, result.output), result.output[-2000:]
    assert result.wall_s < BATCH_TIMEOUT + runner.STARTUP_GRACE_S + 3


def test_batch_goes_on_and_host_is_unchanged(hostile_batch):
    results, host = hostile_batch["results"], hostile_batch["host"]
    assert results["first"].passed and results["last"].passed  # the harness survived, and kept going
    assert hostile_batch["after"] == hostile_batch["before"]  # canary, outside tree, home listing
    for name in ("read_home", "symlink_escape", "hardlink_escape", "proc_escape"):
        assert host.secret_text not in results[name].output, name
    assert host.nobody_called(), "a sandboxed program reached the host's listener"
    assert results["deep_tree"].status in ("failed", "timeout", "killed:SIGXCPU")  # its own verdict; the cleanup did not raise
    assert hostile_batch["leftovers"] == [], "sandboxed processes outlived their batch"
    assert list(host.work.iterdir()) == [], "a working directory was left behind"


def test_cleanup_survives_a_deep_unreadable_tree(tmp_path):
    # What a program may leave where no private mount view drops it: deeper than shutil.rmtree's
    # recursion and than PATH_MAX, with unreadable and unwritable directories.
    root = tmp_path / "work"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    for level in range(1500):
        os.mkdir("d" * 100, dir_fd=fd)
        below = os.open("d" * 100, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = below
        if level % 300 == 0:
            os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.mkdir("unreadable", dir_fd=fd)
    os.chmod("unreadable", 0, dir_fd=fd)
    os.chmod(fd, 0o500)
    os.close(fd)
    with pytest.raises(RecursionError):  # what used to escape and lose the batch
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    assert remove_tree(root) is True and not root.exists()
    assert remove_tree(root) is True  # already gone: still no exception


def test_harness_trouble_with_one_program_stays_with_it(monkeypatch):
    real_run_in = runner._run_in

    def flaky(workdir, program, *args):
        if "boom" in program:
            raise OSError(24, "Too many open files")
        return real_run_in(workdir, program, *args)

    monkeypatch.setattr(runner, "_run_in", flaky)
    first, broken, last = check_programs([GOOD, "# boom\n" + GOOD, GOOD], timeout=5, allow=True)
    assert first.passed and last.passed
    assert broken.status == "error:harness" and not broken.passed and "Too many open files" in broken.output


# ---------------------------------------------------------------- throughput on real data

def test_humaneval_canonical_solutions_all_pass_in_parallel(benchdata):
    problems = [json.loads(line) for line in gzip.open(benchdata / "humaneval" / "HumanEval.jsonl.gz", "rt")]
    assert len(problems) == 164
    # Split as the HumanEval metric runs them: the tests in a checker, the solution in a candidate.
    programs = [split_program(p, p["canonical_solution"]) for p in problems]
    start = time.monotonic()
    results = check_programs(programs, allow=True)
    elapsed = time.monotonic() - start
    failed = [(p["task_id"], r.status, r.verdict, r.output[-300:]) for p, r in zip(problems, results)
              if not (r.passed and r.verdict == "split")]
    assert failed == []
    if len(os.sched_getaffinity(0)) >= 2:  # programs overlapped: summed run time exceeds the wall time
        assert sum(r.wall_s for r in results) / elapsed > 1.3
    # ...and the checks are real: an empty body fails every problem.
    hollow = [split_program(p, "    pass\n\n") for p in problems]
    assert not any(r.passed for r in check_programs(hollow, allow=True))


# ---------------------------------------------------------------- helpers

class _Host:
    """Things outside the sandbox a hostile program might touch, and ways to see if it did."""

    def __init__(self, base: Path):
        self.work = base / "work"
        self.work.mkdir()
        self.canary = base / "canary.txt"
        self.canary.write_text("canary: do not touch\n")
        self.outside = base / "outside"
        (self.outside / "sub").mkdir(parents=True)
        (self.outside / "sub" / "data.txt").write_text("precious\n")
        self.secret_text = f"secret-{os.getpid()}-{time.time_ns()}"
        self.secret = base / "secret.txt"
        self.secret.write_text(self.secret_text)
        # The user's home; where there is none (a service account's /nonexistent), the checkout,
        # which is just as much the user's files.
        self.home = Path.home() if os.access(Path.home(), os.R_OK | os.X_OK) else Path(__file__).resolve().parents[2]
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.unix_socket = base / "host.sock"
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(str(self.unix_socket))
        self.unix.listen()

    def snapshot(self) -> dict:
        def state(p: Path):
            info = p.lstat()
            return (str(p.relative_to(self.outside.parent)), p.read_bytes() if p.is_file() else None,
                    info.st_mode, info.st_mtime_ns, sorted(os.listxattr(p, follow_symlinks=False)))

        tree = sorted(state(p) for p in [self.outside.parent, *self.outside.parent.rglob("*")]
                      if self.work not in (p, *p.parents))
        limits = [resource.getrlimit(r) for r in (resource.RLIMIT_NICE, resource.RLIMIT_CPU, resource.RLIMIT_NOFILE,
                                                  resource.RLIMIT_FSIZE, resource.RLIMIT_AS)]
        return {"tree": tree, "home": sorted(os.listdir(self.home)), "harness_limits": limits}

    def nobody_called(self) -> bool:
        self.listener.setblocking(False)
        self.udp.setblocking(False)
        self.unix.setblocking(False)
        for attempt in (self.listener.accept, lambda: self.udp.recvfrom(64), self.unix.accept):
            try:
                attempt()
                return False
            except BlockingIOError:
                pass
        return True

    def close(self) -> None:
        self.listener.close()
        self.udp.close()
        self.unix.close()


def _render(name: str, host: _Host) -> str:
    template = string.Template((HOSTILE / f"{name}.py").read_text())
    return template.substitute(canary=host.canary, outside=host.outside, home=host.home,
                               secret=host.secret, port=host.port, unix_socket=host.unix_socket,
                               harness_pid=os.getpid())


def _processes_inside(path: Path) -> list[str]:
    """Live processes whose working directory is under `path`: every sandboxed process starts in
    its own directory there, and whatever it forks inherits it (even once the directory is gone)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:  # gone meanwhile, or not ours to look at
                continue
            if cwd.startswith(str(path)):
                found.append(f"{entry.name}: {cwd}")
    return found


def test_code_benchmark_results_carry_the_sandbox_protections():
    from evo_eval.record import _sandbox_provenance
    from evo_eval.sandbox.code_exec import Split, take_verdict_counts

    take_verdict_counts()
    check_programs([GOOD, Split("def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3\n")], allow=True)
    assert _sandbox_provenance("humaneval") == {"sandbox": protections(),
                                                "sandbox_verdicts": {"split": 1, "in-process": 1}}
    assert _sandbox_provenance("mbpp")["sandbox_verdicts"] == {"split": 0, "in-process": 0}  # taken per benchmark
    assert _sandbox_provenance("gsm8k") == {}
