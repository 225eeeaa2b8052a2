"""Every card at its paper size with synthetic weights, plus the ablation and fast-path variants, in one command.

    python3 benchmarks/speed_all.py --output DIR [--data-dir D] [--budget-s 420]      (make bench-speed)

Runs from the repository root without installing the package (the GPU machine has no venv, and no
lm-eval or datasets: nothing imported here needs them). Measures, in this order:

1. all 14 cards with their own decoding (what the table's speed rows and the plot show);
2. Evo (``evo-8b``) at ``schedule=fixed:0``, ``fixed:0.5`` and ``fixed:1`` (the paper's ablation:
   cost must fall with the progression times, fixed:0.5 near half of fixed:1);
3. LLaDA (``llada-8b``) with its sampler's ``cached`` variant (Fast-dLLM-style), beside the
   reference run of step 1.

A family whose module has not landed is skipped with one line. ``--budget-s`` is the time for the
timed requests of all models together: each model gets an equal share of what is left, and runs
fewer repeats (never under 3) when its share is short. Writes one results file per model to DIR,
then ``summary.md`` / ``summary.json`` (each system's tokens/s beside the paper's, each fast path's
fraction of its roofline), the paper-layout tables with the speed rows, and the accuracy-vs-speed
figure (the paper's GSM8K accuracy against the measured speed).

On the device, pass the git state the copied tree lacks: ``EVO_EVAL_GIT_COMMIT=<sha>
EVO_EVAL_GIT_DIRTY=0|1 python3 benchmarks/speed_all.py ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evo_eval.cards import all_cards  # noqa: E402
from evo_eval.errors import UserError  # noqa: E402
from evo_eval.cli.speed import format_result, parse_settings  # noqa: E402
from evo_eval.devices import resolve_device  # noqa: E402
from evo_eval.speed.build import ModelPool  # noqa: E402
from evo_eval.speed.measure import run_speed  # noqa: E402
from evo_eval.speed.options import SpeedOptions, plan_cards  # noqa: E402
from evo_eval.store import SpeedResult  # noqa: E402

DEFAULT_OUTPUT = REPO / "results" / "speed"
EXTRAS = (
    ("evo-8b", dict(decoding={"schedule": "fixed:0"})),
    ("evo-8b", dict(decoding={"schedule": "fixed:0.5"})),
    ("evo-8b", dict(decoding={"schedule": "fixed:1"})),
    ("llada-8b", dict(variant="cached")),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--budget-s", type=float, default=420.0, help="seconds for all timed requests together")
    parser.add_argument("--gen-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--models", default="all", help="comma-separated cards for step 1, or all")
    parser.add_argument("--no-extras", action="store_true", help="skip the Evo schedules and LLaDA cached runs")
    parser.add_argument("--decoding", default=None, help="sampler overrides for step 1 (labelled files), e.g. mode=eager")
    parser.add_argument("--device", default=None)
    parser.add_argument("--summarize-only", action="store_true",
                        help="rebuild summary, tables and figures from the results files already in --output")
    return parser.parse_args(argv)


def data_mirror(args: argparse.Namespace) -> Path | None:
    """--data-dir (a mirror, as for evo-eval run), else GSM8K imported from ../shared/benchdata into
    OUTPUT/data when no default mirror exists (a fresh device machine has none)."""
    from evo_eval.data.mirror import default_mirror_dir, import_mirror

    if args.data_dir is not None or (default_mirror_dir() / "gsm8k").is_dir():
        return args.data_dir
    mirror = args.output / "data"
    if not (mirror / "gsm8k" / "main" / "test.jsonl").is_file():
        import_mirror(REPO.parent / "shared" / "benchdata", mirror, ["gsm8k"])
    return mirror


def jobs(args: argparse.Namespace) -> list[SpeedOptions]:
    common = dict(gen_len=args.gen_len, repeats=args.repeats, warmup=args.warmup, output=args.output,
                  data_dir=data_mirror(args), device=args.device)
    names = list(all_cards()) if args.models == "all" else [m.strip() for m in args.models.split(",")]
    ordered = [c.name for c in plan_cards(SpeedOptions(models=names))]
    overrides = parse_settings(args.decoding)
    out = [SpeedOptions(models=[name], decoding=dict(overrides), **common) for name in ordered]
    if not args.no_extras:
        out += [SpeedOptions(models=[name], **common, **extra) for name, extra in EXTRAS]
    return out


def measure(args: argparse.Namespace) -> tuple[list[SpeedResult], list[str]]:
    results, lines = [], []
    planned = jobs(args)
    pool = ModelPool()
    deadline = time.perf_counter() + args.budget_s

    def on_event(kind, card, **info):
        if kind == "done":
            line = format_result(info["result"])
        elif kind == "skip":
            line = f"{card.name:<28} skipped: {info['reason']}"
        else:
            return
        lines.append(line)
        print(line, flush=True)

    try:
        for index, options in enumerate(planned):
            left = max(deadline - time.perf_counter(), 0.0)
            options.time_budget_s = left / (len(planned) - index)
            try:
                results += run_speed(options, on_event, pool)
            except Exception as exc:  # noqa: BLE001 - one family's failure must not lose the others' figures
                pool.clear()
                line = f"{options.models[0]:<28} FAILED: {type(exc).__name__}: {exc}"
                lines.append(line)
                print(line, flush=True)
                traceback.print_exc()
    finally:
        pool.clear()
    return results, lines


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def summary(results: list[SpeedResult], device: str) -> tuple[str, dict]:
    from evo_eval.roofline import copy_bandwidth, matmul_rate  # cached: measured during the runs

    rows = ["| card | variant | tokens/s | paper tokens/s | E2E s (p90) | paper E2E s | NFE | tok/fwd | "
            "bound | roofline fraction | HBM TB/s (of datasheet) | dense TFLOP/s (of measured matmul) | peak GiB |",
            "|" + "---|" * 13]
    data = []
    for r in results:
        roof = r.roofline
        rows.append(
            f"| {r.model} | {r.label or '—'} | {r.tokens_per_s:.1f} | {_fmt(r.paper.get('tokens_per_s'), 'g')} | "
            f"{r.e2e_latency_s:.2f} ({r.e2e_latency_p90_s:.2f}) | {_fmt(r.paper.get('e2e_latency_s'), 'g')} | "
            f"{r.nfe:.0f} | {r.tokens_per_forward:.2f} | {roof.get('bound') or '—'} | "
            f"{_fmt(roof.get('roofline_fraction'), '.0%')} | {roof['achieved_bandwidth_tbs']:.2f} "
            f"({_fmt(roof.get('bandwidth_fraction'), '.0%')}) | {roof['achieved_tflops']:.0f} "
            f"({_fmt(roof.get('matmul_fraction'), '.0%')}) | {_fmt(r.peak_memory_gib, '.1f')} |")
        data.append({"key": r.key, "tokens_per_s": r.tokens_per_s, "paper": r.paper, "e2e_latency_s": r.e2e_latency_s,
                     "roofline": roof, "nfe": r.nfe, "tokens_per_forward": r.tokens_per_forward})
    checks = _checks(results)
    first = results[0] if results else None
    ceilings = ""
    if first is not None:
        roof = first.roofline
        ceilings = (f"Device: {device}; measured {first.dtype} matmul {_fmt(roof.get('measured_matmul_tflops'), '.0f')} TFLOP/s, "
                    f"device-to-device copy {_fmt(roof.get('measured_copy_bandwidth_tbs'), '.2f')} TB/s (read+write), "
                    f"datasheet HBM {_fmt(roof.get('datasheet_bandwidth_tbs'), '.2f')} TB/s.")
    labels = sorted({r.weights_label for r in results})
    text = "\n".join([
        "# evo-eval speed: all systems", "",
        f"{ceilings} Weights: {', '.join(labels) or '—'}; batch 1; GSM8K 4-shot prompts (proxy tokenizer); "
        f"generation length fixed at {first.protocol['gen_len'] if first else '—'} tokens (EOS disabled); "
        "prompt encoding inside the timed span; warm-ups excluded. The paper's figures are on one A100.", "",
        *rows, "", "## Checks", "", *[f"- {c}" for c in checks], ""])
    return text, {"kind": "evo-eval/speed-summary", "device": device, "results": data, "checks": checks}


def _checks(results: list[SpeedResult]) -> list[str]:
    by_key = {r.key: r for r in results}
    out = []
    for r in results:
        roof = r.roofline
        if r.family == "hf" and roof.get("roofline_tokens_per_s"):
            target = 0.8 * roof["roofline_tokens_per_s"]
            # The looser definition: every parameter read once per token at the datasheet rate.
            all_params = (roof["datasheet_bandwidth_tbs"] or 0) * 1e12 / (r.cost["params"] * 2) if r.cost else 0
            loose = f"; {r.tokens_per_s / all_params:.0%} of the {all_params:.0f} tokens/s all-parameter roofline" \
                if all_params else ""
            out.append(f"AR fast path {r.key}: {r.tokens_per_s:.1f} tokens/s = {roof['roofline_fraction']:.0%} of its "
                       f"{roof['roofline_tokens_per_s']:.0f} tokens/s {roof['bound']} roofline (weights read + KV; "
                       f"target >= 80%: {'met' if r.tokens_per_s >= target else 'missed'}){loose}")
        elif r.family != "hf" and roof.get("matmul_fraction") is not None:
            per_forward = sum(q["active_token_steps"] for q in r.requests) / max(sum(q["nfe"] for q in r.requests), 1)
            out.append(f"{r.key}: {roof['matmul_fraction']:.0%} of the measured matmul rate over whole requests "
                       f"({per_forward:.0f} positions per forward on average; target >= 60% at >= 512)")
    schedules = {s: by_key.get(f"evo-8b--schedule-fixed-{s}") for s in ("0", "0.5", "1")}
    if schedules["0.5"] and schedules["1"]:
        ratio = schedules["0.5"].e2e_latency_s / schedules["1"].e2e_latency_s
        out.append(f"Evo fixed:0.5 / fixed:1 latency = {ratio:.2f} (expected 0.5 within 15%, i.e. 0.425-0.575: "
                   f"{'met' if abs(ratio - 0.5) <= 0.075 else 'missed'})")
    if by_key.get("llada-8b") and by_key.get("llada-8b--cached"):
        speedup = by_key["llada-8b--cached"].tokens_per_s / by_key["llada-8b"].tokens_per_s
        out.append(f"LLaDA cached vs reference: {speedup:.2f}x tokens/s")
    return out


def reports(output: Path) -> list[str]:
    """The paper-layout tables with speed rows, and the figure; failures here never lose measurements."""
    from evo_eval.report.plot import plot_accuracy_vs_speed
    from evo_eval.report.render import render
    from evo_eval.report.tables import build_table
    from evo_eval.store import atomic_write_text

    written = []
    empty = output / ".no-accuracy-results"
    empty.mkdir(parents=True, exist_ok=True)
    for stage in ("base", "instruct"):
        def table(stage=stage) -> Path:
            path = output / f"table_{stage}.md"
            atomic_write_text(path, render(build_table(stage, empty, paper=True, speed_dir=output), "markdown"))
            return path

        def figure(stage=stage) -> Path:
            return plot_accuracy_vs_speed(stage=stage, task="gsm8k", accuracy="paper", speed="measured", results=empty,
                                          speed_dir=output, output=output / f"accuracy_vs_speed_{stage}.png")

        for make in (table, figure):
            try:
                written.append(f"wrote {make()}")
            except Exception as exc:  # noqa: BLE001 - the measurements are already on disk
                written.append(f"not written ({stage} {make.__name__}): {type(exc).__name__}: {exc}")
    empty.rmdir()
    return written


def stored(output: Path) -> list[SpeedResult]:
    from evo_eval.store import load_speed_results

    order = {key: i for i, key in enumerate(c.name for c in plan_cards(SpeedOptions()))}
    records = load_speed_results(output, variants=True)
    results = [SpeedResult.from_record(r) for r in records.values()]
    return sorted(results, key=lambda r: (order.get(r.model, 99), r.label or ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        if args.summarize_only:
            results = stored(args.output)
            device = ", ".join(sorted({r.device for r in results})) or "—"
        else:
            from evo_eval.roofline import device_name

            resolved = resolve_device(args.device)
            if resolved.type != "cuda" and args.output.resolve() == DEFAULT_OUTPUT.resolve():
                raise UserError(f"no GPU here: a CPU run at tiny shapes would overwrite the GPU results in {DEFAULT_OUTPUT}",
                                "pass --output DIR for a CPU dry run")
            device = device_name(resolved)
            results, _ = measure(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from evo_eval.store import atomic_write_text, to_json

    text, data = summary(results, device)
    data["wall_s"] = time.perf_counter() - started
    atomic_write_text(args.output / "summary.md", text)
    atomic_write_text(args.output / "summary.json", to_json(data))
    print(text, flush=True)
    for line in reports(args.output):
        print(line, flush=True)
    print(f"speed_all finished in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
