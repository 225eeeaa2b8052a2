"""The guard: an audit hook (PEP 578) installed just before the program's first line (child side).

Audit hooks cannot be removed from Python code, and each refusal is a PermissionError raised in
the program, which fails it. The guard has two jobs:

1. Always: keep the checks honest against Python-level tricks no kernel mechanism can see.
   Refused: sys.settrace / sys.setprofile (a trace function can jump over asserts or rebind
   `check` just before it is called) and replacing a function's __code__.
   Side effect: doctest.testmod(), coverage and profilers do not work inside the sandbox.
2. Fallbacks, only where the kernel mechanism is missing on this machine (the parent decides and
   protections() says which): process creation, signals and prlimit on other processes (no
   seccomp), sockets other than
   AF_UNIX (no network namespace and no seccomp), and file access (metadata and UNIX socket
   addresses included) outside the working directory and the Python installation (no Landlock). With any of these on, the guard is part of the
   containment, so it also closes the doors to native code and hook-free interpreters: ctypes,
   cffi, subinterpreters, CPython's test modules, and gc's object walks (which would find the
   bootstrap's purged ctypes). That costs numpy, which imports ctypes. Where the kernel does all
   the containing, these stay open: native code can then only defeat job 1, which a deliberately
   malicious program can defeat anyway (see the package docstring).
   Fallbacks are weaker than the kernel's mechanisms: a C extension that makes system calls
   directly bypasses them, and path checks race with symlink swaps.
"""

from __future__ import annotations

import os
import sys

import fsroots

NATIVE_DOORS = frozenset({"ctypes", "_ctypes", "cffi", "_cffi_backend", "_xxsubinterpreters",
                          "_xxinterpchannels", "_interpreters", "_interpchannels", "_interpqueues",
                          "_testcapi", "_testinternalcapi", "_testmultiphase", "_testsinglephase"})
TRACING = frozenset({"sys.settrace", "sys.setprofile"})
# gc's object walks would find the bootstrap's ctypes, cached by the interpreter even once purged.
OBJECT_WALKS = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents"})
PROCESS_EVENTS = frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system", "os.exec",
                            "subprocess.Popen", "os.killpg"})
# _posixsubprocess.fork_exec raises no audit event of its own in 3.11.
PROCESS_MODULES = frozenset({"_posixsubprocess"})
AF_UNIX = 1
# Audit events that take paths: (writes?, indices of the path arguments, index of dir_fd or None).
PATH_EVENTS = {
    "os.listdir": (False, (0,), None), "os.scandir": (False, (0,), None),
    "os.remove": (True, (0,), 1), "os.rmdir": (True, (0,), 1), "os.mkdir": (True, (0,), 2),
    "os.rename": (True, (0, 1), 2), "os.link": (True, (0, 1), 2), "os.symlink": (True, (1,), 2),
    "os.chmod": (True, (0,), 2), "os.chown": (True, (0,), 3), "os.truncate": (True, (0,), None),
    "os.utime": (True, (0,), 3), "os.chflags": (True, (0,), None), "os.lchflags": (True, (0,), None),
    "os.setxattr": (True, (0,), None), "os.removexattr": (True, (0,), None),
    "os.mkfifo": (True, (0,), 2), "os.mknod": (True, (0,), 3),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class Refused(PermissionError):
    """What the program gets for a refused operation."""


# What Landlock does not cover and only a private mount view hides: metadata changes and
# connecting to UNIX sockets (a socket file needs no Landlock right to be connected to).
METADATA_EVENTS = frozenset({"os.chmod", "os.chown", "os.utime", "os.setxattr", "os.removexattr",
                             "os.chflags", "os.lchflags"})


def install(workdir: str, site_packages: list[str], processes: bool, network: bool, files: bool,
            metadata: bool = False) -> None:
    """Install the hook; the booleans turn the fallbacks on (`metadata`: no private mount view)."""
    policy = _Policy(os.path.realpath(workdir), site_packages, processes, network, files, metadata)
    sys.addaudithook(policy)


class _Policy:
    def __init__(self, workdir: str, site_packages: list[str], processes: bool, network: bool, files: bool,
                 metadata: bool = False):
        self.workdir = workdir
        self.processes, self.network, self.files, self.metadata = processes, network, files, files or metadata
        self.seal = processes or network or self.metadata  # see job 2 in the module docstring
        self.read_roots = tuple(fsroots.read_only_roots(site_packages))
        self.read_files = frozenset(fsroots.READ_FILES + fsroots.READ_WRITE_FILES)
        self.write_files = frozenset(fsroots.READ_WRITE_FILES)
        self.pid = os.getpid()

    def __call__(self, event: str, args: tuple) -> None:
        if event in TRACING:
            raise Refused(f"sandbox: {event} is not allowed (it could skip the checks)")
        if self.seal and event in OBJECT_WALKS:
            raise Refused(f"sandbox: {event} is not allowed")
        if event == "object.__setattr__" and len(args) > 1 and args[1] == "__code__":
            raise Refused("sandbox: replacing a function's code is not allowed")
        if event == "import":
            self._import(args[0])
        elif self.processes and (event in PROCESS_EVENTS
                                 or event in ("os.kill", "resource.prlimit") and args[0] not in (0, self.pid)):
            raise Refused(f"sandbox: {event} is not allowed")
        elif self.network and event == "socket.__new__" and args[1] != AF_UNIX:
            raise Refused("sandbox: network sockets are not allowed")
        elif self.files and event == "open":
            self._open(args)
        elif event in PATH_EVENTS and (self.files or self.metadata and event in METADATA_EVENTS):
            self._paths(event, args)
        elif self.metadata and event in ("socket.connect", "socket.bind") and args[0].family == AF_UNIX:
            self._unix_address(event, args[1])

    def _import(self, module: str) -> None:
        top = module.partition(".")[0]
        if self.seal and top in NATIVE_DOORS or self.processes and top in PROCESS_MODULES:
            raise Refused(f"sandbox: importing {module} is not allowed")

    def _open(self, args: tuple) -> None:
        path, mode, flags = args
        writes = bool(flags & _WRITE_FLAGS) or isinstance(mode, str) and any(c in mode for c in "wax+")
        self._check(path, writes, "open")

    def _paths(self, event: str, args: tuple) -> None:
        writes, indices, dir_fd_at = PATH_EVENTS[event]
        # -1 is how CPython reports "no dir_fd", -100 is AT_FDCWD
        if dir_fd_at is not None and len(args) > dir_fd_at and args[dir_fd_at] not in (None, -1, -100):
            raise Refused(f"sandbox: {event} relative to a directory descriptor is not allowed")
        for index in indices:
            self._check(args[index], writes, event)

    def _unix_address(self, event: str, address) -> None:
        # A pathname socket is reached through the file tree, so it gets the files' rule; an
        # abstract one (leading NUL) is in no tree at all, so only the program's own would do.
        if isinstance(address, (str, bytes)) and address[:1] not in ("\0", b"\0", "", b""):
            self._check(address, True, event)
        else:
            raise Refused(f"sandbox: {event} to an abstract UNIX socket is not allowed")

    def _check(self, path, writes: bool, event: str) -> None:
        if path is None or isinstance(path, int):  # an already open descriptor: checked when opened
            return
        resolved = os.path.realpath(os.path.join(os.getcwd(), os.fsdecode(path)))
        if _beneath(resolved, self.workdir):
            return
        if writes:
            if resolved in self.write_files:
                return
        elif resolved in self.read_files or any(_beneath(resolved, root) for root in self.read_roots):
            return
        raise Refused(f"sandbox: {event} {'for writing ' if writes else ''}outside the working directory "
                      f"is not allowed: {resolved}")


def _beneath(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
