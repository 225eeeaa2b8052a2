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
    ax.margins(x=0.15, y=0.1)  # room for the labels beside the outermost points
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if notes:
        fig.text(0.01, 0.01, "\n".join(notes), fontsize=7, va="bottom", ha="left")
        fig.subplots_adjust(bottom=0.12 + 0.035 * len(notes))
    place_labels(fig, ax, points)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=150)
    plt.close(fig)
    return fig


# Offsets (points) tried in turn for a label: beside, above, below, then further out.
_OFFSETS = [(6, 6), (6, -14), (-6, 6), (-6, -14), (6, -4), (-6, -4), (0, 12), (0, -20)]
_OFFSETS += [(dx * k, dy * k) for k in (2, 3, 4) for dx, dy in _OFFSETS]


def place_labels(fig, ax, points: list[Point]) -> list:
    """Annotate each point where its label overlaps no other label and no marker.

    Systems close in speed and accuracy (the AR baselines, the two masked-diffusion models) would
    otherwise print their names over each other. Labels are placed greedily, most crowded point first,
    at the first offset whose box is free of labels, markers and the legend; a label moved away from its point is joined to it by a
    thin line. Returns the label texts.
    """
    fig.canvas.draw()  # final limits and layout, so display boxes are where they will be drawn
    renderer = fig.canvas.get_renderer()
    markers = [ax.transData.transform((p.speed, p.accuracy)) for p in points]
    marker_boxes = [(x - 5, y - 5, x + 5, y + 5) for x, y in markers]
    legend = ax.get_legend()
    if legend is not None:  # the legend is an obstacle like any marker
        box = legend.get_window_extent(renderer)
        marker_boxes.append((box.x0, box.y0, box.x1, box.y1))
    placed: list[tuple[float, float, float, float]] = []
    texts = []

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    def distance(rect, point) -> float:
        dx = max(rect[0] - point[0], 0.0, point[0] - rect[2])
        dy = max(rect[1] - point[1], 0.0, point[1] - rect[3])
        return (dx * dx + dy * dy) ** 0.5

    def crowding(i: int) -> float:
        return -sum(1 for j, m in enumerate(markers) if j != i and abs(m[0] - markers[i][0]) + abs(m[1] - markers[i][1]) < 80)

    axes_box = ax.get_window_extent(renderer)
    for i in sorted(range(len(points)), key=crowding):
        p = points[i]
        best = None
        for dx, dy in _OFFSETS:
            text = ax.annotate(p.label, (p.speed, p.accuracy), textcoords="offset points", xytext=(dx, dy),
                               fontsize=9, ha="left" if dx >= 0 else "right")
            box = text.get_window_extent(renderer)
            rect = (box.x0, box.y0, box.x1, box.y1)
            cost = 100 * sum(overlap(rect, b) for b in placed + marker_boxes)
            # A label nearer another system's marker than its own would name the wrong point.
            own = distance(rect, markers[i])
            cost += 500 * sum(1 for j, m in enumerate(markers) if j != i and distance(rect, m) < own)
            outside = rect[0] < axes_box.x0 or rect[2] > axes_box.x1 or rect[1] < axes_box.y0 or rect[3] > axes_box.y1
            cost += 1e9 * outside
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, text, rect, (dx, dy))
            else:
                text.remove()
            if cost == 0:
                break
        cost, text, rect, (dx, dy) = best
        nearer = any(distance(rect, m) < distance(rect, markers[i]) for j, m in enumerate(markers) if j != i)
        if nearer or abs(dx) > 6 or abs(dy) > 14:  # away from its point: a thin leader line says whose it is
            ax.annotate("", (p.speed, p.accuracy), xytext=(dx, dy), textcoords="offset points",
                        arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6})
        placed.append(rect)
        texts.append(text)
    return texts


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
    from ..store import CPU_NOTE, load_speed_results
    from .labels import speed_weights_notes

    records = load_speed_results(Path(speed_dir)) if Path(speed_dir).is_dir() else {}
    values = {c.name: float(records[c.name]["tokens_per_s"]) for c in cards if c.name in records}
    used = [records[n] for n in values]
    notes = []
    notes += speed_weights_notes(used, {c.name: c for c in cards}, "speed")
    devices = sorted({str(r.get("device")) for r in used})
    if devices:
        notes.append("speed measured on " + ", ".join(devices) + "; the paper used one A100")
    if any(not r.get("comparable_to_paper", True) for r in used):
        notes.append(CPU_NOTE)
    return values, notes


def plot_accuracy_vs_speed(*, stage: str = "base", task: str = "gsm8k", accuracy: str = "measured",
                           speed: str = "measured", results: Path = Path("results"),
                           speed_dir: Path | None = None, output: Path | None = None) -> Path:
    """Draw the figure; by default into ``<results>/speed/accuracy_vs_speed_<stage>.png`` (never the cwd)."""
    from ..suites import BENCHMARKS, check_stage

    check_stage(stage)
    speed_dir = Path(speed_dir) if speed_dir is not None else Path(results) / "speed"
    output = Path(output) if output is not None else Path(results) / "speed" / f"accuracy_vs_speed_{stage}.png"
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
