"""Accuracy against decoding speed, one point per system, with the Pareto frontier marked.

Reads results files only (``results/<stage>/<model>/<benchmark>.json`` through ``store`` and the
speed results through ``speed.load_speed_results``), or the paper's own tables for either axis, so
a figure can set measured speed against the paper's accuracy when the 8B weights are not at hand.
Every qualification of the numbers (synthetic weights, the device, a CPU run) is written on the
figure itself, not only in a caption.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..cards import ModelCard, all_cards, paper_order
from ..errors import UnknownNameError, UserError

SOURCES = ("measured", "paper")
SPEED_ROW = "Inference Speed (tokens/s)"


@dataclass(frozen=True)
class Point:
    label: str
    speed: float  # tokens/s
    accuracy: float  # percent


def pareto_front(points: list[Point]) -> list[int]:
    """Indices of the points no other point matches or beats on both axes (and beats on one),
    ordered by speed: the systems worth choosing for some trade-off."""
    front = []
    for i, p in enumerate(points):
        dominated = any(q.speed >= p.speed and q.accuracy >= p.accuracy and (q.speed > p.speed or q.accuracy > p.accuracy)
                        for j, q in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i].speed, -points[i].accuracy))


def draw(points: list[Point], output: Path, *, title: str, xlabel: str, ylabel: str, notes: list[str]):
    """Write the figure; returns the matplotlib Figure (closed) so callers can inspect its texts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    others = [p for i, p in enumerate(points) if i not in front]
    ax.scatter([p.speed for p in others], [p.accuracy for p in others], s=60, facecolors="none",
               edgecolors="tab:gray", label="dominated")
    on_front = [points[i] for i in front]
    ax.scatter([p.speed for p in on_front], [p.accuracy for p in on_front], s=70, color="tab:red",
               label="Pareto frontier", zorder=3)
    if len(on_front) > 1:  # the frontier as a staircase: best accuracy reachable at each speed
        ax.step([p.speed for p in on_front], [p.accuracy for p in on_front], where="post", color="tab:red",
                alpha=0.6)
    for p in points:
        ax.annotate(p.label, (p.speed, p.accuracy), textcoords="offset points", xytext=(5, 5), fontsize=9)
    ax.margins(x=0.15, y=0.1)  # room for the labels beside the outermost points
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if notes:
        fig.text(0.01, 0.01, "\n".join(notes), fontsize=7, va="bottom", ha="left")
        fig.subplots_adjust(bottom=0.12 + 0.035 * len(notes))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=150)
    plt.close(fig)
    return fig


# ---- gathering the two axes ----------------------------------------------------------------------------


def _stage_cards(stage: str) -> list[ModelCard]:
    by_system = {c.system: c for c in all_cards().values() if c.stage == stage}
    return [by_system[s] for s in paper_order() if s in by_system]


def _measured_accuracy(results: Path, stage: str) -> dict[str, dict[str, float]]:
    from ..store import iter_results

    out: dict[str, dict[str, float]] = {}
    if (Path(results) / stage).is_dir():
        for stored in iter_results(Path(results), stage):
            if stored.score is not None:
                out.setdefault(stored.model, {})[stored.benchmark] = stored.score * 100
    return out


def _paper_accuracy(cards: list[ModelCard], stage: str) -> dict[str, dict[str, float]]:
    from ..suites import BENCHMARKS, paper_table, parse_cell

    table = paper_table(stage)
    out: dict[str, dict[str, float]] = {}
    for card in cards:
        for bench in BENCHMARKS:
            row = table.get(bench.paper_row.get(stage, ""), {})
            value, _ = parse_cell(row.get(card.column, ""))
            if value is not None:
                out.setdefault(card.name, {})[bench.key] = value
    return out


def _accuracy_axis(scores: dict[str, dict[str, float]], names: list[str], task: str) -> tuple[dict[str, float], str]:
    if task != "mean":
        return {n: scores[n][task] for n in names if task in scores.get(n, {})}, task
    have = [n for n in names if scores.get(n)]
    common = set.intersection(*(set(scores[n]) for n in have)) if have else set()
    if not common:
        return {}, "mean"
    return {n: sum(scores[n][b] for b in common) / len(common) for n in have}, f"mean of {len(common)} benchmarks"


def _speed_axis(cards: list[ModelCard], stage: str, speed: str, speed_dir: Path) -> tuple[dict[str, float], list[str]]:
    if speed == "paper":
        from ..suites import paper_table

        row = paper_table(stage).get(SPEED_ROW, {})
        return {c.name: float(row[c.column]) for c in cards if row.get(c.column) not in (None, "", "-")}, \
            ["speed: the paper's tokens/s (one A100)"]
    from ..store import CPU_NOTE, SYNTHETIC_LABEL, load_speed_results

    records = load_speed_results(Path(speed_dir)) if Path(speed_dir).is_dir() else {}
    values = {c.name: float(records[c.name]["tokens_per_s"]) for c in cards if c.name in records}
    used = [records[n] for n in values]
    notes = []
    if any(r.get("synthetic") for r in used):
        notes.append(f"speed: {SYNTHETIC_LABEL} at the paper's shapes (fixed generation length, EOS disabled)")
    devices = sorted({str(r.get("device")) for r in used})
    if devices:
        notes.append("speed measured on " + ", ".join(devices) + "; the paper used one A100")
    if any(not r.get("comparable_to_paper", True) for r in used):
        notes.append(CPU_NOTE)
    return values, notes


def plot_accuracy_vs_speed(*, stage: str = "base", task: str = "gsm8k", accuracy: str = "measured",
                           speed: str = "measured", results: Path = Path("results"),
                           speed_dir: Path = Path("results/speed"),
                           output: Path = Path("results/speed/accuracy_vs_speed.png")) -> Path:
    from ..suites import BENCHMARKS, check_stage

    check_stage(stage)
    for name, value in (("accuracy source", accuracy), ("speed source", speed)):
        if value not in SOURCES:
            raise UnknownNameError(name, value, list(SOURCES))
    keys = [b.key for b in BENCHMARKS if stage in b.task]
    if task != "mean" and task not in keys:
        raise UnknownNameError("task", task, keys + ["mean"])
    cards = _stage_cards(stage)
    scores = _paper_accuracy(cards, stage) if accuracy == "paper" else _measured_accuracy(results, stage)
    acc, acc_label = _accuracy_axis(scores, [c.name for c in cards], task)
    tps, notes = _speed_axis(cards, stage, speed, speed_dir)
    points = [Point(c.column, tps[c.name], acc[c.name]) for c in cards if c.name in tps and c.name in acc]
    missing = [c.column for c in cards if c.name not in tps or c.name not in acc]
    if not points:
        raise UserError(f"nothing to plot for stage {stage}: no system has both a {speed} speed and a {accuracy} "
                        f"{task} accuracy", "run `evo-eval speed` and `evo-eval run`, or pass --accuracy paper")
    if missing:
        notes.append("not shown (no speed or accuracy): " + ", ".join(missing))
    notes.insert(0, f"accuracy: {'the paper' if accuracy == 'paper' else 'measured'} ({acc_label}, {stage})")
    draw(points, output, title=f"Accuracy vs decoding speed ({'pre' if stage == 'base' else 'post'}-trained)",
         xlabel="tokens/s (batch 1, prompt encoding included)", ylabel=f"{acc_label} accuracy (%)", notes=notes)
    return Path(output)
