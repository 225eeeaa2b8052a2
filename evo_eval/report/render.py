"""The comparison table (report/tables.py's ``Table``) in each output format: markdown, LaTeX (a
two-column paper's ``table*``), CSV with the notes as rows, and strict JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from typing import Any

from ..errors import UnknownNameError
from .tables import DASH, FLAG, FORMATS, MARK, NAN, SPEED_ROWS, Cell, Table, _digits


def _fmt(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _fmt_delta(delta: float | None) -> str:
    return "" if delta is None else f"{delta:+.1f}".replace("-", "−")


def render(table: Table, fmt: str) -> str:
    if fmt not in FORMATS:
        raise UnknownNameError("format", fmt, list(FORMATS))
    return {"latex": render_latex, "markdown": render_markdown, "csv": render_csv, "json": render_json}[fmt](table)


def _value_text(cell: Cell, digits: int) -> str:
    if cell.status == "nan":
        return NAN
    return _fmt(cell.value, digits)


def _cell_parts(cell: Cell, digits: int, table: Table) -> tuple[str, bool, str, str]:
    """(value, bold, interval, paper) texts of a cell, before any format's markup."""
    value = _value_text(cell, digits)
    interval = ""
    if table.with_ci and cell.ci is not None:
        interval = f"[{cell.ci[0]:.{digits}f}, {cell.ci[1]:.{digits}f}]"
    paper = ""
    if table.with_paper and cell.paper is not None:
        delta = _fmt_delta(cell.delta)
        paper = f"({_fmt(cell.paper, digits)}{'; ' + delta if delta else ''})"
    return value, cell.bold and cell.value is not None, interval, paper


def _markdown_cell(cell: Cell, digits: int, table: Table) -> str:
    value, bold, interval, paper = _cell_parts(cell, digits, table)
    text = f"**{value}**" if bold else value
    text += "\\" + MARK if cell.marked else ""
    return " ".join(t for t in (text, interval, paper) if t)


def render_markdown(table: Table) -> str:
    header = ["Benchmark", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        if row.kind == "section":
            lines.append(f"| *{row.label}* |" + " |" * len(table.columns))
        elif row.kind == "text":
            lines.append("| " + " | ".join([row.label, *row.texts]) + " |")
        else:
            cells = [_markdown_cell(c, _digits(row), table) for c in row.cells]
            label = row.label + (f" {FLAG}" if row.flagged else "")
            lines.append("| " + " | ".join([label, *cells]) + " |")
    out = "\n".join(lines)
    notes = _notes(table)
    if notes:
        out += "\n\n" + "\n".join("- " + n.replace(MARK, "\\" + MARK) for n in notes)
    return out + "\n"


def _notes(table: Table) -> list[str]:
    return (["cells: measured (paper; measured − paper)"] if table.with_paper else []) + table.notes


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "<": r"\textless{}", ">": r"\textgreater{}"}


def _tex(text: str) -> str:
    text = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    # "--limit" must print as two hyphens, not an en dash: break every ligature of hyphens.
    while "--" in text:
        text = text.replace("--", "-{}-")
    return (text.replace("—", "---").replace("−", "$-$").replace("Δ", r"$\Delta$").replace(FLAG, r"$^\dagger$")
            .replace("±", r"$\pm$").replace("→", r"$\to$"))


def _latex_cell(cell: Cell, digits: int, table: Table) -> str:
    value, bold, interval, paper = _cell_parts(cell, digits, table)
    text = rf"\textbf{{{_tex(value)}}}" if bold else _tex(value)
    text += rf"$^{{{MARK}}}$" if cell.marked else ""
    for extra in (interval, paper):
        if extra:
            text += rf" {{\scriptsize {_tex(extra)}}}"
    return text


def render_latex(table: Table) -> str:
    r"""A ``table*`` (both columns of a two-column paper: eight columns of figures never fit in one),
    shrunk to ``\textwidth`` only when wider than it (intervals or paper numbers widen every cell), never
    enlarged. ``tabular*`` was the alternative, but it only spreads spare space and cannot narrow a
    table that is too wide. Needs ``\usepackage{booktabs,graphicx}``.
    """
    n = len(table.columns)
    caption = ("Benchmark results of pre-trained LLMs" if table.stage == "base"
               else "Benchmark results of post-trained LLMs")
    lines = [r"% needs \usepackage{booktabs,graphicx}", r"\begin{table*}[t]", r"\centering", r"\small",
             r"\resizebox{\ifdim\width>\textwidth\textwidth\else\width\fi}{!}{%",
             r"\begin{tabular}{l" + "c" * n + "}", r"\toprule",
             " & ".join(["Model", *map(_tex, table.columns)]) + r" \\", r"\midrule"]
    after_header = True
    for row in table.rows:
        if row.kind == "section":
            if not after_header:  # one rule under the header, never two
                lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{n + 1}}}{{l}}{{\textit{{{_tex(row.label)}}}}} \\")
        elif row.kind == "text":
            lines.append(" & ".join([_tex(row.label), *map(_tex, row.texts)]) + r" \\")
        else:
            cells = [_latex_cell(c, _digits(row), table) for c in row.cells]
            label = _tex(row.label + (f" {FLAG}" if row.flagged else ""))
            lines.append(" & ".join([label, *cells]) + r" \\")
        after_header = False
    lines += [r"\bottomrule", r"\end{tabular}}"]
    notes = _notes(table)
    if notes:  # one line per note: each qualifies the numbers on its own
        lines += [r"\par\smallskip", r"{\footnotesize\raggedright"]
        lines += [_tex(note) + r"\par" for note in notes]
        lines.append("}")
    lines += [rf"\caption{{{caption} (evo-eval).}}", r"\end{table*}"]
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def render_csv(table: Table) -> str:
    """One row per benchmark; every number of a column in one format (the row's digits); the notes
    follow as rows whose ``section`` is ``note``, so no caveat is lost."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    reference = table.columns[table.cards.index(table.against)] if table.against else None
    header = ["section", "benchmark", "flagged"]
    for column in table.columns:
        header += [column]
        header += [f"{column} (ci low)", f"{column} (ci high)"] if table.with_ci else []
        header += [f"{column} (paper)", f"{column} (delta)"] if table.with_paper else []
        header += [f"{column} (vs {reference})", f"{column} (p)", f"{column} (significant)"] if reference else []
    writer.writerow(header)
    width = len(header)
    speed_keys = {key for _, key, _ in SPEED_ROWS}
    section = ""
    for row in table.rows:
        if row.kind == "section":
            section = row.label
            continue
        where = "speed" if row.key in speed_keys else ("" if row.kind == "text" else section)
        values: list[str] = [where, row.label, "yes" if row.flagged else ""]
        per = 1 + 2 * table.with_ci + 2 * table.with_paper + 3 * bool(reference)
        if row.kind == "text":
            for text in row.texts:
                values += [text] + [""] * (per - 1)
        else:
            d = _digits(row)
            for cell in row.cells:
                values.append(NAN if cell.status == "nan" else _num(cell.value, d))
                if table.with_ci:
                    values += [_num(cell.ci[0], d), _num(cell.ci[1], d)] if cell.ci else ["", ""]
                if table.with_paper:
                    values += [_num(cell.paper, d), _num(cell.delta, d)]
                if reference:
                    pair = cell.paired or {}
                    p = pair.get("p_value")
                    values += [_num(pair.get("delta"), d), "" if p is None else f"{p:.4f}",
                               "yes" if cell.marked else ("" if p is None else "no")]
        writer.writerow(values)
    for note in _notes(table):
        writer.writerow(["note", note] + [""] * (width - 2))
    return buffer.getvalue()


def _finite(obj: Any) -> Any:
    """Strict JSON: a non-finite float has no JSON spelling; the cell's status and reason say NaN."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def render_json(table: Table) -> str:
    payload = {"stage": table.stage, "columns": table.columns, "cards": table.cards, "against": table.against,
               "notes": _notes(table), "rows": [asdict(r) for r in table.rows]}
    return json.dumps(_finite(payload), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
