"""``evo-eval report``: one self-contained HTML page to read a results folder.

The page holds everything it shows — the comparison tables with their 95 % intervals, the
accuracy-vs-speed figure as an embedded PNG, and per benchmark every system's documents (prompt,
answer, score, NFE, time) as embedded JSON with a few lines of plain JavaScript to browse and filter
them ("A right, B wrong") — so it opens from a file, on a laptop or attached to an e-mail, with no
server, no network and nothing fetched from elsewhere. Like the rest of report/, it reads results
files only.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..store import StoredResult, atomic_write_text, iter_results
from ..suites import BENCHMARKS
from .render import _cell_parts, _digits, _notes
from .tables import DASH, FLAG, MARK, Table, build_table
from .uncertainty import split_metric

MAX_DOCS = 500  # per benchmark; 0 = every document
RIGHT = 0.5  # a document counts as right when its score reaches this (1/0 metrics: correct)


# ---- the tables ------------------------------------------------------------------------------------


def table_html(table: Table) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in ["Benchmark", *table.columns])
    body = []
    for row in table.rows:
        if row.kind == "section":
            body.append(f'<tr class="section"><td colspan="{len(table.columns) + 1}">{esc(row.label)}</td></tr>')
            continue
        if row.kind == "text":
            body.append("<tr>" + "".join(f"<td>{esc(t)}</td>" for t in [row.label, *row.texts]) + "</tr>")
            continue
        cells = []
        for cell in row.cells:
            value, bold, interval, paper = _cell_parts(cell, _digits(row), table)
            text = f"<b>{esc(value)}</b>" if bold else esc(value)
            text += f"<sup>{MARK}</sup>" if cell.marked else ""
            pair = cell.paired or {}
            title = cell.reason or pair.get("reason") or ""
            if pair.get("p_value") is not None:
                title = (f"paired difference {pair['delta']:+.1f} [{pair['low']:+.1f}, {pair['high']:+.1f}] points "
                         f"on {pair['n']} documents, sign test p = {pair['p_value']:.3g}")
            title = "; ".join(t for t in (title, cell.ci_reason and f"no interval: {cell.ci_reason}") if t)
            extra = "".join(f' <span class="ci">{esc(t)}</span>' for t in (interval, paper) if t)
            cls = {"nan": "nan", "not run": "missing"}.get(cell.status, "")
            cells.append(f'<td class="{cls}" title="{esc(title)}">{text}{extra}</td>')
        label = esc(row.label + (f" {FLAG}" if row.flagged else ""))
        body.append(f"<tr><td>{label}</td>{''.join(cells)}</tr>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in _notes(table))
    return (f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            + (f'<ul class="notes">{notes}</ul>' if notes else ""))


# ---- the figure ------------------------------------------------------------------------------------


def figure_png(results: Path, stage: str) -> tuple[str | None, str]:
    """(base64 PNG or None, what it shows or why there is none): measured accuracy against measured
    speed, else against the paper's speed (the figure says which)."""
    from .plot import plot_accuracy_vs_speed

    reasons = []
    for speed in ("measured", "paper"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "figure.png"
            try:
                plot_accuracy_vs_speed(stage=stage, task="mean", accuracy="measured", speed=speed,
                                       results=results, output=out)
            except UserError as exc:
                reasons.append(str(exc).split(" — ")[0])
                continue
            return base64.b64encode(out.read_bytes()).decode("ascii"), f"measured accuracy against {speed} speed"
    return None, "; ".join(reasons)


# ---- the documents ---------------------------------------------------------------------------------


def _answer(row: dict[str, Any]) -> str:
    resps = row.get("filtered_resps")
    if isinstance(resps, list) and resps and all(isinstance(r, (list, tuple)) and len(r) == 2
                                                  and isinstance(r[0], (int, float)) for r in resps):
        best = max(range(len(resps)), key=lambda i: resps[i][0])
        return f"option {best} of {len(resps)} has the highest log-likelihood ({resps[best][0]:.2f})"
    if isinstance(resps, list) and len(resps) == 1:
        resps = resps[0]
    return resps if isinstance(resps, str) else json.dumps(resps, ensure_ascii=False, default=str)


def _prompt(row: dict[str, Any]) -> str:
    args = row.get("arguments") or []
    first = args[0] if args else ""
    return str(first[0] if isinstance(first, (list, tuple)) and first else first)


def _costs(data: dict[str, Any]) -> dict[tuple[str, str], tuple[float, float]]:
    """(NFE, seconds) per (leaf task, document), summed over the document's requests."""
    out: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for rec in (data.get("requests") or {}).get("per_request") or []:
        if isinstance(rec, dict) and rec.get("doc_id") is not None:
            cost = out[(str(rec.get("task")), str(rec.get("doc_id")))]
            cost[0] += float(rec.get("nfe") or 0)
            cost[1] += float(rec.get("wall_s") or 0)
    return {k: (v[0], v[1]) for k, v in out.items()}


def benchmark_documents(stored: list[StoredResult], columns: dict[str, str], max_docs: int) -> dict[str, Any]:
    """The documents of one benchmark for every system that ran it, prompts stored once each."""
    prompts: list[str] = []
    prompt_index: dict[str, int] = {}
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    systems = []
    for res in stored:
        metric, filt = split_metric(str(res.data.get("metric", "")))
        costs = _costs(res.data)
        s = len(systems)
        systems.append(columns.get(res.model, res.model))
        for task, rows in sorted((res.data.get("samples") or {}).items()):
            for row in rows or []:
                if row.get("filter", "none") != filt:
                    continue
                key = (task, str(row.get("doc_id")))
                doc = docs.setdefault(key, {"task": task, "doc_id": key[1], "target": str(row.get("target", "")),
                                            "by": {}})
                prompt = _prompt(row)
                if prompt not in prompt_index:
                    prompt_index[prompt] = len(prompts)
                    prompts.append(prompt)
                score = row.get(metric)
                nfe, seconds = costs.get(key, (None, None))
                doc["by"][s] = [prompt_index[prompt], _answer(row),
                                score if isinstance(score, (int, float)) and score == score else None, nfe, seconds]
    ordered = sorted(docs.values(), key=lambda d: (d["task"], int(d["doc_id"]) if d["doc_id"].isdigit() else 0,
                                                   d["doc_id"]))
    total = len(ordered)
    shown = ordered if not max_docs else ordered[:max_docs]
    # Prompts only for the documents shown.
    used = sorted({v[0] for d in shown for v in d["by"].values()})
    remap = {old: new for new, old in enumerate(used)}
    for d in shown:
        for v in d["by"].values():
            v[0] = remap[v[0]]
    return {"systems": systems, "prompts": [prompts[i] for i in used], "docs": shown, "total": total}


# ---- the page --------------------------------------------------------------------------------------


def build_report(results: Path, output: Path | None = None, stages: list[str] | None = None,
                 max_docs: int = MAX_DOCS, against: str | None = None) -> Path:
    results = Path(results)
    if not results.is_dir():
        raise UserError(f"results folder {results} does not exist", "run `evo-eval run` first, or pass --results DIR")
    if max_docs < 0:
        raise UserError(f"--max-docs must be 0 (all) or a positive number, got {max_docs}", "pass e.g. --max-docs 200")
    found = [s for s in ("base", "instruct") if (results / s).is_dir() and any((results / s).glob("*/*.json"))]
    stages = stages or found
    if not stages:
        raise UserError(f"no results under {results}", "run `evo-eval run` first, or pass the folder it wrote")
    sections, data = [], {}
    order = {b.key: i for i, b in enumerate(BENCHMARKS)}
    for stage in stages:
        table = build_table(stage, results, ci=True,
                            against=against if against else None)
        png, what = figure_png(results, stage)
        figure = (f'<figure><img alt="accuracy against speed, {stage}" src="data:image/png;base64,{png}">'
                  f"<figcaption>{html.escape(what)}</figcaption></figure>" if png
                  else f'<p class="missing">No figure: {html.escape(what)}</p>')
        columns = dict(zip(table.cards, table.columns))
        by_bench: dict[str, list[StoredResult]] = defaultdict(list)
        for res in iter_results(results, stage):
            if "@" not in res.model:
                by_bench[res.benchmark].append(res)
        for bench in sorted(by_bench, key=lambda b: order.get(b, 999)):
            rank = {name: i for i, name in enumerate(table.cards)}
            runs = sorted(by_bench[bench], key=lambda r: rank.get(r.model, 999))
            data[f"{stage}/{bench}"] = benchmark_documents(runs, columns, max_docs)
        sections.append(f'<section><h2>{"Pre-trained" if stage == "base" else "Post-trained"} ({stage})</h2>'
                        f"{table_html(table)}{figure}</section>")
    output = Path(output) if output else results / "report.html"
    payload = json.dumps({"benchmarks": data, "right": RIGHT, "max_docs": max_docs}, ensure_ascii=False,
                         allow_nan=False).replace("<", "\\u003c")  # no "</script>" or "<!--" can end the block
    page = _PAGE.format(title=html.escape(f"evo-eval report: {results}"),
                        when=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                        folder=html.escape(str(results)), sections="".join(sections), data=payload,
                        css=_CSS, js=_JS, dash=DASH)
    atomic_write_text(output, page)
    return output


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
table.results{border-collapse:collapse;margin:.5em 0}
table.results th,table.results td{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
table.results td:first-child,table.results th:first-child{text-align:left}
tr.section td{font-style:italic;background:#f4f4f4;text-align:left}
.ci{color:#777;font-size:.85em} td.nan{color:#b00} td.missing{color:#aaa}
ul.notes{font-size:.85em;color:#444} figure img{max-width:min(100%,820px)} .missing{color:#888}
#controls{display:flex;flex-wrap:wrap;gap:.6em;align-items:center;margin:.6em 0}
.doc{border:1px solid #ddd;border-radius:4px;margin:.5em 0;padding:.4em .6em}
.doc h4{margin:.1em 0 .3em;font-size:.95em}
.sys{display:grid;grid-template-columns:11em 1fr;gap:.2em .8em;margin:.3em 0;border-top:1px dashed #eee;padding-top:.3em}
.right{color:#075} .wrong{color:#b00}
pre{white-space:pre-wrap;margin:0;max-height:14em;overflow:auto;background:#fafafa;padding:.3em;font-size:.85em}
"""

_JS = r"""
const DATA = JSON.parse(document.getElementById('data').textContent);
const $ = id => document.getElementById(id);
const fmt = (v, d) => v === null || v === undefined ? '—' : Number(v).toFixed(d);
function systemsOf(b) { return DATA.benchmarks[b].systems; }
function fillSystems() {
  const b = $('bench').value, names = systemsOf(b);
  for (const id of ['sysA', 'sysB']) {
    const sel = $(id); sel.innerHTML = '';
    names.forEach((n, i) => sel.add(new Option(n, i)));
  }
  if (names.length > 1) $('sysB').value = 1;
  render();
}
function right(v) { return v !== null && v !== undefined && v >= DATA.right; }
function render() {
  const b = DATA.benchmarks[$('bench').value], a = +$('sysA').value, o = +$('sysB').value;
  const mode = $('mode').value, q = $('search').value.toLowerCase();
  const list = $('docs'); list.innerHTML = '';
  let n = 0;
  for (const d of b.docs) {
    const ra = d.by[a], rb = d.by[o];
    if (mode !== 'all') {
      if (!ra || !rb) continue;
      const ar = right(ra[2]), br = right(rb[2]);
      if (mode === 'aw' && !(ar && !br)) continue;
      if (mode === 'wa' && !(!ar && br)) continue;
      if (mode === 'both' && !(ar && br)) continue;
      if (mode === 'none' && (ar || br)) continue;
    }
    if (q && !JSON.stringify([d, Object.values(d.by).map(v => b.prompts[v[0]])]).toLowerCase().includes(q)) continue;
    n++;
    if (n > 200) continue;  // the count stays exact; the page stays light
    const div = document.createElement('div'); div.className = 'doc';
    const h = document.createElement('h4');
    h.textContent = `${d.task} · document ${d.doc_id} · target: ${d.target}`;
    div.appendChild(h);
    Object.keys(d.by).sort((x, y) => x - y).forEach(s => {
      const [p, ans, score, nfe, secs] = d.by[s];
      const box = document.createElement('div'); box.className = 'sys';
      const name = document.createElement('div');
      name.innerHTML = '<b></b><br><span></span>';
      name.querySelector('b').textContent = b.systems[s];
      const sc = name.querySelector('span');
      sc.textContent = `score ${fmt(score, 3)} · NFE ${fmt(nfe, 0)} · ${fmt(secs, 2)} s`;
      sc.className = right(score) ? 'right' : 'wrong';
      const body = document.createElement('div');
      const details = document.createElement('details');
      const sum = document.createElement('summary'); sum.textContent = 'prompt';
      const pre = document.createElement('pre'); pre.className = 'prompt'; pre.textContent = b.prompts[p];
      details.append(sum, pre);
      if (n === 1) details.open = true;
      const answer = document.createElement('pre'); answer.className = 'answer'; answer.textContent = ans;
      body.append(details, answer);
      box.append(name, body); div.appendChild(box);
    });
    list.appendChild(div);
  }
  const shown = b.docs.length < b.total ? ` (of the first ${b.docs.length} of ${b.total} documents; --max-docs 0 embeds all)` : '';
  $('count').textContent = `${n} documents match${shown}` + (n > 200 ? '; the first 200 are listed' : '');
}
const bench = $('bench');
Object.keys(DATA.benchmarks).forEach(k => bench.add(new Option(k, k)));
for (const id of ['bench']) $(id).addEventListener('change', fillSystems);
for (const id of ['sysA', 'sysB', 'mode']) $(id).addEventListener('change', render);
$('search').addEventListener('input', render);
// A link can open a view: report.html#bench=base/mmlu&a=0&b=1&mode=aw&q=text
function fromHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.has('bench') && DATA.benchmarks[h.get('bench')]) bench.value = h.get('bench');
  if (bench.options.length) fillSystems();
  if (h.has('a')) $('sysA').value = h.get('a');
  if (h.has('b')) $('sysB').value = h.get('b');
  if (h.has('mode')) $('mode').value = h.get('mode');
  if (h.has('q')) $('search').value = h.get('q');
  if (bench.options.length) render();
}
window.addEventListener('hashchange', fromHash);
fromHash();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style></head>
<body>
<h1>evo-eval report</h1>
<p>Results folder <code>{folder}</code>, written {when}. Intervals: 95 % bootstrap over documents;
{dash} = not run, NaN = run, score undefined.</p>
{sections}
<section><h2>Documents</h2>
<div id="controls">
<label>Benchmark <select id="bench"></select></label>
<label>A <select id="sysA"></select></label>
<label>B <select id="sysB"></select></label>
<label>Show <select id="mode">
<option value="all">all documents</option>
<option value="aw">A right, B wrong</option>
<option value="wa">A wrong, B right</option>
<option value="both">both right</option>
<option value="none">both wrong</option>
</select></label>
<label>Search <input id="search" type="search"></label>
</div>
<p id="count"></p>
<p class="missing">Right: score at least 0.5 (for right/wrong metrics, correct).</p>
<div id="docs"></div>
</section>
<script type="application/json" id="data">{data}</script>
<script>{js}</script>
</body></html>
"""
