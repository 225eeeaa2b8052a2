"""The harness's half of the user-namespace set-up: write the child's id maps (parent side).

Mapping a namespace's root to an id other than one's own needs CAP_SETUID in the parent namespace,
which the sandboxed child, having just left it, no longer has; so the child asks on its set-up
socket and the harness writes /proc/<pid>/uid_map, setgroups and gid_map. Root maps the program to
"nobody" (65534), an id that owns nothing the program could change, and to which RLIMIT_NPROC
applies; any other user can only map its own ids, which is still not root.
"""

from __future__ import annotations

import os
import socket
import time

NOBODY = 65534
MAP_REQUEST, MAP_DONE, MAP_FAILED = b"m", b"k", b"x"


def outside_ids() -> tuple[int, int]:
    if os.geteuid() == 0:
        return NOBODY, NOBODY
    return os.geteuid(), os.getegid()


def write_maps(pid: int) -> None:
    uid, gid = outside_ids()
    for name, text in (("uid_map", f"0 {uid} 1\n"), ("setgroups", "deny\n"), ("gid_map", f"0 {gid} 1\n")):
        with open(f"/proc/{pid}/{name}", "w") as handle:
            handle.write(text)


def serve(sock: socket.socket, pid: int, deadline: float) -> None:
    """Answer the child's one request, if it makes one before `deadline`; never raises."""
    try:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        if sock.recv(1) != MAP_REQUEST:  # closed unasked: the child uses no user namespace, or died
            return
        try:
            write_maps(pid)
        except OSError as exc:
            sock.sendall(MAP_FAILED + f" {exc}".encode("utf-8", "replace"))
            return
        sock.sendall(MAP_DONE)
    except OSError:  # timed out, or the child is gone: its wait and verdict say the rest
        pass
