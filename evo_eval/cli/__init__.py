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
from typer.core import TyperGroup

from ..errors import UserError
from .run_display import execute_run
from .values import _batch, _csv, _kv, _limit


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

    def get_command(self, ctx: Any, name: str) -> Any:
        # The root's own options (--debug, --verbose) are accepted after any subcommand too, and
        # listed in its --help: users type `evo-eval run ... --verbose` as often as `evo-eval -v run`.
        command = super().get_command(ctx, name)
        return _with_global_options(command, self.params) if command is not None else None


_GLOBAL_PANEL = "Global options (also before the command)"


def _with_global_options(command: Any, params: list[Any]) -> Any:
    import copy

    from typer.core import TyperGroup as Group

    if getattr(command, "_evo_globals", False):
        return command
    command._evo_globals = True
    if isinstance(command, Group):  # `data import`, `data verify`: one level further down
        inner = command.get_command
        command.get_command = lambda ctx, name: (lambda c: _with_global_options(c, params) if c else None)(inner(ctx, name))
        return command
    taken = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for param in params:
        if param.name not in ("debug", "verbose") or set(param.opts) & taken:
            continue
        extra = copy.copy(param)
        extra.expose_value = False  # the command's function never sees it; the callback records it
        extra.rich_help_panel = _GLOBAL_PANEL
        extra.callback = _global_flag(param.name)
        command.params.append(extra)
    return command


def _global_flag(name: str) -> Callable[[Any, Any, Any], None]:
    def record(ctx: Any, param: Any, value: Any) -> None:
        if value:  # given after the command: the same as before it (the root already ran with its default)
            _apply_globals(**{name: True})
    return record


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

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model card: a name (`evo-eval models`) or the path of a card YAML file (your own model).", rich_help_panel=PANEL_MODEL)]
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
IncludeOpt = Annotated[Optional[Path], typer.Option(help="Folder of your own lm-eval task YAMLs with an evo_eval metadata block (evo_eval/user_tasks.py).", rich_help_panel=PANEL_PROTOCOL)]
BatchOpt = Annotated[str, typer.Option(help="Batch size (an int, or auto): requests per forward; the non-HF families stack equal-shape requests only, with results equal to batch 1, and read auto as 8.", rich_help_panel=PANEL_EXEC)]


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
    _state["debug"] = False
    _state["verbose"] = False
    _apply_globals(debug=debug, verbose=verbose)


_QUIET_LOGGERS = ("lm_eval", "lm-eval", "transformers", "datasets", "accelerate", "evo_eval")


def _apply_globals(debug: bool = False, verbose: bool = False) -> None:
    _state["debug"] = _state["debug"] or debug
    _state["verbose"] = _state["verbose"] or verbose
    level = logging.NOTSET if _state["verbose"] else logging.ERROR
    if not _state["verbose"]:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)


# ---- models and suites -------------------------------------------------------------------------------


@app.command()
@handle_errors
def models() -> None:
    """List the model cards: family, checkpoint, dtype, shape, decoding defaults."""
    from ..cards import all_cards, paper_order

    from ..listing import listing, print_listing

    order = {s: i for i, s in enumerate(paper_order())}
    cards = sorted(all_cards().values(), key=lambda c: (order.get(c.system, len(order)), c.stage))  # stand-ins last
    # A paper column header that differs from the paper's text is kept as printed, with a note.
    notes = [c for c in cards if c.paper.get("column_note")]
    marks = {c.name: "*" * (i + 1) for i, c in enumerate(notes)}
    caption = "\n".join(f"{marks[c.name]} {c.column}: {c.paper['column_note']}" for c in notes) or None
    table = listing("Model cards", [("name", True), ("paper column", False), ("stage", True), ("family", True),
                                    ("checkpoint", True), ("dtype", True), ("shape", False), ("sampler", True)],
                    caption=caption)
    for card in cards:
        shape = card.shape
        layers, width = shape.get("n_layers", shape.get("num_hidden_layers", "?")), shape.get("d_model", shape.get("hidden_size", "?"))
        dims = f"{layers}L×{width}d vocab:{shape.get('vocab_size', '?')}"
        ckpt = card.checkpoint or "[yellow]--checkpoint DIR[/yellow]"
        table.add_row(card.name, card.column + marks.get(card.name, ""), card.stage, card.family, ckpt, card.dtype,
                      dims, str(card.decoding_for(None).get("sampler", "—")))
    print_listing(table)


@app.command()
@handle_errors
def suites(stage: StageOpt = None, include_path: IncludeOpt = None) -> None:
    """List the paper's suites: benchmark, lm-eval task, shots, scoring mode (and your own with --include-path)."""
    from ..listing import listing, print_listing
    from ..suites import resolve, suite_names, use_include_path

    use_include_path(include_path)

    for st in [stage] if stage else ["base", "instruct"]:
        table = listing(f"Suite 'all', stage {st} (other suites: {', '.join(suite_names()[1:])})",
                        [("benchmark", True), ("task", True), ("shots", True), ("mode", True), ("metric", True),
                         ("section", False)])
        for entry in resolve("all", st):
            table.add_row(entry.key, entry.task, str(entry.shots), entry.mode,
                          entry.benchmark.metric[st], entry.benchmark.section)
        print_listing(table)


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
    dtype: Annotated[Optional[str], typer.Option(help="float32, bfloat16 or float16 (default: the card's dtype on a GPU, float32 on a CPU).", rich_help_panel=PANEL_EXEC)] = None,
    seed: SeedOpt = 1234,
    force: Annotated[bool, typer.Option(help="Redo benchmarks whose results file exists, whatever its fingerprint (docs/resume.md).", rich_help_panel=PANEL_PROTOCOL)] = False,
    allow_code_exec: Annotated[bool, typer.Option(help="Run model-written code (HumanEval, MBPP) in the sandbox.", rich_help_panel=PANEL_EXEC)] = False,
    skip_missing: Annotated[bool, typer.Option(help="Accept an incomplete suite: benchmarks missing from the mirror, and code benchmarks without --allow-code-exec, are skipped with exit status 0 (else 2 and 3).", rich_help_panel=PANEL_IO)] = False,
    gen_kwargs: Annotated[Optional[str], typer.Option(help="Generation overrides for every task, e.g. max_gen_toks=512.", rich_help_panel=PANEL_PROTOCOL)] = None,
    model_args: Annotated[Optional[str], typer.Option(help="Extra backend/decoding settings, e.g. steps=256,block_length=32.", rich_help_panel=PANEL_MODEL)] = None,
    bootstrap_iters: Annotated[int, typer.Option(help="Bootstrap iterations for standard errors.", rich_help_panel=PANEL_PROTOCOL)] = 1000,
    include_path: IncludeOpt = None,
) -> None:
    """Evaluate one model card on a suite; writes results/<stage>/<model>/<benchmark>.json."""
    from ..run import RunOptions
    from ..run_checks import check_task_list

    check_task_list(tasks, _csv(tasks))
    options = RunOptions(
        model=model, suite=suite, stage=stage, tasks=_csv(tasks), limit=_limit(limit), shots=shots,
        checkpoint=checkpoint, data_dir=data_dir, output=output, batch_size=_batch(batch_size), device=device,
        dtype=dtype, seed=seed, force=force, allow_code_exec=allow_code_exec, skip_missing=skip_missing,
        bootstrap_iters=bootstrap_iters, gen_kwargs=_kv(gen_kwargs) or None, model_args=_kv(model_args),
        quiet=not _state["verbose"], include_path=include_path,
    )
    summary = execute_run(options)
    raise typer.Exit(summary.exit_code)


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
    ablation: Annotated[bool, typer.Option(help="Figures 3 and 4 instead: perplexity (ELBO and AR limit), accuracy and refinement steps per token per ablation variant.")] = False,
    model: Annotated[str, typer.Option(help="With --ablation: the Evo card whose variants to show.")] = "evo-8b",
    ci: Annotated[bool, typer.Option("--ci", help="Show a 95 % bootstrap interval beside each measured score.")] = False,
    against: Annotated[Optional[str], typer.Option(help="Card of the reference column: mark cells that differ from it significantly (paired test).")] = None,
    stand_ins: Annotated[bool, typer.Option(help="Add the public stand-ins (e.g. Dream-v0 for MDLM) after the paper's columns, labelled.")] = False,
) -> None:
    """The paper's comparison table from results files."""
    from ..report.render import render
    from ..report.tables import build_table

    if ablation:
        text = _ablation_table(results, stage, model, format)
    else:
        text = render(build_table(stage, results, paper=paper, speed_dir=speed_dir, ci=ci, against=against,
                                  stand_ins=stand_ins), format)
    if output:
        from ..store import atomic_write_text

        atomic_write_text(output, text)
        typer.echo(f"wrote {output}", err=True)
    else:
        sys.stdout.write(text)


@app.command()
@handle_errors
def report(
    results: ResultsOpt = Path("results"),
    output: Annotated[Optional[Path], typer.Option(help="HTML file to write (default RESULTS/report.html).")] = None,
    stage: Annotated[Optional[str], typer.Option(help="base or instruct (default: every stage with results).")] = None,
    max_docs: Annotated[int, typer.Option(help="Documents embedded per benchmark (0: all).")] = 500,
    against: Annotated[Optional[str], typer.Option(help="Card of the reference column for the paired marks.")] = None,
) -> None:
    """One self-contained HTML page: tables with intervals, the figure, every system's documents."""
    from ..report.html import build_report

    typer.echo(f"wrote {build_report(results, output, [stage] if stage else None, max_docs, against)}", err=True)


def _ablation_table(results: Path, stage: str, model: str, fmt: str) -> str:
    from ..ablation import render_ablation
    from ..errors import UnknownNameError
    from ..suites import check_stage

    check_stage(stage)
    if fmt not in ("markdown", "json"):
        raise UnknownNameError("ablation table format", fmt, ["markdown", "json"])
    if not results.is_dir():
        from ..run_checks import folder_problem

        raise UserError(folder_problem(results, "results folder"), "run `evo-eval run --suite ablation` first")
    return render_ablation(results, model, stage, fmt)


# ---- data -------------------------------------------------------------------------------------------


@data_app.command("import")
@handle_errors
def data_import(
    src: Annotated[Path, typer.Argument(help="Folder with the publishers' files (layout of shared/benchdata).")],
    dest: Annotated[Optional[Path], typer.Option(help="Mirror folder (default $EVO_EVAL_DATA or ~/.cache/evo-eval/data).")] = None,
    only: Annotated[Optional[str], typer.Option(help="Comma-separated benchmarks to import.")] = None,
) -> None:
    """Convert the publishers' formats into one local mirror with a manifest of rows and sha256."""
    from ..data.mirror import default_mirror_dir, import_mirror

    target = dest or default_mirror_dir()
    manifest = import_mirror(src, target, _csv(only))
    files = manifest.get("files", manifest)
    typer.echo(f"imported {len(files)} files into {target}")


@data_app.command("verify")
@handle_errors
def data_verify(dir: Annotated[Optional[Path], typer.Argument(help="Mirror folder.")] = None) -> None:
    """Re-hash and re-count every file of a mirror against its manifest."""
    from ..data.mirror import default_mirror_dir, verify_mirror

    target = dir or default_mirror_dir()
    report = verify_mirror(target)
    typer.echo(f"{target}: {len(report.get('files', report))} files verified")


# ---- demo -------------------------------------------------------------------------------------------


@app.command()
@handle_errors
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the tiny models, mirror and results go.")] = Path(".demo"),
    limit: Annotated[int, typer.Option(help="Documents per task.")] = 2,
    benchdata: Annotated[Optional[Path], typer.Option(help="Publishers' files (default: the sample shipped in the package).")] = None,
) -> None:
    """The embedded default: the whole pipeline offline on tiny local models, then the table."""
    from ..demo import run_demo

    raise typer.Exit(run_demo(workdir, limit, benchdata, console, execute=execute_run))


def _register_speed() -> None:
    # speed.py imports nothing from lm-eval, so the device machine (which has no lm-eval) can time models.
    from .speed import plot_command, speed_command

    app.command("speed")(handle_errors(speed_command))
    app.command("plot")(handle_errors(plot_command))
    from .plan import plan_command

    app.command("plan")(handle_errors(plan_command))


_register_speed()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
