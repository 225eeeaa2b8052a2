"""Remove a program's working directory whatever it left there, without ever raising (parent side).

shutil.rmtree recurses once per directory level, so a tree ~1,000 levels deep raises RecursionError
even with ignore_errors=True, and paths that deep pass PATH_MAX; a directory the program made
unreadable (mode 000) cannot be listed by a non-root harness. Where the working directory is a
tmpfs in the program's own mount namespace (see userns.py) the kernel drops the whole tree when
the namespace ends and this finds nothing; elsewhere (the fallback layers) it walks the tree
iteratively through directory descriptors: one descriptor open at a time, names relative to it, so
neither the depth nor the path length matters.
"""

from __future__ import annotations

import os
import shutil
import stat

# Entries one call may try: a program's file-count limit (or the time it had) bounds what it could
# create far below this; the cap only guarantees the walk ends even on a filesystem that misbehaves.
MAX_STEPS = 2_000_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str | os.PathLike) -> bool:
    """Remove `path` and everything under it; True if it is gone. Never raises."""
    path = os.fspath(path)
    try:
        shutil.rmtree(path)
        return True
    except FileNotFoundError:
        return True
    except (OSError, RecursionError):  # deep, unreadable or undeletable parts: walk it ourselves
        pass
    try:
        _remove_iteratively(path)
    except (OSError, RecursionError):
        pass
    return not os.path.lexists(path)


def _remove_iteratively(path: str) -> None:
    fd = os.open(path, _DIR_FLAGS)
    names: list[str] = []  # the way down from `path`, one name per level
    stuck: set[tuple[int, int]] = set()  # (device, inode) of entries that would not go: skip them
    try:
        for _ in range(MAX_STEPS):
            _make_traversable(fd)
            child = _empty_files_and_find_dir(fd, stuck)
            if child is not None:
                try:
                    below = os.open(child, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    stuck.add(_identity(child, fd))
                    continue
                os.close(fd)
                fd, names = below, names + [child]
                continue
            if not names:
                return
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd, name = parent, names.pop()
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                stuck.add(_identity(name, fd))
    finally:
        os.close(fd)
        try:
            os.rmdir(path)
        except OSError:
            pass


def _make_traversable(fd: int) -> None:
    try:
        mode = os.fstat(fd).st_mode
        if mode & 0o700 != 0o700:
            os.chmod(fd, stat.S_IMODE(mode) | 0o700)
    except OSError:  # not ours to change (root needs no permission bits anyway)
        pass


def _empty_files_and_find_dir(fd: int, stuck: set[tuple[int, int]]) -> str | None:
    """Unlink every non-directory in `fd`; return one subdirectory still to visit, if any."""
    subdir = None
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                identity = (entry.stat(follow_symlinks=False).st_dev, entry.inode())
            except OSError:
                continue
            if identity in stuck:
                continue
            if is_dir:
                subdir = subdir or entry.name
                continue
            try:
                os.unlink(entry.name, dir_fd=fd)
            except OSError:
                stuck.add(identity)
    return subdir


def _identity(name: str, dir_fd: int) -> tuple[int, int]:
    try:
        found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return found.st_dev, found.st_ino
    except OSError:
        return -1, -1
