"""The embedded default (`make demo`): the whole pipeline, offline, on tiny local models.

Imports real benchmark files into a local mirror (by default the few documents of every benchmark
that ship inside the package, evo_eval/resources/benchdata: no ../shared, no network), builds tiny
random-weight models with ``save_pretrained`` (nothing is downloaded), runs every base benchmark with
a small ``--limit`` through the same ``run`` a user calls (the tiny models stand in for the real ones
via ``--checkpoint``), and prints the comparison table. The scores are those of random weights: the
demo shows that the machinery works end to end, not what any model can do.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from .errors import DataError
from .paths import sample_benchdata_dir

# Small enough that 15 benchmarks finish in minutes on two cores; random weights rarely emit a stop
# string, so without a cap every generation would run to the task's full max_gen_toks.
DEMO_GEN_KWARGS = {"max_gen_toks": 24}


def _demo_models(models_dir: Path) -> list[tuple[str, Path]]:
    """(card, checkpoint folder) pairs: a tiny Llama under the LLaMA3 card, and a tiny Evo under its own
    card file (Evo checkpoints are checked against their card's shape). The other families have tiny
    stand-ins too (``evo_eval.tiny.build_tiny_family``); two keep the demo within minutes."""
    from .tiny import build_tiny_ar, build_tiny_family, build_tokenizer

    tokenizer = models_dir / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        build_tokenizer(tokenizer)
    pairs = []
    llama = models_dir / "tiny-llama"
    if not (llama / "config.json").is_file():
        build_tiny_ar(llama, "llama", tokenizer_dir=tokenizer)
    pairs.append(("llama3-8b", llama))
    card, checkpoint = build_tiny_family("evo", models_dir, tokenizer)
    pairs.append((str(card), checkpoint))
    return pairs


def run_demo(workdir: Path, limit: int, benchdata: Path | None, console: Console,
             execute: Callable[[Any], Any], tasks: list[str] | None = None) -> int:
    """``execute(RunOptions)`` runs one card (the CLI passes its progress display, ``cli.execute_run``);
    ``tasks`` (benchmark keys) narrows the demo to a few benchmarks; default: every base benchmark."""
    from .data.mirror import import_mirror, verify_mirror
    from .report.render import render
    from .report.tables import build_table
    from .run import RunOptions

    started = time.time()
    source = Path(benchdata).expanduser() if benchdata else sample_benchdata_dir()
    if not source.is_dir():
        what = "benchmark files" if benchdata else "the benchmark sample that ships with evo-eval"
        raise DataError(f"{what} not found at {source}",
                        "pass --benchdata DIR with the publishers' files" if benchdata else "reinstall evo-eval")
    # One mirror per source, so a demo on the full files never reuses the sample's mirror or the reverse.
    mirror = workdir / ("data" if benchdata else "data-sample")
    if not (mirror / "manifest.json").is_file():
        console.print(f"importing {source} into {mirror} ...")
        import_mirror(source, mirror)
    verify_mirror(mirror)
    results = workdir / "results"
    for card, checkpoint in _demo_models(workdir / "models"):
        console.print(f"[bold]{card}[/bold] with tiny random weights from {checkpoint}")
        options = RunOptions(
            model=card, checkpoint=str(checkpoint), data_dir=mirror, tasks=tasks, output=results, limit=limit,
            device="cpu", batch_size=8, allow_code_exec=True, skip_missing=True, bootstrap_iters=0,
            gen_kwargs=DEMO_GEN_KWARGS, quiet=True,
        )
        execute(options)
    table = build_table("base", results, paper=True)
    print(render(table, "markdown"))
    console.print(f"demo finished in {time.time() - started:.0f} s; results in {results}; "
                  "scores come from random weights (the pipeline, not a model, is being shown)")
    return 0
