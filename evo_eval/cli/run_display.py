"""What `evo-eval run` shows while it works: a live bar per benchmark (on a terminal), one line per
benchmark as it finishes, the closing lines (where the results are, what the suite is missing) and
one ``error:`` line per failed benchmark. The run itself is ``evo_eval.run``'s."""

from __future__ import annotations

import os

import typer
from rich.console import Console


def execute_run(options):
    """Run with a rich progress display; prints what happened to each benchmark."""
    from rich.markup import escape  # messages name paths and values, which may hold [brackets]
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ..progress import BenchmarkProgress, results_line, skipped_summary
    from ..run import plan, run as run_api, run_variants

    planned = plan(options)
    card, stage, entries, _, _ = planned
    variants = len(run_variants(card, options))
    # Under accelerate launch every process runs this; only the first one talks.
    quiet = int(os.environ.get("RANK", "0")) != 0
    # A live bar only on a terminal: written to a file or a pipe it is a frozen frame and a blank line
    # around the per-benchmark lines and the error line. soft_wrap: one message, one line.
    console = Console(stderr=True, quiet=quiet, soft_wrap=True)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console, transient=False,
                        disable=not console.is_interactive)
    status = {"skipped": "[dim]done earlier[/dim]", "missing": "[yellow]no data[/yellow]",
              "opt-in": "[yellow]needs --allow-code-exec[/yellow]"}

    from ..precision import dtype_change

    # A dtype other than the card's, chosen here rather than by the user (a CPU runs float32), is said
    # once, when the model has loaded (an error before that stays one line); provenance records it too.
    changed = None if options.dtype else dtype_change(card, options.dtype, options.device)
    said: list[bool] = []
    with progress:
        overall = progress.add_task(f"{card.name} ({stage})", total=len(entries) * variants, detail="")
        requests = BenchmarkProgress(progress, console)  # requests within a benchmark (progress.py)

        def on_event(kind, entry, outcome):
            if kind == "progress":
                requests.update(outcome)
                return
            if kind == "variant":  # ablation suite: the next variant's benchmarks follow
                progress.console.print(f"[bold]{outcome.model}[/bold]")
                return
            if kind == "start" and changed and not said:
                said.append(True)
                progress.console.print(f"note: {escape(changed)}", highlight=False)
            if kind == "start":
                progress.update(overall, description=f"{card.name} ({stage}): {entry.key} ({entry.shots}-shot)")
                return
            if kind == "stale":  # a results file made with other settings: say what changed, then re-run
                progress.console.print(f"  {entry.key:<15} [yellow]settings changed:[/yellow] {escape(outcome.message)}",
                                       markup=True, highlight=False)
                return
            if kind == "journal":  # damaged journal lines: reported, skipped, their requests redone
                progress.console.print(f"  {entry.key:<15} [yellow]warning:[/yellow] {escape(outcome.message)}",
                                       markup=True, highlight=False)
                return
            if kind == "done":
                requests.close(entry.key)
                score = "—" if outcome.score is None else f"{outcome.score * 100:.1f}"
                reuse = f", {outcome.reused} reused from journal" if outcome.reused else ""
                progress.console.print(f"  {entry.key:<15} {score:>6}  [dim]{outcome.computed} requests, "
                                       f"{outcome.wall_s:.1f} s{reuse}[/dim]")
            elif kind != "missing" or options.skip_missing:  # missing data ends in an error line below
                progress.console.print(f"  {entry.key:<15} {status[kind]}  [dim]{escape(outcome.message)}[/dim]")
            progress.advance(overall)

        summary = run_api(options, on_event=on_event, planned=planned)
    where = results_line(summary, options.output)
    if where and not quiet:
        typer.echo(where, err=True)
    skipped = skipped_summary(summary)
    if skipped and not quiet:
        typer.echo(skipped, err=True)
    failed = [o for o in summary.outcomes if o.status in ("missing-data", "failed")]
    for o in failed:  # each message names its benchmark
        typer.echo(f"error: {o.message}", err=True)
    return summary
