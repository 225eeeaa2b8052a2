"""Where a sandboxed program may read and write (child side, stdlib only).

One list for both enforcers: Landlock (landlock.py) in the kernel, and the audit-hook guard
(guard.py) where Landlock is missing.
"""

from __future__ import annotations

import os
import sys

# System library directories: shared libraries that extension modules load, time zone data.
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/opt")
# Time zones; the dynamic loader's cache (extension modules' libraries are found through it).
READ_FILES = ("/etc/localtime", "/etc/ld.so.cache")
READ_WRITE_FILES = (os.devnull,)


def read_only_roots(site_packages: list[str]) -> list[str]:
    """The Python installation (interpreter, standard library, the harness's site-packages) and
    the system directories."""
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *site_packages}
    return sorted({os.path.realpath(p) for p in python | set(SYSTEM_DIRS) if os.path.isdir(p)})
