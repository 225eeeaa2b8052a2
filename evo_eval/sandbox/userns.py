"""A world of its own for the program: user, PID, mount, network and IPC namespaces (child side,
stdlib only).

This is what closes the sandbox by construction rather than by a list of refusals. The program
does not share with anything it could harm:

* a uid: a new user namespace in which it is "root" over nothing, mapped to an unprivileged id
  outside: 65534 ("nobody") when the harness is
  root, the harness's own uid otherwise. Its files, signals and resource limits are those of that
  id: it owns nothing outside its working directory, so chmod, utime, xattrs and prlimit on
  anything else are refused by plain permission checks; and RLIMIT_NPROC, which the kernel ignores
  for root, applies to it and is counted per user namespace, so threads and processes are capped
  per program even when the harness runs as root.
* a PID space: its own PID namespace, where it sees only itself (it is the namespace's PID 1); the harness and
  every other process of any uid do not exist for it (no pid to signal or prlimit, nothing to
  find in /proc, which is not mounted anyway).
* a mount view: a private mount namespace whose root is a small read-only tmpfs holding only
  read-only bind mounts of the Python installation, the harness's site-packages and the system
  library directories (fsroots.py), /dev/null and /etc/localtime, and the working directory,
  itself a tmpfs of `disk_mb` MiB and `files` inodes (the disk and file-count quota). Nothing else
  exists: not /tmp, /home, /root, /proc, the checkout, nor any UNIX socket of the host. When the
  last process of the namespace ends, the kernel drops the whole view, the working directory's
  contents included, so nothing the program made survives it.
* a network (no interface but a loopback that is down) and System V IPC.

The process the harness starts (the "keeper") builds the view, takes the unprivileged id, makes
the user, PID, network and IPC namespaces, then forks the process that runs the program, PID 1 of
the new PID namespace. The keeper relays the program's exit to the harness unchanged (the same
exit code, or the same signal), so the parent's verdict logic does not change. A split program
(crossing.py) has no keeper: the harness's child is the checker, and PID 1 the candidate.
"""

from __future__ import annotations

import gc
import os
import signal

import fsroots
import kernel

VIEW_ROOT = "/tmp"  # where the view is assembled, in the private mount namespace only
WORKDIR = "/tmp/evo-sandbox"  # the program's working directory inside the view
# Only directories for mount points and two bind-mounted files: it never holds data.
_ROOT_OPTIONS = "size=1m,nr_inodes=1024,mode=0755"
_ST_TO_MS = {1: kernel.MS_RDONLY, 2: kernel.MS_NOSUID, 4: kernel.MS_NODEV, 8: kernel.MS_NOEXEC,
             1024: kernel.MS_NOATIME, 2048: kernel.MS_NODIRATIME, 4096: kernel.MS_RELATIME}
NOBODY = 65534
# Created last, owned by the program's user namespace (the network, IPC and PID spaces it gets).
_OWN_NAMESPACES = kernel.CLONE_NEWPID | kernel.CLONE_NEWNET | kernel.CLONE_NEWIPC
CAP_SYS_ADMIN = 21


def enter(site_packages: list[str], disk_mb: int, files: int, fork=None) -> tuple[str, object]:
    """Move into the namespaces and the view; returns (in the program's process only) the working
    directory inside the view and None. Raises OSError before the fork; after it, the keeper never
    returns (it exits with the program's status). With `fork` (a split program), `fork()` makes
    the process in the new PID namespace instead and both return, with what it returned: the
    harness's child is then the checker, not a keeper.

    Root builds the view in a mount namespace owned by the host's user namespace (so nothing in
    the sandbox could ever change it), then becomes nobody and only then makes the user namespace;
    any other user makes the user namespace first (mounting needs it). Either way the process maps
    its own id, which the kernel allows without help: no round trip to the harness."""
    dirs = fsroots.read_only_roots(site_packages)
    mounted_files = [p for p in fsroots.READ_FILES + fsroots.READ_WRITE_FILES if os.path.exists(p)]
    root = os.geteuid() == 0
    outside = (NOBODY, NOBODY) if root else (os.geteuid(), os.getegid())
    proc_self = os.open("/proc/self", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # gone from the view
    try:
        if root:
            os.setgroups([])  # root's supplementary groups would follow it
            _step("unshare the mount namespace", kernel.unshare, kernel.CLONE_NEWNS)
        else:
            _step("unshare the user and mount namespaces", kernel.unshare, kernel.CLONE_NEWUSER | kernel.CLONE_NEWNS)
            _map_own_ids(proc_self, *outside)
        # Descriptors taken in the new mount namespace (a bind mount's source must be in the
        # caller's) and before any change of id, so no path such as /root needs searching later.
        sources = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in dirs + mounted_files}
        try:
            _build_view(sources, set(mounted_files), disk_mb, files, owner=outside if root else (0, 0))
        finally:
            for fd in sources.values():
                os.close(fd)
        if root:
            _become(*outside)
            _step("unshare the user namespace", kernel.unshare, kernel.CLONE_NEWUSER | _OWN_NAMESPACES)
            _map_own_ids(proc_self, *outside)
        else:
            _step("unshare the PID, network and IPC namespaces", kernel.unshare, _OWN_NAMESPACES)
    finally:
        os.close(proc_self)
    return WORKDIR, _fork_into_pid_namespace(fork)


def _become(uid: int, gid: int) -> None:
    """Root becomes the unprivileged id, keeping CAP_SYS_ADMIN only until the user namespace is
    made (where unprivileged user namespaces are restricted, as on Ubuntu's AppArmor, only a
    process with it may make one; inside, its powers are over its own namespaces alone)."""
    kernel.prctl(kernel.PR_SET_KEEPCAPS, 1)
    _step("setresgid", os.setresgid, gid, gid, gid)
    _step("setresuid", os.setresuid, uid, uid, uid)
    kernel.set_capabilities(1 << CAP_SYS_ADMIN)
    kernel.prctl(kernel.PR_SET_KEEPCAPS, 0)
    # A change of uid makes the process undumpable, which gives its /proc files to root: it could
    # no longer write its own id maps.
    kernel.prctl(kernel.PR_SET_DUMPABLE, 1)


def _map_own_ids(proc_self: int, uid: int, gid: int) -> None:
    """Root inside = (uid, gid) outside: a process may map its own ids (and, for gids, only once
    setgroups is denied), so the one-line maps need no privilege in the parent namespace."""
    for name, text in (("uid_map", f"0 {uid} 1\n"), ("setgroups", "deny\n"), ("gid_map", f"0 {gid} 1\n")):
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc_self)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise OSError(exc.errno, f"writing {name}: {exc.strerror}") from None


def _step(what: str, call, *args) -> None:
    """Run one set-up call; its error names the step (for protections() and the probe's facts)."""
    try:
        call(*args)
    except OSError as exc:
        raise OSError(exc.errno, f"{what}: {exc.strerror or exc}") from None


def _build_view(sources: dict[str, int], files: set[str], disk_mb: int, inodes: int, owner: tuple[int, int]) -> None:
    # nothing propagates back out
    _step("private mounts", kernel.mount, None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
    _step("tmpfs root", kernel.mount, "tmpfs", VIEW_ROOT, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, _ROOT_OPTIONS)
    for path, fd in sources.items():
        target = VIEW_ROOT + path
        if path in files:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        else:
            os.makedirs(target, exist_ok=True)
        source = f"/proc/self/fd/{fd}"
        _step(f"bind {path}", kernel.mount, source, target, None, kernel.MS_BIND)
        # A bind mount keeps the flags of the mount it came from, and a user namespace may not
        # clear the ones it inherited (nosuid, nodev, ...), so the read-only remount repeats them.
        flags = kernel.MS_BIND | kernel.MS_REMOUNT | kernel.MS_RDONLY | kernel.MS_NOSUID | _locked_flags(fd)
        _step(f"read-only {path}", kernel.mount, None, target, None, flags)
    for path in fsroots.SYSTEM_DIRS:  # /bin -> usr/bin, /lib -> usr/lib on merged-/usr systems
        if os.path.islink(path) and not os.path.lexists(VIEW_ROOT + path):
            os.symlink(os.readlink(path), VIEW_ROOT + path)
    workdir = VIEW_ROOT + WORKDIR
    os.makedirs(workdir, exist_ok=True)
    _step("working directory tmpfs", kernel.mount, "tmpfs", workdir, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV,
          f"size={disk_mb}m,nr_inodes={inodes},mode=0700,uid={owner[0]},gid={owner[1]}")
    # The view becomes "/": pivot_root(".", ".") stacks the old root under the new one, and the
    # lazy unmount detaches it, so no path leads back to the host's files.
    os.chdir(VIEW_ROOT)
    _step("pivot_root", kernel.pivot_root, ".", ".")
    _step("detach the host's root", kernel.umount2, ".", kernel.MNT_DETACH)
    os.chdir("/")
    _step("read-only root", kernel.mount, None, "/", None,
          kernel.MS_REMOUNT | kernel.MS_RDONLY | kernel.MS_NOSUID | kernel.MS_NODEV)
    os.chdir(WORKDIR)


def _locked_flags(fd: int) -> int:
    found = os.fstatvfs(fd).f_flag
    return sum(ms for st, ms in _ST_TO_MS.items() if found & st)


def _fork_into_pid_namespace(fork=None):
    """keeper -> program (PID 1 of the new namespace). Returns in the program's process.

    The program is its namespace's init: when it exits, the kernel kills anything it left, and a
    signal it sends itself with no handler installed is dropped (the kernel's own are not: SIGKILL
    at the hard CPU limit, faults). One fork rather than a separate reaper: each fork and each exit
    hop costs start-up time on every program."""
    # Frozen, the bootstrap's objects are never walked by the collector again: otherwise the
    # first collection in the program writes to every object's header and copies the whole
    # pre-fork heap, page by page, a cost each program would pay.
    gc.freeze()
    if fork is not None:
        return fork()
    program = os.fork()
    if program:
        _close_all_but((1, 2))
        _keep(program)
    return None


def _keep(program: int) -> None:
    """The harness's own child: wait for the program, then end the way it did."""
    status = signal.SIGKILL
    while True:
        try:
            status = os.waitpid(program, 0)[1]
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            break
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL, SIGSTOP: no handler to reset
            pass
        os.kill(os.getpid(), number)
        os._exit(128 + number)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _close_all_but(keep: tuple[int, ...]) -> None:
    # The keeper holds nothing of the program's (not its verdict socket), so the parent sees the
    # socket close exactly when the program's process is gone.
    highest = max(keep) + 1
    os.closerange(0, min(keep))
    for fd in range(min(keep) + 1, highest):
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    os.closerange(highest, 65536)
