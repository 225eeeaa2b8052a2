"""``evo-eval``: the command line. Thin: each command parses options and calls the API.

Every user mistake becomes one line on stderr and exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import os
import sys

# tqdm reads TQDM_DISABLE once, when it is first imported (torch, datasets and lm-eval import it),
# so the decision must be made before any of them loads. lm-eval's own bars would interleave with
# the run's rich progress; --verbose keeps them.
if not {"--verbose", "-v"} & set(sys.argv):
    os.environ.setdefault("TQDM_DISABLE", "1")

import functools
import logging
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table as RichTable
from typer.core import TyperGroup

from .errors import UserError


class OneLineUsageErrors(TyperGroup):
    """Click's usage errors (a bad option value, an unknown or missing option) as one line on stderr.

    Typer would draw them as a multi-line panel with the usage; every other mistake here is already
    one line (``handle_errors``), so these read the same way and keep click's exit status 2.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            value = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # the base of Typer's (vendored) click exceptions
            if type(exc).__name__ == "NoArgsIsHelpError":
                return super().main(*args, standalone_mode=True, **kwargs)  # the help screen, as before
            if _state["debug"]:
                raise
            where = exc.ctx.command_path if getattr(exc, "ctx", None) else "evo-eval"
            message = " ".join(exc.format_message().split())
            typer.echo(f"error: {message} — see '{where} --help'", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        # Without standalone mode click returns the command's value, or the code of a typer.Exit.
        sys.exit(value if isinstance(value, int) else 0)


app = typer.Typer(
    name="evo-eval", cls=OneLineUsageErrors, no_args_is_help=True, rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    help="Evo and its baselines under one matched protocol: same prompts, same shots, same timing.",
)
data_app = typer.Typer(no_args_is_help=True, help="Local benchmark mirrors: import the publishers' files, verify them.")
app.add_typer(data_app, name="data")

console = Console(stderr=True)
_state = {"debug": False, "verbose": False}

# ---- shared options (lighteval style: one Annotated definition, many commands) ----------------------

PANEL_MODEL = "Model"
PANEL_PROTOCOL = "Protocol"
PANEL_IO = "Data and results"
PANEL_EXEC = "Execution"

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model card name (`evo-eval models`).", rich_help_panel=PANEL_MODEL)]
CheckpointOpt = Annotated[Optional[str], typer.Option(help="Local save_pretrained folder to load instead of the card's checkpoint.", rich_help_panel=PANEL_MODEL)]
StageOpt = Annotated[Optional[str], typer.Option(help="base (Table 1) or instruct (Table 2); defaults to the card's stage.", rich_help_panel=PANEL_PROTOCOL)]
SuiteOpt = Annotated[str, typer.Option(help="all, or a section: general, math, code, chinese.", rich_help_panel=PANEL_PROTOCOL)]
TasksOpt = Annotated[Optional[str], typer.Option(help="Comma-separated benchmark keys to run from the suite.", rich_help_panel=PANEL_PROTOCOL)]
ShotsOpt = Annotated[Optional[int], typer.Option(help="Override every benchmark's shot count (tables show shots used).", rich_help_panel=PANEL_PROTOCOL)]
LimitOpt = Annotated[Optional[float], typer.Option(help="Documents per task (testing only; <1 is a fraction).", rich_help_panel=PANEL_PROTOCOL)]
SeedOpt = Annotated[int, typer.Option(help="Seed for sampling; few-shot selection stays fixed.", rich_help_panel=PANEL_PROTOCOL)]
DataDirOpt = Annotated[Optional[Path], typer.Option(help="Local data mirror (default $EVO_EVAL_DATA, else the hub).", rich_help_panel=PANEL_IO)]
OutputOpt = Annotated[Path, typer.Option(help="Results folder.", rich_help_panel=PANEL_IO)]
ResultsOpt = Annotated[Path, typer.Option("--results", help="Results folder to read.", rich_help_panel=PANEL_IO)]
DeviceOpt = Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available).", rich_help_panel=PANEL_EXEC)]
BatchOpt = Annotated[str, typer.Option(help="Batch size (an int, or auto for the HF backend).", rich_help_panel=PANEL_EXEC)]


def handle_errors(func: Callable) -> Callable:
    """User mistakes -> one line, exit 2; everything else keeps its traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            if _state["debug"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if _state["debug"]:
                raise
            # 130 = 128 + SIGINT, what shells and schedulers expect of an interrupted command.
            typer.echo("interrupted — finished requests are kept in the journal; run the same command again "
                       "to resume", err=True)
            raise typer.Exit(130) from None
        except OSError as exc:
            if _state["debug"] or exc.errno is None:
                raise
            typer.echo(f"error: {exc.strerror} ({exc.filename or 'write'}) — free space or fix permissions, "
                       "then run the same command again to resume", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show lm-eval's own logs and bars.")] = False):
    _state["debug"] = debug
    _state["verbose"] = verbose
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        for name in ("lm_eval", "lm-eval", "transformers", "datasets", "accelerate", "evo_eval"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _kv(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    from lm_eval.utils import simple_parse_args_string

    try:
        return simple_parse_args_string(value)
    except ValueError:
        raise UserError(f"cannot parse '{value}'", "write key=value pairs separated by commas") from None


# ---- models and suites -------------------------------------------------------------------------------


@app.command()
@handle_errors
def models() -> None:
    """List the model cards: family, checkpoint, dtype, shape, decoding defaults."""
    from .cards import all_cards, paper_order

    order = {s: i for i, s in enumerate(paper_order())}
    table = RichTable(title="Model cards")
    for column in ("name", "paper column", "stage", "family", "checkpoint", "dtype", "shape", "sampler"):
        table.add_column(column)
    for card in sorted(all_cards().values(), key=lambda c: (order.get(c.system, len(order)), c.stage)):  # stand-ins last
        shape = card.shape
        layers, width = shape.get("n_layers", shape.get("num_hidden_layers", "?")), shape.get("d_model", shape.get("hidden_size", "?"))
        dims = f"{layers}L × {width}d, vocab {shape.get('vocab_size', '?')}"
        ckpt = card.checkpoint or "[yellow]--checkpoint DIR[/yellow]"
        table.add_row(card.name, card.column, card.stage, card.family, ckpt, card.dtype, dims,
                      str(card.decoding_for(None).get("sampler", "—")))
    Console().print(table)


@app.command()
@handle_errors
def suites(stage: StageOpt = None) -> None:
    """List the paper's suites: benchmark, lm-eval task, shots, scoring mode."""
    from .suites import resolve, suite_names

    for st in [stage] if stage else ["base", "instruct"]:
        table = RichTable(title=f"Suite 'all', stage {st} (other suites: {', '.join(suite_names()[1:])})")
        for column in ("benchmark", "task", "shots", "mode", "metric", "section"):
            table.add_column(column)
        for entry in resolve("all", st):
            table.add_row(entry.key, entry.task, str(entry.shots), entry.mode,
                          entry.benchmark.metric[st], entry.benchmark.section)
        Console().print(table)


# ---- run ----------------------------------------------------------------------------------------------


@app.command()
@handle_errors
def run(
    model: ModelOpt,
    suite: SuiteOpt = "all",
    stage: StageOpt = None,
    tasks: TasksOpt = None,
    limit: LimitOpt = None,
    shots: ShotsOpt = None,
    checkpoint: CheckpointOpt = None,
    data_dir: DataDirOpt = None,
    output: OutputOpt = Path("results"),
    batch_size: BatchOpt = "1",
    device: DeviceOpt = None,
    seed: SeedOpt = 1234,
    force: Annotated[bool, typer.Option(help="Redo benchmarks that already have results.", rich_help_panel=PANEL_PROTOCOL)] = False,
    allow_code_exec: Annotated[bool, typer.Option(help="Run model-written code (HumanEval, MBPP) in the sandbox.", rich_help_panel=PANEL_EXEC)] = False,
    skip_missing: Annotated[bool, typer.Option(help="Benchmarks missing from the mirror are skipped, not errors.", rich_help_panel=PANEL_IO)] = False,
    gen_kwargs: Annotated[Optional[str], typer.Option(help="Generation overrides for every task, e.g. max_gen_toks=512.", rich_help_panel=PANEL_PROTOCOL)] = None,
    model_args: Annotated[Optional[str], typer.Option(help="Extra backend/decoding settings, e.g. steps=256,block_length=32.", rich_help_panel=PANEL_MODEL)] = None,
    bootstrap_iters: Annotated[int, typer.Option(help="Bootstrap iterations for standard errors.", rich_help_panel=PANEL_PROTOCOL)] = 1000,
) -> None:
    """Evaluate one model card on a suite; writes results/<stage>/<model>/<benchmark>.json."""
    from .run import RunOptions

    options = RunOptions(
        model=model, suite=suite, stage=stage, tasks=_csv(tasks), limit=_limit(limit), shots=shots,
        checkpoint=checkpoint, data_dir=data_dir, output=output, batch_size=_batch(batch_size), device=device,
        seed=seed, force=force, allow_code_exec=allow_code_exec, skip_missing=skip_missing,
        bootstrap_iters=bootstrap_iters, gen_kwargs=_kv(gen_kwargs) or None, model_args=_kv(model_args),
        quiet=not _state["verbose"],
    )
    summary = execute_run(options)
    raise typer.Exit(summary.exit_code)


def _limit(limit: float | None) -> int | float | None:
    return int(limit) if limit is not None and limit >= 1 and float(limit).is_integer() else limit


def _batch(value: str) -> int | str:
    if value.isdigit() and int(value) > 0:
        return int(value)
    if value == "auto" or value.startswith("auto:"):
        return value
    raise UserError(f"--batch-size must be a positive integer or auto, got '{value}'", "pass e.g. --batch-size 8")


def execute_run(options):
    """Run with a rich progress display; prints what happened to each benchmark."""
    from rich.markup import escape  # messages name paths and values, which may hold [brackets]
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .run import plan, run as run_api, run_variants

    planned = plan(options)
    card, stage, entries, _, _ = planned
    variants = len(run_variants(card, options))
    # Under accelerate launch every process runs this; only the first one talks.
    quiet = int(os.environ.get("RANK", "0")) != 0
    # A live bar only on a terminal: written to a file or a pipe it is a frozen frame and a blank line
    # around the per-benchmark lines and the error line. soft_wrap: one message, one line.
    console = Console(stderr=True, quiet=quiet, soft_wrap=True)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), console=console, transient=False, disable=not console.is_interactive)
    status = {"skipped": "[dim]done earlier[/dim]", "missing": "[yellow]no data[/yellow]",
              "opt-in": "[yellow]needs --allow-code-exec[/yellow]"}

    with progress:
        overall = progress.add_task(f"{card.name} ({stage})", total=len(entries) * variants)

        def on_event(kind, entry, outcome):
            if kind == "variant":  # ablation suite: the next variant's benchmarks follow
                progress.console.print(f"[bold]{outcome.model}[/bold]")
                return
            if kind == "start":
                progress.update(overall, description=f"{card.name} ({stage}): {entry.key} ({entry.shots}-shot)")
                return
            if kind == "journal":  # damaged journal lines: reported, skipped, their requests redone
                progress.console.print(f"  {entry.key:<15} [yellow]warning:[/yellow] {escape(outcome.message)}",
                                       markup=True, highlight=False)
                return
            if kind == "done":
                score = "—" if outcome.score is None else f"{outcome.score * 100:.1f}"
                reuse = f", {outcome.reused} reused from journal" if outcome.reused else ""
                progress.console.print(f"  {entry.key:<15} {score:>6}  [dim]{outcome.computed} requests, "
                                       f"{outcome.wall_s:.1f} s{reuse}[/dim]")
            elif kind != "missing" or options.skip_missing:  # missing data ends in an error line below
                progress.console.print(f"  {entry.key:<15} {status[kind]}  [dim]{escape(outcome.message)}[/dim]")
            progress.advance(overall)

        summary = run_api(options, on_event=on_event, planned=planned)
    failed = [o for o in summary.outcomes if o.status in ("missing-data", "failed")]
    for o in failed:  # each message names its benchmark
        typer.echo(f"error: {o.message}", err=True)
    return summary


# ---- table ----------------------------------------------------------------------------------------------


@app.command()
@handle_errors
def table(
    stage: Annotated[str, typer.Option(help="base (Table 1) or instruct (Table 2).")] = "base",
    format: Annotated[str, typer.Option("--format", "-f", help="latex, markdown, csv or json.")] = "markdown",
    results: ResultsOpt = Path("results"),
    paper: Annotated[bool, typer.Option(help="Show the paper's number and the difference beside each result.")] = False,
    speed_dir: Annotated[Optional[Path], typer.Option(help="Speed results (default RESULTS/speed).")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Write to a file instead of stdout.")] = None,
    ablation: Annotated[bool, typer.Option(help="Figure 3 instead: perplexity and accuracy per progression-time variant.")] = False,
    model: Annotated[str, typer.Option(help="With --ablation: the Evo card whose variants to show.")] = "evo-8b",
    stand_ins: Annotated[bool, typer.Option(help="Add the public stand-ins (e.g. Dream-v0 for MDLM) after the paper's columns, labelled.")] = False,
) -> None:
    """The paper's comparison table from results files."""
    from .report.tables import build_table, render

    if ablation:
        text = _ablation_table(results, stage, model, format)
    else:
        text = render(build_table(stage, results, paper=paper, speed_dir=speed_dir, stand_ins=stand_ins), format)
    if output:
        from .store import atomic_write_text

        atomic_write_text(output, text)
        typer.echo(f"wrote {output}", err=True)
    else:
        sys.stdout.write(text)


def _ablation_table(results: Path, stage: str, model: str, fmt: str) -> str:
    import json

    from .ablation import figure3_table, render_markdown
    from .errors import UnknownNameError
    from .suites import check_stage

    check_stage(stage)
    if fmt not in ("markdown", "json"):
        raise UnknownNameError("ablation table format", fmt, ["markdown", "json"])
    if not results.is_dir():
        raise UserError(f"results folder {results} does not exist", "run `evo-eval run --suite ablation` first")
    rows = figure3_table(results, model, stage)
    return render_markdown(rows) if fmt == "markdown" else json.dumps(rows, indent=1) + "\n"


# ---- data -------------------------------------------------------------------------------------------


@data_app.command("import")
@handle_errors
def data_import(
    src: Annotated[Path, typer.Argument(help="Folder with the publishers' files (layout of shared/benchdata).")],
    dest: Annotated[Optional[Path], typer.Option(help="Mirror folder (default $EVO_EVAL_DATA or ~/.cache/evo-eval/data).")] = None,
    only: Annotated[Optional[str], typer.Option(help="Comma-separated benchmarks to import.")] = None,
) -> None:
    """Convert the publishers' formats into one local mirror with a manifest of rows and sha256."""
    from .data import default_mirror_dir, import_mirror

    target = dest or default_mirror_dir()
    manifest = import_mirror(src, target, _csv(only))
    files = manifest.get("files", manifest)
    typer.echo(f"imported {len(files)} files into {target}")


@data_app.command("verify")
@handle_errors
def data_verify(dir: Annotated[Optional[Path], typer.Argument(help="Mirror folder.")] = None) -> None:
    """Re-hash and re-count every file of a mirror against its manifest."""
    from .data import default_mirror_dir, verify_mirror

    target = dir or default_mirror_dir()
    report = verify_mirror(target)
    typer.echo(f"{target}: {len(report.get('files', report))} files verified")


# ---- demo -------------------------------------------------------------------------------------------


@app.command()
@handle_errors
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the tiny models, mirror and results go.")] = Path(".demo"),
    limit: Annotated[int, typer.Option(help="Documents per task.")] = 2,
    benchdata: Annotated[Optional[Path], typer.Option(help="Publishers' files (default ../shared/benchdata).")] = None,
) -> None:
    """The embedded default: the whole pipeline offline on tiny local models, then the table."""
    from .demo import run_demo

    raise typer.Exit(run_demo(workdir, limit, benchdata, console))


def _register_speed() -> None:
    # speed.py imports nothing from lm-eval, so the device machine (which has no lm-eval) can time models.
    from .speed import plot_command, speed_command

    app.command("speed")(speed_command)
    app.command("plot")(plot_command)


_register_speed()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
