"""Which kernel mechanisms this machine allows, found once by probing, and how to say so (parent side).

The probe runs child.py in ``probe`` mode: a throwaway process that tries each mechanism the same
way a real run does. A run then asks for exactly what the probe found, and fails loudly (status
"error:setup") rather than quietly running with less if a mechanism stops working.
"""

from __future__ import annotations

import functools
import json
import marshal
import site
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

CHILD = Path(__file__).with_name("child.py")


def child_command() -> list[str]:
    """The sandboxed interpreter's command line (see child.py for -I -S); input goes to stdin."""
    loader = f"import sys; sys.path.insert(0, {str(CHILD.parent)!r}); import {CHILD.stem}; {CHILD.stem}.main()"
    return [sys.executable, "-I", "-S", "-c", loader]


def child_input(config: dict, source: str = "") -> bytes:
    return marshal.dumps((config, source))


@functools.cache
def site_packages() -> list[str]:
    """The harness's own site-packages: what lm-eval's code_eval, which runs programs in the
    harness's interpreter, would let them import."""
    # Resolved: a private mount view holds the real directories, not the symlinks leading to them.
    return list(dict.fromkeys(str(Path(p).resolve()) for p in site.getsitepackages() if Path(p).is_dir()))


@dataclass(frozen=True)
class Layers:
    namespaces: bool  # new network + IPC namespaces
    landlock: int  # Landlock ABI version in use, 0 for none
    seccomp: bool
    # user + PID + mount namespaces too: an unprivileged id, its own PID space, a view of only the
    # interpreter and a tmpfs working directory with a disk and file-count quota (userns.py)
    userns: bool = False

    def as_config(self) -> dict:
        return asdict(self)


# No kernel mechanism at all: the audit-hook guard does every job (what the tests use to check
# the fallbacks, and what an old kernel or a locked-down container gets).
GUARD_ONLY = Layers(namespaces=False, landlock=0, seccomp=False)


@dataclass(frozen=True)
class Probe:
    layers: Layers
    facts: dict  # the child's report: euid, errors per mechanism, the read-only roots


@functools.cache
def probe() -> Probe:
    """The full isolation first; where it fails (no user namespaces, a container that forbids
    mounts), once more without it, keeping why in the facts."""
    facts = _run_probe(try_userns=True)
    if facts.get("userns") is None and "probe_error" not in facts:
        facts = {**_run_probe(try_userns=False), "userns_error": facts.get("userns_error", "unknown")}
    if "probe_error" in facts:  # the probe itself died: assume nothing, let the guard do everything
        return Probe(GUARD_ONLY, facts)
    layers = Layers(namespaces=bool(facts["namespaces"]), landlock=int(facts["landlock"]),
                    seccomp=bool(facts["seccomp"] and facts["arch"]), userns=bool(facts.get("userns")))
    return Probe(layers, facts)


def _run_probe(try_userns: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="evo-sandbox-probe-") as workdir:
        config = {"probe": True, "try_userns": try_userns, "workdir": workdir, "site_packages": site_packages()}
        try:
            done = subprocess.run(child_command(), input=child_input(config), cwd=workdir, env={},
                                  capture_output=True, timeout=60)
        except subprocess.TimeoutExpired as exc:
            return {"probe_error": f"the probe did not finish in {exc.timeout} s"}
        stdout, stderr = done.stdout, done.stderr
    try:
        return json.loads(stdout)
    except ValueError:
        return {"probe_error": (stderr or stdout).decode("utf-8", "replace").strip()[-500:] or "no output"}


def describe(layers: Layers, facts: dict, memory_mb: int, file_mb: int, open_files: int,
             processes: int, disk_mb: int = 0, files: int = 0) -> dict[str, str]:
    """One line per protection, saying which mechanism provides it here."""
    root = facts.get("euid") == 0 and not layers.userns
    guard = "the Python audit hook (weak: native code could bypass it)"
    if layers.userns:
        outside = "uid 65534 (nobody)" if facts.get("euid") == 0 else f"the harness's uid {facts.get('euid')}"
        isolation = (f"user namespace: root inside, {outside} outside, owning nothing outside its working "
                     "directory; own PID namespace (sees no other process); private mount view")
        view = (f"private mount view: only read-only binds of {', '.join(facts.get('read_roots', []))}, "
                f"/dev/null, /etc/localtime, and a {disk_mb} MiB, {files}-inode tmpfs working directory; "
                "no /tmp, /proc, home or host sockets")
    else:
        isolation = ("no user/PID/mount namespaces on this machine"
                     f" ({facts.get('userns_error', 'not probed')}): the program keeps the harness's uid"
                     + (" (root)" if root else "") + " and sees its processes")
        view = "no private mount view: the host's file tree, filtered by the layer below"
    if layers.namespaces:
        network = "new network namespace: no interfaces, loopback down"
        if layers.landlock >= 4:
            network += "; Landlock also refuses TCP bind and connect"
    elif layers.seccomp:
        network = "seccomp refuses every socket but AF_UNIX (no network namespace here)"
    else:
        network = f"{guard} refuses every socket but AF_UNIX"
    if layers.landlock:
        filesystem = (f"Landlock ABI {layers.landlock}: read-only {', '.join(facts.get('read_roots', []))}; "
                      "read-write only in the working directory; nothing else visible")
        if layers.userns:
            filesystem += "; metadata (chmod, utime, xattr) and UNIX sockets outside: absent from the mount view"
        else:
            filesystem += (f"; chmod, utime, xattrs and UNIX socket addresses outside the working directory: "
                           f"{guard} (Landlock does not cover them; no private mount view here)")
    else:
        filesystem = f"{guard} refuses access outside the working directory and the Python installation"
    if layers.userns:
        nproc = f"RLIMIT_NPROC {processes} threads and processes, counted in its own user namespace"
    elif root:
        nproc = "NO thread cap: RLIMIT_NPROC does not apply to root and no user namespace here"
    else:
        nproc = f"RLIMIT_NPROC {processes} for this user"
    if layers.seccomp:
        forks = f"seccomp: no fork, exec or process-creating clone (threads only); {nproc}"
        signals = "seccomp: signals and prlimit only to itself"
    else:
        forks = f"{guard} refuses fork, spawn and exec; {nproc}"
        signals = f"{guard} refuses signals to other processes"
    if layers.landlock >= 6:
        signals += "; Landlock: no signals to processes outside the sandbox"
    if not layers.seccomp and layers.landlock < 6 and not root:
        signals += " (a native call could still signal this user's processes)"
    return {
        "process": "one interpreter per program, own session; its whole process group is killed "
                   "when it exits or at the wall-clock limit (timeout + 1 s start-up allowance)",
        "limits": ("CPU time = timeout (SIGKILL: PID 1 of its namespace gets no SIGXCPU)" if layers.userns
                   else "CPU time = timeout (SIGXCPU, then SIGKILL)") + f", address space {memory_mb} MiB, "
                  f"file size {file_mb} MiB, {open_files} open files, no core dumps"
                  + ("; memfd and System V shared memory refused (seccomp), so no memory outside the "
                     "address-space limit" if layers.seccomp else "; memfd NOT refused (no seccomp)"),
        "quota": (f"working directory is a {disk_mb} MiB tmpfs with {files} inodes" if layers.userns
                  else "NO disk or file-count quota (no private mount view here); file size limit only"),
        "isolation": isolation,
        "view": view,
        "environment": "emptied; python -I; empty stdin; fresh temporary working directory, removed afterwards",
        "network": network,
        "filesystem": filesystem,
        "processes": forks,
        "signals": signals,
        "ipc": "new IPC namespace" if layers.namespaces else "host System V IPC visible (no IPC namespace here)",
        "privileges": "all capabilities dropped, no_new_privs" + (" (uid 0 kept)" if root else ""),
        "python": "audit hook: no settrace/setprofile, no __code__ swaps"
                  + ("" if layers.userns and layers.landlock and layers.seccomp else
                     "; no ctypes (so no numpy), cffi, subinterpreters or gc object walks, which would "
                     "open a way around the hook's fallback duties"),
        "verdict": "split: the benchmark's tests run in a checker process, the only holder of the verdict "
                   "socket; the model's code runs in a separate candidate process "
                   + ("(in a PID namespace of its own, where the checker has no pid; " if layers.userns else "(")
                   + ("no signals or tracing between them: seccomp" if layers.seccomp else
                      "signals to the checker refused by the audit hook; no tracing: the checker is not dumpable")
                   + ") and reaches the tests only as plain data (values and exceptions, never objects) "
                   "through a pipe; passed only if the tests returned and the checker then echoed a nonce it "
                   "read only afterwards. Programs given as one text, and tests that pass functions or "
                   "objects of their own, run in-process (marked verdict \"in-process\" in each result): "
                   "there the program could reach its own verdict",
    }
