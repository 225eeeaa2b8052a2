"""seccomp-bpf: refuse the system calls a test program never needs (child side, stdlib only).

This is what stops a fork bomb when the harness runs as root, where RLIMIT_NPROC does not apply
(the kernel exempts uid 0 and CAP_SYS_RESOURCE): no new processes at all, only threads (clone with
CLONE_THREAD, still counted by RLIMIT_NPROC where that applies). The filter also refuses exec,
signals to any process but itself, tracing and reading other processes' memory or descriptors,
new namespaces, kernel keyrings and io_uring (which would run system calls behind the filter's
back), prlimit on any process but itself, memfd and System V shared memory (memory outside the
address-space limit) and the mount calls; optionally it refuses every socket but AF_UNIX, where no network namespace could be made.

The filter is written in classic BPF by hand (libseccomp is not a Python dependency we want) for
x86_64 and aarch64; any other architecture, or a foreign calling convention such as 32-bit
syscalls on x86_64, kills the process. Filters are inherited and cannot be removed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

import kernel

_LD_W_ABS, _JEQ_K, _JSET_K, _JGE_K, _RET_K = 0x20, 0x15, 0x45, 0x35, 0x06
RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
_OFFSET_NR, _OFFSET_ARCH = 0, 4
X32_SYSCALL_BIT = 0x40000000
CLONE_THREAD = 0x00010000
AF_UNIX = 1

DENIED = ("fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
          "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "tkill", "rt_sigqueueinfo",
          "rt_tgsigqueueinfo", "unshare", "setns", "add_key", "request_key", "keyctl",
          "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd",
          # memory outside RLIMIT_AS: a memfd's or a System V segment's pages stay allocated after
          # they are unmapped, so a program could hold any amount, a slice at a time
          "memfd_create", "memfd_secret", "shmget", "msgget",
          # the mount table (already out of reach without capabilities: a second wall)
          "mount", "umount2", "pivot_root", "chroot", *kernel.MOUNT_API)


def _stmt(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def _arg_low(index: int) -> int:
    # seccomp_data: nr (4 bytes), arch (4), instruction pointer (8), then six 8-byte arguments;
    # both supported architectures are little-endian, so the low word comes first.
    return 16 + 8 * index


def _rule(nr: int, body: list[bytes]) -> list[bytes]:
    """If the call is `nr`, run `body` (which must return); otherwise skip it."""
    return [_stmt(_JEQ_K, nr, 0, len(body)), *body]


def _deny(err: int = errno.EPERM) -> bytes:
    return _stmt(_RET_K, RET_ERRNO | err)


def build(pid: int, block_inet: bool) -> bytes:
    facts = kernel.arch()
    if facts is None:
        raise OSError(errno.ENOSYS, "seccomp filter has no syscall table for this architecture")
    nrs = facts["syscalls"]
    prog = [_stmt(_LD_W_ABS, _OFFSET_ARCH), _stmt(_JEQ_K, facts["audit_arch"], 1, 0),
            _stmt(_RET_K, RET_KILL_PROCESS), _stmt(_LD_W_ABS, _OFFSET_NR)]
    if facts["audit_arch"] == kernel.ARCHES["x86_64"]["audit_arch"]:
        prog += [_stmt(_JGE_K, X32_SYSCALL_BIT, 0, 1), _stmt(_RET_K, RET_KILL_PROCESS)]
    for name in DENIED:
        number = nrs.get(name, kernel.MOUNT_API.get(name))
        if number is not None:  # aarch64 has no fork or vfork
            prog += _rule(number, [_deny()])
    # glibc tries clone3 first and falls back to clone on ENOSYS, where the flags can be inspected
    # (clone3 passes them in memory, out of a filter's reach).
    prog += _rule(nrs["clone3"], [_deny(errno.ENOSYS)])
    prog += _rule(nrs["clone"], [_stmt(_LD_W_ABS, _arg_low(0)), _stmt(_JSET_K, CLONE_THREAD, 0, 1),
                                 _stmt(_RET_K, RET_ALLOW), _deny()])
    for name in ("kill", "tgkill"):  # only to itself (raise() is tgkill(getpid(), gettid()))
        prog += _rule(nrs[name], [_stmt(_LD_W_ABS, _arg_low(0)), _stmt(_JEQ_K, pid, 0, 1),
                                  _stmt(_RET_K, RET_ALLOW), _deny()])
    # prlimit64(pid, ...): only 0 (itself, how glibc's setrlimit calls it) or its own pid, so no
    # program can lower the harness's limits (or any other process's) whatever its uid.
    prog += _rule(nrs["prlimit64"], [_stmt(_LD_W_ABS, _arg_low(0)), _stmt(_JEQ_K, 0, 2, 0),
                                     _stmt(_JEQ_K, pid, 1, 0), _deny(), _stmt(_RET_K, RET_ALLOW)])
    if block_inet:
        prog += _rule(nrs["socket"], [_stmt(_LD_W_ABS, _arg_low(0)), _stmt(_JEQ_K, AF_UNIX, 0, 1),
                                      _stmt(_RET_K, RET_ALLOW), _deny()])
    prog.append(_stmt(_RET_K, RET_ALLOW))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(block_inet: bool) -> None:
    """Install the filter on this process for good (needs no_new_privs); raises OSError."""
    program = build(os.getpid(), block_inet)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    kernel.prctl(kernel.PR_SET_SECCOMP, kernel.SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
