"""The paper's comparison tables, rebuilt from results files, in LaTeX, Markdown, CSV or JSON.

One frame (``build_table``) feeds every format, so the formats cannot disagree. Layout as the paper's
Tables 1 and 2: speed rows (when speed results exist), a post-training row for the post-trained stage,
then section rows and ``Benchmark (k-shot)`` rows, one column per system in the paper's order. The best
value per row is bold; a missing result is an em dash, never zero. ``paper=True`` puts the paper's number
and the difference beside each measured one. A row is flagged (†) where the models ran with different
shots or different prompts (their protocol fingerprints or per-document prompt hashes disagree).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cards import ModelCard, all_cards, paper_order
from ..errors import UnknownNameError, UserError
from ..store import StoredResult, iter_results
from ..suites import BENCHMARKS, SECTIONS, check_stage, paper_shots, paper_table, parse_cell

FORMATS = ("latex", "markdown", "csv", "json")
DASH = "—"
FLAG = "†"
FLAG_NOTE = "† models ran this benchmark with different shots or prompts"
SPEED_ROWS = (("E2E Latency (s)", "e2e_latency_s", False), ("Inference Speed (tokens/s)", "tokens_per_s", True))


@dataclass
class Cell:
    value: float | None = None  # measured, in the paper's units (percent, seconds, tokens/s)
    paper: float | None = None
    shots: int | None = None
    bold: bool = False

    @property
    def delta(self) -> float | None:
        return None if self.value is None or self.paper is None else self.value - self.paper


@dataclass
class Row:
    kind: str  # "section" | "metric" | "text"
    label: str
    key: str | None = None
    cells: list[Cell] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # for "text" rows (post-training)
    flagged: bool = False
    higher_is_better: bool = True


@dataclass
class Table:
    stage: str
    columns: list[str]  # header per column, the paper's name for the system at this stage
    cards: list[str]  # card name per column
    rows: list[Row]
    notes: list[str]
    with_paper: bool


def _cards_for(stage: str) -> list[ModelCard]:
    by_system = {c.system: c for c in all_cards().values() if c.stage == stage}
    return [by_system[s] for s in paper_order() if s in by_system]


def _extra_columns(results: dict[tuple[str, str], StoredResult], stage: str) -> list[ModelCard]:
    """Columns after the paper's for models outside the registry (a card YAML run by path).

    Results filed as ``card@variant`` belong to the ablation table, not this one.
    """
    cards = all_cards()
    taken = {c.column for c in cards.values()}
    extras: dict[str, StoredResult] = {}
    for (model, _), stored in sorted(results.items()):
        if model not in cards and "@" not in model:
            extras.setdefault(model, stored)
    columns = []
    for model, r in extras.items():
        header = r.data.get("column") or model
        header = f"{header} [{model}]" if header in taken else header
        taken.add(header)
        columns.append(ModelCard(name=model, system=model, stage=stage, family="custom", column=header,
                                 dtype="", shape={"custom": True}))
    return columns


def _paper_number(stage: str, row_name: str, column: str) -> tuple[float | None, int | None]:
    row = paper_table(stage).get(row_name)
    if row is None or column not in row:
        return None, None
    cell = row[column]
    value, shots = parse_cell(cell)
    if value is None:
        try:
            return float(cell), None
        except (TypeError, ValueError):
            return None, None
    return value, shots


def _load_results(results_dir: Path, stage: str) -> dict[tuple[str, str], StoredResult]:
    if not results_dir.is_dir():
        raise UserError(f"results folder {results_dir} does not exist",
                        "run `evo-eval run` first, or pass --results DIR")
    found = {}
    if (results_dir / stage).is_dir():
        for stored in iter_results(results_dir, stage):
            found[(stored.model, stored.benchmark)] = stored
    return found


def _load_speed(speed_dir: Path) -> dict[str, dict[str, Any]]:
    if not speed_dir.is_dir():
        return {}
    from ..speed import load_speed_results

    return load_speed_results(speed_dir)


def _differs(results: list[StoredResult]) -> bool:
    """True when the models of a row did not see the same shots and prompts."""
    if len(results) < 2:
        return False
    if len({r.shots for r in results}) > 1 or len({r.data.get("protocol") for r in results}) > 1:
        return True
    plain = [r for r in results if not r.data.get("chat_template")]
    for i, a in enumerate(plain):
        for b in plain[i + 1:]:
            pa, pb = a.data.get("prompt_hashes", {}), b.data.get("prompt_hashes", {})
            for task in set(pa) & set(pb):
                common = set(pa[task]) & set(pb[task])
                if any(pa[task][d] != pb[task][d] for d in common):
                    return True
    return False


def _mark_best(row: Row) -> None:
    values = [c.value for c in row.cells if c.value is not None]
    if len(values) < 2:
        return
    best = max(values) if row.higher_is_better else min(values)
    for cell in row.cells:
        cell.bold = cell.value is not None and round(cell.value, 6) == round(best, 6)


def build_table(stage: str = "base", results_dir: Path = Path("results"), paper: bool = False,
                speed_dir: Path | None = None, stand_ins: bool = False) -> Table:
    check_stage(stage)
    results = _load_results(Path(results_dir), stage)
    cards = _cards_for(stage) + _extra_columns(results, stage)
    if stand_ins:  # public models labelled as stand-ins (card stand_in_for), after the paper's columns
        cards += [c for c in all_cards().values() if c.stand_in_for and c.stage == stage]
    speed = _load_speed(Path(speed_dir) if speed_dir else Path(results_dir) / "speed")
    rows: list[Row] = []
    notes: list[str] = []

    speed_cards = {name: rec for name, rec in speed.items() if rec.get("stage", stage) == stage}
    if speed_cards:
        for label, field_name, higher in SPEED_ROWS:
            row = Row("metric", label, key=field_name, higher_is_better=higher)
            for card in cards:
                rec = speed_cards.get(card.name, {})
                value = rec.get(field_name)
                row.cells.append(Cell(float(value) if value is not None else None,
                                      _paper_number(stage, label, card.column)[0] if paper else None))
            _mark_best(row)
            rows.append(row)
        if any(rec.get("synthetic") for rec in speed_cards.values()):
            notes.append("speed rows: synthetic weights at the paper's shapes (fixed generation length, EOS disabled)")
        devices = sorted({str(rec.get("device")) for rec in speed_cards.values() if rec.get("device")})
        if devices:
            notes.append("speed measured on " + ", ".join(devices) + "; the paper used one A100")

    if stage == "instruct":
        rows.append(Row("text", "Post-training", texts=[c.paper.get("post_training", DASH) for c in cards]))

    for section in SECTIONS:
        benches = [b for b in BENCHMARKS if b.section == section and stage in b.task]
        if not benches:
            continue
        rows.append(Row("section", section))
        for bench in _paper_row_order(stage, benches):
            stored = [results.get((card.name, bench.key)) for card in cards]
            present = [r for r in stored if r is not None]
            shot_counts = sorted({r.shots for r in present if r.shots is not None})
            shots = shot_counts[0] if len(shot_counts) == 1 else paper_shots(bench.key, stage)
            row = Row("metric", f"{bench.label} ({shots}-shot)", key=bench.key, flagged=_differs(present))
            for card, res in zip(cards, stored):
                value = res.score * 100 if res is not None and res.score is not None else None
                paper_value = _paper_number(stage, bench.paper_row[stage], card.column)[0] if paper else None
                row.cells.append(Cell(value, paper_value, res.shots if res else None))
            _mark_best(row)
            rows.append(row)
    if any(r.flagged for r in rows):
        notes.append(FLAG_NOTE)
    if not results:
        notes.append(f"no results for stage '{stage}' under {results_dir} yet")
    for card in cards:
        used = {r.data["provenance"].get("checkpoint") for (name, _), r in results.items() if name == card.name}
        used.discard(card.checkpoint)
        used.discard(None)
        if used:
            notes.append(f"{card.column}: ran checkpoint {', '.join(sorted(map(str, used)))}, not the card's own")
    limited = sorted({str(r.data.get("limit")) for r in results.values() if r.data.get("limit")})
    if limited:
        notes.append(f"run with --limit {', '.join(limited)}: scores on a subset, not comparable to the paper")
    return Table(stage, [c.column for c in cards], [c.name for c in cards], rows, notes, paper)


def _paper_row_order(stage: str, benches: list) -> list:
    order = {name: i for i, name in enumerate(paper_table(stage))}
    return sorted(benches, key=lambda b: order.get(b.paper_row[stage], 999))


# ---- rendering ------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _fmt_delta(delta: float | None) -> str:
    return "" if delta is None else f"{delta:+.1f}".replace("-", "−")


def _digits(row: Row) -> int:
    return 2 if row.key == "e2e_latency_s" else 1


def render(table: Table, fmt: str) -> str:
    if fmt not in FORMATS:
        raise UnknownNameError("format", fmt, list(FORMATS))
    return {"latex": render_latex, "markdown": render_markdown, "csv": render_csv, "json": render_json}[fmt](table)


def _cell_text(cell: Cell, digits: int, paper: bool, bold: tuple[str, str], small: tuple[str, str]) -> str:
    text = _fmt(cell.value, digits)
    if cell.bold and cell.value is not None:
        text = f"{bold[0]}{text}{bold[1]}"
    if paper and cell.paper is not None:
        delta = _fmt_delta(cell.delta)
        text += f" {small[0]}({_fmt(cell.paper, digits)}{'; ' + delta if delta else ''}){small[1]}"
    return text


def render_markdown(table: Table) -> str:
    header = ["Benchmark", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        if row.kind == "section":
            lines.append(f"| *{row.label}* |" + " |" * len(table.columns))
        elif row.kind == "text":
            lines.append("| " + " | ".join([row.label, *row.texts]) + " |")
        else:
            cells = [_cell_text(c, _digits(row), table.with_paper, ("**", "**"), ("", "")) for c in row.cells]
            label = row.label + (f" {FLAG}" if row.flagged else "")
            lines.append("| " + " | ".join([label, *cells]) + " |")
    out = "\n".join(lines)
    notes = (["cells: measured (paper; measured − paper)"] if table.with_paper else []) + table.notes
    if notes:
        out += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return out + "\n"


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}"}


def _tex(text: str) -> str:
    text = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    return text.replace("—", "---").replace("−", "$-$").replace(FLAG, r"$^\dagger$")


def render_latex(table: Table) -> str:
    n = len(table.columns)
    caption = ("Benchmark results of pre-trained LLMs" if table.stage == "base"
               else "Benchmark results of post-trained LLMs")
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "c" * n + "}", r"\toprule",
             " & ".join(["Model", *map(_tex, table.columns)]) + r" \\", r"\midrule"]
    for row in table.rows:
        if row.kind == "section":
            lines += [r"\midrule", rf"\multicolumn{{{n + 1}}}{{l}}{{\textit{{{_tex(row.label)}}}}} \\"]
        elif row.kind == "text":
            lines.append(" & ".join([_tex(row.label), *map(_tex, row.texts)]) + r" \\")
        else:
            cells = [_tex(_cell_text(c, _digits(row), table.with_paper, ("\0b", "\0e"), ("\0s", "\0t")))
                     .replace("\0b", r"\textbf{").replace("\0e", "}").replace("\0s", r"{\scriptsize ")
                     .replace("\0t", "}") for c in row.cells]
            label = _tex(row.label + (f" {FLAG}" if row.flagged else ""))
            lines.append(" & ".join([label, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = (["Cells: measured (paper; measured $-$ paper)."] if table.with_paper else []) + [_tex(n) for n in table.notes]
    if notes:
        lines.append(r"\\[2pt]{\footnotesize " + " ".join(notes) + "}")
    lines += [rf"\caption{{{caption} (evo-eval).}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["section", "benchmark", "flagged"]
    for column in table.columns:
        header += [column] + ([f"{column} (paper)", f"{column} (delta)"] if table.with_paper else [])
    writer.writerow(header)
    speed_keys = {key for _, key, _ in SPEED_ROWS}
    section = ""
    for row in table.rows:
        if row.kind == "section":
            section = row.label
            continue
        where = "speed" if row.key in speed_keys else ("" if row.kind == "text" else section)
        values: list[str] = [where, row.label, "yes" if row.flagged else ""]
        if row.kind == "text":
            for text in row.texts:
                values += [text] + (["", ""] if table.with_paper else [])
        else:
            for cell in row.cells:
                values.append("" if cell.value is None else f"{cell.value:.{_digits(row)}f}")
                if table.with_paper:
                    values += ["" if cell.paper is None else f"{cell.paper:g}",
                               "" if cell.delta is None else f"{cell.delta:.{_digits(row)}f}"]
        writer.writerow(values)
    return buffer.getvalue()


def render_json(table: Table) -> str:
    payload = {"stage": table.stage, "columns": table.columns, "cards": table.cards, "notes": table.notes,
               "rows": [asdict(r) for r in table.rows]}
    return json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
