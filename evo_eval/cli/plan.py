"""`evo-eval plan`: the command over evo_eval/plan.py (what a suite will cost, before any weight loads)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .values import _csv, _kv, _limit



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

        from ..plan import PlanOptions, plan_card, render
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
