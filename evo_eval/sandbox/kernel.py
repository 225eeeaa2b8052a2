"""The few Linux calls the standard library does not wrap, through ctypes (child side, stdlib only).

Python 3.11 has no os.unshare (3.12+) and no prctl, capset, landlock or seccomp at all. ctypes is
imported here, by the trusted bootstrap, before the program runs; child.py then drops it from
sys.modules and the guard refuses to import it again, so the program never gets this file's power.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
MNT_DETACH = 2

PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

# Per-architecture facts: the seccomp audit arch and the numbers of the system calls we name.
# Landlock's calls (444-446) and the newer ones (>= 424) share one number on every architecture.
ARCHES = {
    "x86_64": {
        "audit_arch": 0xC000003E,
        "syscalls": {
            "fork": 57, "vfork": 58, "clone": 56, "clone3": 435, "execve": 59, "execveat": 322,
            "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
            "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "ptrace": 101,
            "process_vm_readv": 310, "process_vm_writev": 311, "socket": 41, "socketpair": 53,
            "unshare": 272, "setns": 308, "add_key": 248, "request_key": 249, "keyctl": 250,
            "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "userfaultfd": 323,
            "pivot_root": 155, "mount": 165, "umount2": 166, "chroot": 161, "memfd_create": 319,
            "memfd_secret": 447, "prlimit64": 302, "shmget": 29, "msgget": 68,
        },
    },
    "aarch64": {
        "audit_arch": 0xC00000B7,
        "syscalls": {
            "clone": 220, "clone3": 435, "execve": 221, "execveat": 281,
            "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
            "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "ptrace": 117,
            "process_vm_readv": 270, "process_vm_writev": 271, "socket": 198, "socketpair": 199,
            "unshare": 97, "setns": 268, "add_key": 217, "request_key": 218, "keyctl": 219,
            "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "userfaultfd": 282,
            "pivot_root": 41, "mount": 40, "umount2": 39, "chroot": 51, "memfd_create": 279,
            "memfd_secret": 447, "prlimit64": 261, "shmget": 194, "msgget": 186,
        },
    },
}


# The new mount API (Linux 5.2+) has one number on every architecture.
MOUNT_API = {"open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
             "fspick": 433, "mount_setattr": 442}


def arch() -> dict | None:
    return ARCHES.get(os.uname().machine)


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def syscall(number: int, *args) -> int:
    return _check(_libc.syscall(ctypes.c_long(number), *args))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5))


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags))


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def raw(text):
        return None if text is None else os.fsencode(text)

    _check(_libc.mount(raw(source), raw(target), raw(fstype), flags, raw(data)))


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(os.fsencode(target), flags))


def pivot_root(new_root: str, put_old: str) -> None:
    syscall(arch()["syscalls"]["pivot_root"], os.fsencode(new_root), os.fsencode(put_old))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def clear_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets (always allowed: it only lowers)."""
    set_capabilities(0)


def set_capabilities(mask: int) -> None:
    """Effective = permitted = `mask` (capability bits), inheritable empty; only ever lowers."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    data = (_CapData * 2)()
    for word in (0, 1):
        bits = (mask >> (32 * word)) & 0xFFFFFFFF
        data[word].effective = data[word].permitted = bits
    _check(_libc.capset(ctypes.byref(header), data))
