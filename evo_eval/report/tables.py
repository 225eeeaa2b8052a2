"""The paper's comparison tables, rebuilt from results files, in LaTeX, Markdown, CSV or JSON.

One frame (``build_table``) feeds every format (report/render.py), so the formats cannot disagree. Layout as the paper's
Tables 1 and 2: speed rows (when speed results exist), a post-training row for the post-trained stage,
then section rows and ``Benchmark (k-shot)`` rows, one column per system in the paper's order. The best
value per row is bold when it is the only best and the row's figures are comparable; a result that was
not run is an em dash, never zero, and a score lm-eval computed as NaN is "NaN" with its reason.
``paper=True`` puts the paper's number and the difference beside each measured one; ``ci=True`` a 95 %
interval (uncertainty.py); ``against=CARD`` marks each cell whose paired difference from that card's
column is significant (paired.py). A row is flagged (†) where the models ran with different shots or
different prompts (their protocol fingerprints or per-document prompt hashes disagree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cards import ModelCard, all_cards, paper_order
from ..errors import UnknownNameError, UserError
from ..store import StoredResult, iter_results
from ..suites import BENCHMARKS, SECTIONS, check_stage, paper_shots, paper_table, parse_cell
from .labels import speed_weights_notes
from .paired import ALPHA, TEST_NAME, Paired, compare, protocol_difference
from .uncertainty import doc_scores, score_interval

FORMATS = ("latex", "markdown", "csv", "json")
DASH = "—"
FLAG = "†"
FLAG_NOTE = "† models ran this benchmark with different shots or prompts: no figure of the row is bold"
MARK = "*"
NAN = "NaN"
SPEED_ROWS = (("E2E Latency (s)", "e2e_latency_s", False), ("Inference Speed (tokens/s)", "tokens_per_s", True))


@dataclass
class Cell:
    value: float | None = None  # measured, in the paper's units (percent, seconds, tokens/s)
    paper: float | None = None
    shots: int | None = None
    bold: bool = False
    status: str = "ok"  # "ok" | "not run" | "nan" (lm-eval computed NaN: a result, not an absence)
    reason: str | None = None  # for "nan": why
    ci: tuple[float, float] | None = None  # 95 % interval, same units as value
    ci_reason: str | None = None  # why there is no interval
    paired: dict[str, Any] | None = None  # against the reference column: delta, low, high, p_value, n, reason
    marked: bool = False  # significant paired difference from the reference column

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
    comparable: bool = True  # False: the row's own figures say they are not comparable; nothing is bolded


@dataclass
class Table:
    stage: str
    columns: list[str]  # header per column, the paper's name for the system at this stage
    cards: list[str]  # card name per column
    rows: list[Row]
    notes: list[str]
    with_paper: bool
    with_ci: bool = False
    against: str | None = None  # card name of the reference column


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
    from ..store import load_speed_results

    return load_speed_results(speed_dir)


def _differs(results: list[StoredResult]) -> bool:
    """True when the models of a row did not see the same shots and prompts (any pair)."""
    return any(protocol_difference(a.data, b.data) for i, a in enumerate(results) for b in results[i + 1:])


def _digits(row: Row) -> int:
    """Decimals a row is printed with (and compared at, for bold)."""
    return 2 if row.key == "e2e_latency_s" else 1


def _mark_best(row: Row) -> None:
    """Bold the one best figure of a row whose figures are comparable.

    Ties (at the printed precision) bold nothing: a bold cell claims a winner. Rows whose models saw
    different prompts (†) or whose figures say they are not comparable (CPU timings, mixed devices)
    have no winner either.
    """
    digits = _digits(row)
    shown = [round(c.value, digits) for c in row.cells if c.value is not None and c.status == "ok"]
    if len(shown) < 2 or row.flagged or not row.comparable:
        return
    best = max(shown) if row.higher_is_better else min(shown)
    if shown.count(best) > 1:
        return
    for cell in row.cells:
        cell.bold = cell.value is not None and cell.status == "ok" and round(cell.value, digits) == best


def _nan_reason(data: dict[str, Any]) -> str | None:
    """Why a stored score is absent although the benchmark ran: lm-eval's own NaN, or the run's reason."""
    if data.get("score_reason"):
        return str(data["score_reason"])
    metric, task = data.get("metric"), data.get("task")
    for section in ("groups", "results"):
        value = (data.get("lm_eval", {}).get(section, {}).get(task) or {}).get(metric)
        if isinstance(value, float) and value != value:
            return f"lm-eval computed {metric} as NaN (undefined for these outputs)"
        if value in ("NaN", "nan"):
            return f"lm-eval computed {metric} as NaN (undefined for these outputs)"
    return None


def build_table(stage: str = "base", results_dir: Path = Path("results"), paper: bool = False,
                speed_dir: Path | None = None, ci: bool = False, against: str | None = None,
                stand_ins: bool = False) -> Table:
    check_stage(stage)
    results = _load_results(Path(results_dir), stage)
    cards = _cards_for(stage) + _extra_columns(results, stage)
    if stand_ins:  # public models labelled as stand-ins (card stand_in_for), after the paper's columns
        cards += [c for c in all_cards().values() if c.stand_in_for and c.stage == stage]
    if against is not None and against not in [c.name for c in cards]:
        raise UnknownNameError(f"--against card for stage {stage}", against, [c.name for c in cards])
    speed = _load_speed(Path(speed_dir) if speed_dir else Path(results_dir) / "speed")
    rows: list[Row] = []
    notes: list[str] = []

    speed_cards = {name: rec for name, rec in speed.items() if rec.get("stage", stage) == stage}
    if speed_cards:
        shown = [speed_cards[c.name] for c in cards if c.name in speed_cards]
        devices = sorted({str(rec.get("device")) for rec in shown if rec.get("device")})
        label_notes = speed_weights_notes(shown, {c.name: c for c in cards}, "speed rows")
        # Timings on a CPU, at tiny shapes or on different devices rank nothing.
        comparable = (len(devices) <= 1 and all(rec.get("comparable_to_paper", True) for rec in shown)
                      and not any("small test shapes" in n for n in label_notes))
        for label, field_name, higher in SPEED_ROWS:
            row = Row("metric", label, key=field_name, higher_is_better=higher, comparable=comparable)
            for card in cards:
                rec = speed_cards.get(card.name, {})
                value = rec.get(field_name)
                row.cells.append(Cell(float(value) if value is not None else None,
                                      _paper_number(stage, label, card.column)[0] if paper else None,
                                      status="ok" if value is not None else "not run"))
            _mark_best(row)
            rows.append(row)
        notes += label_notes
        if devices:
            notes.append("speed measured on " + ", ".join(devices) + "; the paper used one A100")
        if not comparable:
            notes.append("speed rows: no figure is bold, the timings are not comparable with each other")

    if stage == "instruct":
        rows.append(Row("text", "Post-training", texts=[c.paper.get("post_training", DASH) for c in cards]))

    untested: list[str] = []
    nan_seen = False
    reference = against and next(c for c in cards if c.name == against)
    own = _own_benchmarks(results)
    for section in [*SECTIONS, *[s for s in own if s not in SECTIONS]]:
        benches = [b for b in BENCHMARKS if b.section == section and stage in b.task]
        if not benches and section not in own:
            continue
        rows.append(Row("section", section))
        for bench in _paper_row_order(stage, benches):
            stored = [results.get((card.name, bench.key)) for card in cards]
            present = [r for r in stored if r is not None]
            shot_counts = sorted({r.shots for r in present if r.shots is not None})
            shots = shot_counts[0] if len(shot_counts) == 1 else paper_shots(bench.key, stage)
            limits = {str(r.data.get("limit")) for r in present}
            row = Row("metric", f"{bench.label} ({shots}-shot)", key=bench.key, flagged=_differs(present),
                      comparable=len(limits) <= 1)
            ref = results.get((against, bench.key)) if against else None
            per_doc = {r.model: doc_scores(r.data) for r in present} if ci or ref is not None else {}
            for card, res in zip(cards, stored):
                paper_value = _paper_number(stage, bench.paper_row[stage], card.column)[0] if paper else None
                cell = Cell(None, paper_value, res.shots if res else None, status="not run" if res is None else "ok")
                if res is not None and res.score is not None:
                    cell.value = res.score * 100
                elif res is not None:
                    cell.status, cell.reason = "nan", _nan_reason(res.data) or "the run stored no score"
                    nan_seen = True
                if res is not None and ci:
                    unc = score_interval(res.data, scores=per_doc[res.model])
                    if unc.interval:
                        cell.ci = (unc.interval.low * 100, unc.interval.high * 100)
                    else:
                        cell.ci_reason = unc.reason
                if res is not None and ref is not None and card.name != against:
                    pair = compare(res.data, ref.data, scores=(per_doc[res.model], per_doc[against]))
                    cell.paired = _paired_dict(pair)
                    cell.marked = pair.significant()
                    if pair.reason:
                        untested.append(f"{card.column}, {bench.label}: not tested against {reference.column}, "
                                        f"{pair.reason}")
                row.cells.append(cell)
            _mark_best(row)
            rows.append(row)
        rows += [_own_row(key, label, results, cards) for key, label in own.get(section, [])]
    if any(r.flagged for r in rows):
        notes.append(FLAG_NOTE)
    if any(not r.comparable for r in rows if r.key not in {k for _, k, _ in SPEED_ROWS}):
        notes.append("rows whose models ran with different --limit have no bold figure")
    if ci:
        notes.append("[low, high]: 95 % percentile-bootstrap interval over documents (resampled within each "
                     "subject or subtask, 2000 replicates, from the stored samples)")
    if reference:
        notes.append(f"{MARK} differs from {reference.column} (--against {against}) at the {ALPHA:g} level: "
                     f"{TEST_NAME}, on the documents both answered; cells without {MARK} did not differ "
                     "significantly or were not tested")
        notes += untested
    if nan_seen:
        notes.append(f"{NAN}: the benchmark ran and lm-eval computed its score as NaN (reason in the JSON output); "
                     f"{DASH}: not run")
    if not results:
        notes.append(f"no results for stage '{stage}' under {results_dir} yet")
    for card in cards:
        used = {r.data["provenance"].get("checkpoint") for (name, _), r in results.items() if name == card.name}
        used.discard(card.checkpoint)
        used.discard(None)
        if used:
            notes.append(f"{card.column}: ran checkpoint {', '.join(sorted(map(str, used)))}, not the card's own")
    for card in cards:  # settings that are not the paper's, as the adapter named them in each result
        named = sorted({d for (name, _), r in results.items() if name == card.name
                        for d in ((r.data.get("decoding") or {}).get("departures") or [])})
        if named:
            notes.append(f"{card.column}: " + "; ".join(named))
    limited = sorted({str(r.data.get("limit")) for r in results.values() if r.data.get("limit")})
    if limited:
        notes.append(f"run with --limit {', '.join(limited)}: scores on a subset, not comparable to the paper")
    return Table(stage, [c.column for c in cards], [c.name for c in cards], rows, notes, paper, ci, against)


def _paired_dict(pair: Paired) -> dict[str, Any]:
    scale = (lambda v: None if v is None else v * 100)
    return {"delta": scale(pair.delta), "low": scale(pair.low), "high": scale(pair.high), "p_value": pair.p_value,
            "n": pair.n, "better": pair.a_better, "worse": pair.b_better, "reason": pair.reason}


def _own_benchmarks(results: dict[tuple[str, str], StoredResult]) -> dict[str, list[tuple[str, str]]]:
    """{section: [(key, label)]} of the benchmarks in the results that are not the paper's: a user's own
    (--include-path), placed by the label and section their results files carry."""
    paper = {b.key for b in BENCHMARKS}
    own: dict[str, dict[str, str]] = {}
    for (model, key), stored in sorted(results.items()):
        if key not in paper and "@" not in model:
            own.setdefault(str(stored.data.get("section") or "Other"), {}).setdefault(key, str(stored.data.get("label") or key))
    return {section: list(found.items()) for section, found in own.items()}


def _own_row(key: str, label: str, results: dict[tuple[str, str], StoredResult], cards: list[ModelCard]) -> Row:
    stored = [results.get((card.name, key)) for card in cards]
    present = [r for r in stored if r is not None]
    shot_counts = sorted({r.shots for r in present if r.shots is not None})
    shots = f"{shot_counts[0]}-shot" if len(shot_counts) == 1 else "mixed shots"
    row = Row("metric", f"{label} ({shots})", key=key, flagged=_differs(present))
    row.cells = [Cell(r.score * 100 if r is not None and r.score is not None else None, None, r.shots if r else None,
                      status="not run" if r is None else "ok") for r in stored]
    _mark_best(row)
    return row


def _paper_row_order(stage: str, benches: list) -> list:
    order = {name: i for i, name in enumerate(paper_table(stage))}
    return sorted(benches, key=lambda b: order.get(b.paper_row[stage], 999))
