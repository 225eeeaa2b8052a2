"""User-facing errors: one line saying what is wrong and what to do.

Everything a user can get wrong (a name, a path, a file) raises a subclass of ``UserError``; the
CLI prints its message on one line and exits with status 2, without a traceback unless --debug.
"""


def first_line(exc: BaseException, width: int = 160, empty: str | None = None) -> str:
    """An exception's message cut to one line of at most ``width`` characters, for a one-line error; an
    empty message gives ``empty`` (by default the exception's class name)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__ if empty is None else empty
    return text.splitlines()[0][:width]


# The run finished but skipped benchmarks the suite holds (code benchmarks without --allow-code-exec):
# its results are not the whole table, and a script or scheduler should notice. --skip-missing accepts it.
EXIT_INCOMPLETE = 3

class UserError(Exception):
    """A problem with the user's input, reported as one line with the fix."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)


class UnknownNameError(UserError):
    """A model, suite, task, stage or format name that does not exist."""

    def __init__(self, kind: str, name: str, known: list[str], hint: str | None = None):
        import difflib

        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        fix = f"did you mean {', '.join(close)}?" if close else f"choose one of: {', '.join(known)}"
        if hint:
            fix = f"{fix} ({hint})"
        super().__init__(f"unknown {kind} '{name}'", fix)


class DataError(UserError):
    """A local data mirror that is missing, incomplete or corrupt."""


class ResultsError(UserError):
    """A results or journal file that cannot be trusted."""


class CheckpointError(UserError):
    """A checkpoint that is missing or does not fit the model card."""
