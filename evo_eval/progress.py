"""What `evo-eval run` tells its user while and after it works (the CLI draws it; run.py reports events)."""

from __future__ import annotations

from typing import Any


def _keys(outcomes: list[Any], status: str) -> list[str]:
    return list(dict.fromkeys(o.benchmark for o in outcomes if o.status == status))


def skipped_summary(summary: Any) -> str | None:
    """One closing line on what the suite is missing and why, or None when nothing was skipped.

    Errors (data missing without --skip-missing, failures) get their own ``error:`` lines; this line
    covers what a run skips by design: code benchmarks without --allow-code-exec, and benchmarks not
    in the mirror when --skip-missing accepts that.
    """
    from .run import EXIT_INCOMPLETE

    opt_in, no_data = _keys(summary.outcomes, "needs-opt-in"), _keys(summary.outcomes, "no-data")
    if not opt_in and not no_data:
        return None
    total = len(dict.fromkeys(o.benchmark for o in summary.outcomes))
    reasons = []
    if opt_in:
        reasons.append(f"{', '.join(opt_in)} execute model-written code and --allow-code-exec was not given")
    if no_data:
        reasons.append(f"{', '.join(no_data)} not in the data mirror")
    head = f"{len(opt_in) + len(no_data)} of {total} benchmark(s) not run: {'; '.join(reasons)}"
    if summary.exit_code == EXIT_INCOMPLETE:
        return (f"incomplete: {head} — pass --allow-code-exec to run them in the sandbox, or --skip-missing to "
                f"accept an incomplete suite (exit status {EXIT_INCOMPLETE})")
    return f"incomplete, as --skip-missing accepts: {head}"
