"""Landlock: confine the program's file access, TCP and signals (child side, stdlib only).

Landlock (Linux 5.13+) is the kernel's unprivileged sandboxing LSM: a process restricts itself
and every process it would start, for good, whatever its uid (root included). We handle every
right the running kernel's ABI knows, so anything not granted below is denied:

* read (and execute, for extension modules and shared libraries) under the Python installation
  and the system library directories, and /etc/localtime for time zones;
* read, write, create and remove only under the program's working directory, plus /dev/null;
* ABI 4+: no TCP bind or connect at all (a second wall behind the network namespace);
* ABI 6+: no signals to processes outside the sandbox (the harness cannot be killed) and no
  abstract unix sockets outside it.

Everything else (the user's home, the repository, /tmp, /proc, /etc) is invisible. Path walking
is not an access right, so granting /root/.pyenv/... does not expose /root itself.
"""

from __future__ import annotations

import ctypes
import os

import fsroots
import kernel

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
# Rights each ABI version knows about (1: 13 rights, 2: +REFER, 3: +TRUNCATE, 5: +IOCTL_DEV).
_FS_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

READ_ONLY = EXECUTE | READ_FILE | READ_DIR


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in linux/landlock.h
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 if Landlock is absent or disabled."""
    try:
        return kernel.syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION))
    except OSError:
        return 0


def fs_rights(abi: int) -> int:
    return _FS_RIGHTS[max(v for v in _FS_RIGHTS if v <= abi)]


def confine(workdir: str, site_packages: list[str], abi: int) -> None:
    """Restrict this process (and its future children) for good; raises OSError if Landlock fails."""
    everything = fs_rights(abi)
    attr = _RulesetAttr(everything, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # the struct grew with the ABI
    ruleset = kernel.syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    try:
        for root in fsroots.read_only_roots(site_packages):
            _allow(ruleset, root, READ_ONLY)
        for path in fsroots.READ_FILES + fsroots.READ_WRITE_FILES:
            if os.path.exists(path):
                _allow(ruleset, path, READ_FILE | (WRITE_FILE if path in fsroots.READ_WRITE_FILES else 0))
        _allow(ruleset, workdir, everything)
        kernel.syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)


def _allow(ruleset: int, path: str, rights: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(rights, fd)
        kernel.syscall(SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH),
                       ctypes.byref(rule), ctypes.c_uint32(0))
    finally:
        os.close(fd)
