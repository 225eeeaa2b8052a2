"""``evo-eval speed`` and ``evo-eval plot``: options in, the speed API and the report called, a progress
bar and one line per model out. Registered by ``evo_eval.cli`` (which wraps each in its error handler)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..cards import ModelCard
from ..devices import resolve_device
from ..errors import UserError
from ..store import CPU_NOTE, SYNTHETIC_LABEL, SpeedResult
from ..speed.measure import run_speed
from ..speed.options import SpeedOptions, plan_cards


def format_result(result: SpeedResult) -> str:
    """One console line: the headline figures, the paper's, and the labels that qualify them."""
    roof = result.roofline
    bw = f"{roof['achieved_bandwidth_tbs']:.2f} TB/s"
    if roof.get("bandwidth_fraction") is not None:
        bw += f" ({roof['bandwidth_fraction']:.0%} of {roof['datasheet_bandwidth_tbs']:.2f})"
    paper = result.paper.get("tokens_per_s")
    memory = f"{result.peak_memory_gib:.1f} GiB" if result.peak_memory_gib is not None else "—"
    roof_frac = f"{roof['roofline_fraction']:.0%} of {roof['bound']} roofline" if roof.get("roofline_fraction") else ""
    return (f"{result.key:<28} {result.tokens_per_s:8.1f} tok/s (paper {paper if paper is not None else '—'})  "
            f"E2E {result.e2e_latency_s:.2f} s (p90 {result.e2e_latency_p90_s:.2f})  NFE {result.nfe:.0f}  "
            f"{result.tokens_per_forward:.2f} tok/fwd  {memory}  {bw}  {roof_frac}  [{result.weights_label}"
            f"{'' if result.comparable_to_paper else '; CPU tiny, not comparable'}]")


def parse_settings(text: str | None) -> dict[str, Any]:
    """``key=value,key2=value2`` -> dict (values stay strings; the sampler Config casts them)."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"cannot parse '{item}' in --decoding", "write key=value pairs separated by commas")
        out[key.strip()] = value.strip()
    return out


def speed_command(
    models: Annotated[str, typer.Option("--models", help="Comma-separated card names, or all.")] = "all",
    stage: Annotated[Optional[str], typer.Option(help="base or instruct (default: both, with --models all).")] = None,
    weights: Annotated[str, typer.Option(help="synthetic (random weights at the card's shape) or checkpoint.")] = "synthetic",
    checkpoint: Annotated[Optional[str], typer.Option(help="Checkpoint folder or hub id for --weights checkpoint.")] = None,
    prompts: Annotated[str, typer.Option(help="Benchmark whose rendered prompts are timed.")] = "gsm8k",
    gen_len: Annotated[int, typer.Option(help="Tokens to generate per request (fixed with synthetic weights).")] = 256,
    repeats: Annotated[int, typer.Option(help="Timed requests per model (median and p90 over them).")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up requests per model.")] = 2,
    variant: Annotated[Optional[str], typer.Option(help="reference (the card's decoding), or a variant the sampler offers (e.g. cached).")] = None,
    decoding: Annotated[Optional[str], typer.Option(help="Sampler overrides, e.g. schedule=fixed:0.5.")] = None,
    output: Annotated[Path, typer.Option(help="Folder for the per-model results files.")] = Path("results/speed"),
    device: Annotated[Optional[str], typer.Option(help="cuda, cuda:1, cpu (default: cuda if available).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="Override the card's dtype.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Local data mirror, as for run (default $EVO_EVAL_DATA, else ~/.cache/evo-eval/data).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for weights and sampling.")] = 1234,
) -> None:
    """Time models under the matched protocol: batch 1, prompt encoding included, warm-ups excluded."""
    options = SpeedOptions(
        models=[m.strip() for m in models.split(",") if m.strip()], stage=stage, weights=weights,
        checkpoint=checkpoint, prompts=prompts, gen_len=gen_len, repeats=repeats, warmup=warmup, variant=variant,
        decoding=parse_settings(decoding), output=output, device=device, dtype=dtype, data_dir=data_dir, seed=seed,
    )
    run_with_progress(options)


def run_with_progress(options: SpeedOptions) -> list[SpeedResult]:
    """run_speed with a rich progress bar and one line per model (skips included)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    plan_cards(options)  # bad input fails here, as one line, before anything is printed
    device = resolve_device(options.device)
    if device.type != "cuda":
        console.print(f"[yellow]{CPU_NOTE}[/yellow]")
    if options.weights == "synthetic":
        console.print(f"[yellow]{SYNTHETIC_LABEL}[/yellow]: random weights at each card's shape, "
                      f"fixed length {options.gen_len}, proxy prompt tokenizer")
    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        def on_event(kind: str, card: ModelCard, **info: Any) -> None:
            if kind == "start":
                tasks[card.name] = progress.add_task(f"{card.name}", total=info["total"])
            elif kind == "advance":
                progress.advance(tasks[card.name])
            elif kind == "done":
                progress.console.print(format_result(info["result"]) + f"  -> {info['path']}")
            elif kind == "skip":
                progress.console.print(f"{card.name:<28} skipped: {info['reason']}")

        return run_speed(options, on_event)


def plot_command(
    stage: Annotated[str, typer.Option(help="base (Table 1) or instruct (Table 2).")] = "base",
    task: Annotated[str, typer.Option(help="Benchmark key for the accuracy axis, or mean (over benchmarks every model has).")] = "gsm8k",
    accuracy: Annotated[str, typer.Option(help="measured (results files) or paper (the paper's table).")] = "measured",
    speed: Annotated[str, typer.Option(help="measured (speed results) or paper (the paper's speed row).")] = "measured",
    results: Annotated[Path, typer.Option("--results", help="Results folder to read.")] = Path("results"),
    speed_dir: Annotated[Optional[Path], typer.Option(help="Speed results (default RESULTS/speed).")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Figure file (.png, .pdf or .svg; default RESULTS/speed/accuracy_vs_speed_STAGE.png).")] = None,
) -> None:
    """Accuracy against decoding speed, one point per system, Pareto frontier marked."""
    def make() -> None:
        from ..report.plot import plot_accuracy_vs_speed

        path = plot_accuracy_vs_speed(stage=stage, task=task, accuracy=accuracy, speed=speed, results=results,
                                      speed_dir=speed_dir, output=output)
        typer.echo(f"wrote {path}", err=True)

    make()
