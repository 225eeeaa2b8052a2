"""Namespaces and privileges (child side, stdlib only).

A new network namespace has no interface but a loopback that is down: no route to anything, not
even to the host's 127.0.0.1. A new IPC namespace hides the host's System V shared memory and
message queues. An unprivileged user may create both only inside a new user namespace (where it
is "root" over those namespaces and nothing else); root may create them directly, and falls back
to a user namespace where it lacks CAP_SYS_ADMIN (a container's root).

Then every capability is dropped and no_new_privs is set: root without capabilities keeps uid 0
(so it can still read the interpreter under /root) but cannot load kernel modules, mount, reboot,
override file permissions or trace other users' processes, and no execve can give powers back.
"""

from __future__ import annotations

import os

import kernel

_NAMESPACES = kernel.CLONE_NEWNET | kernel.CLONE_NEWIPC


def enter_namespaces() -> str:
    """Unshare the network and IPC namespaces; returns how ("direct" or "user"), raises OSError."""
    if os.geteuid() == 0:
        try:
            kernel.unshare(_NAMESPACES)
            return "direct"
        except PermissionError:
            pass
    kernel.unshare(_NAMESPACES | kernel.CLONE_NEWUSER)
    return "user"


def drop_privileges() -> None:
    kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
    kernel.clear_capabilities()
