"""`evo-eval plan`: the command over evo_eval/plan.py (what a suite will cost, before any weight loads)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .values import _csv, _kv, _limit

if TYPE_CHECKING:
    from ..plan import CardPlan, Cost



def plan_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Model card name (`evo-eval models`), or a comma-separated list.")],
    suite: Annotated[str, typer.Option(help="all, or a section: general, math, code, chinese.")] = "all",
    stage: Annotated[Optional[str], typer.Option(help="base or instruct (default: the card's stage).")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="Comma-separated benchmark keys from the suite.")] = None,
    limit: Annotated[Optional[float], typer.Option(help="Documents per task, as `run --limit`.")] = None,
    shots: Annotated[Optional[int], typer.Option(help="Override every benchmark's shot count.")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Checkpoint folder whose tokenizer counts the tokens.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Local data mirror (default $EVO_EVAL_DATA, else the hub).")] = None,
    variant: Annotated[Optional[str], typer.Option(help="cached: add a column with the sampler's cached variant.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Estimate at a named GPU's datasheet peaks (H200, H100, A100) instead of results/speed.")] = None,
    speed_dir: Annotated[Path, typer.Option(help="Speed results whose measured rates give the time estimate.")] = Path("results/speed"),
    gen_kwargs: Annotated[Optional[str], typer.Option(help="Generation overrides, as `run --gen-kwargs`.")] = None,
    model_args: Annotated[Optional[str], typer.Option(help="Decoding/likelihood settings, as `run --model-args`.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the plan as JSON to this file.")] = None,
) -> None:
    """Forwards, tokens, FLOPs and device time a suite will cost, before any weight is loaded."""
    def make() -> None:
        from rich.console import Console

        from ..plan import PlanOptions, plan_card
        from ..store import atomic_write_text, to_json

        console, plans = Console(), []
        if not console.is_terminal:  # a file or pipe: no wrapping of the wide table
            console = Console(width=200)
        for name in _csv(model) or []:
            options = PlanOptions(model=name, suite=suite, stage=stage, tasks=_csv(tasks), limit=_limit(limit),
                                  shots=shots, checkpoint=checkpoint, data_dir=data_dir, variant=variant,
                                  device=device, speed_dir=speed_dir, gen_kwargs=_kv(gen_kwargs) or None,
                                  model_args=_kv(model_args))
            plans.append(plan_card(options))
            console.print(render(plans[-1]))
        if json_out:
            atomic_write_text(json_out, to_json([p.as_dict() for p in plans]))

    make()


# ---- rendering: one rich table per card ---------------------------------------------------------------



def _si(value: float, unit: str = "") -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s"


def _mark(cost: "Cost") -> str:
    return "" if cost.exact else "≤ "


def render(plan: "CardPlan"):
    from rich.table import Table

    card = plan.card
    table = Table(title=f"{card.name} ({card.family}, {plan.stage}): {_si(plan.model.params)} parameters",
                  caption=f"tokens: {plan.tokenizer}\nrates: {plan.rates.label}\n≤: an upper bound "
                          "(generation to max_gen_toks; data-dependent counts at their bound)")
    columns = ["benchmark", "mode", "shots", "docs", "requests", "prompt tokens", "forwards", "NFE",
               "tokens processed", "FLOPs", "est. time"]
    if plan.variant:
        columns += [f"{plan.variant}: forwards", f"{plan.variant}: est. time"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("benchmark", "mode") else "right")

    def row(label, mode, shots, docs, requests, prompt, cost, variant, end=False):
        cells = [label, mode, shots, docs, requests, _si(prompt), f"{_mark(cost)}{_si(cost.calls)}",
                 f"{_mark(cost)}{_si(cost.nfe)}", f"{_mark(cost)}{_si(cost.positions)}",
                 f"{_mark(cost)}{_si(cost.flops)}", f"{_mark(cost)}{_duration(cost.seconds)}"]
        if plan.variant:
            cells += ([f"{_mark(variant)}{_si(variant.calls)}", f"{_mark(variant)}{_duration(variant.seconds)}"]
                      if variant is not None else ["—", "—"])
        table.add_row(*map(str, cells), end_section=end)

    for i, b in enumerate(plan.benchmarks):
        row(b.benchmark, b.mode, b.shots, b.documents, b.requests, b.prompt_tokens, b.reference, b.variant,
            end=i == len(plan.benchmarks) - 1)
    has_variant = bool(plan.variant) and all(b.variant is not None for b in plan.benchmarks)
    row("total", "", "", sum(b.documents for b in plan.benchmarks), sum(b.requests for b in plan.benchmarks),
        sum(b.prompt_tokens for b in plan.benchmarks), plan.total(), plan.total("variant") if has_variant else None)
    return table
