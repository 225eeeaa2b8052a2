import csv
import shutil
import subprocess
import io
import json

import pytest

from evo_eval.errors import ResultsError, UnknownNameError, UserError
from evo_eval.report.render import render
from evo_eval.report.tables import build_table
from evo_eval.store import KIND, SCHEMA_VERSION, atomic_write_text, result_path, to_json


def write(root, model, benchmark, score, shots, stage="base", protocol="p", hashes=None):
    data = {"schema_version": SCHEMA_VERSION, "kind": KIND, "model": model, "stage": stage, "benchmark": benchmark,
            "task": f"evo_{benchmark}", "metric": "acc,none", "score": score, "shots": shots, "protocol": protocol,
            "prompt_hashes": hashes or {}, "chat_template": False, "lm_eval": {}, "provenance": {}}
    atomic_write_text(result_path(root, stage, model, benchmark), to_json(data))


@pytest.fixture
def results(tmp_path):
    write(tmp_path, "evo-8b", "mmlu", 0.70, 5)
    write(tmp_path, "llama3-8b", "mmlu", 0.6512, 5)
    write(tmp_path, "llama3-8b", "gsm8k", 0.5, 4, hashes={"evo_gsm8k": {"0": "a"}})
    write(tmp_path, "qwen2.5-7b", "gsm8k", 0.8, 4, hashes={"evo_gsm8k": {"0": "b"}})
    return tmp_path


def row(table, key):
    return next(r for r in table.rows if r.key == key)


def test_layout_columns_in_paper_order_sections_and_shots(results):
    table = build_table("base", results)
    assert table.columns == ["Evo 8B", "BD3-LM 7B", "ARD 7B", "LLaDA 8B", "MDLM 7B", "LLaMA3 8B", "Qwen2.5 7B"]
    assert [r.label for r in table.rows if r.kind == "section"] == [
        "General Tasks", "Mathematics & Science", "Code", "Chinese"]
    assert row(table, "mmlu").label == "MMLU (5-shot)"
    assert len([r for r in table.rows if r.kind == "metric"]) == 15


def test_values_bold_best_and_missing_is_dash_never_zero(results):
    table = build_table("base", results)
    mmlu = row(table, "mmlu")
    assert [c.value for c in mmlu.cells][0] == pytest.approx(70.0)
    assert [c.bold for c in mmlu.cells] == [True, False, False, False, False, False, False]
    md = render(table, "markdown")
    line = next(l for l in md.splitlines() if l.startswith("| MMLU"))
    assert line == "| MMLU (5-shot) | **70.0** | — | — | — | — | 65.1 | — |"
    assert "0.0" not in next(l for l in md.splitlines() if l.startswith("| BBH"))


def test_paper_column_gives_reported_number_and_difference(results):
    table = build_table("base", results, paper=True)
    cell = row(table, "mmlu").cells[5]
    assert (cell.paper, round(cell.delta, 2)) == (65.1, 0.02)
    md = render(table, "markdown")
    assert "**70.0** (76.8; −6.8)" in md
    rows = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    mmlu = next(r for r in rows if r["benchmark"] == "MMLU (5-shot)")
    assert (mmlu["Evo 8B"], mmlu["Evo 8B (paper)"], mmlu["Evo 8B (delta)"]) == ("70.0", "76.8", "-6.8")


def test_rows_with_different_prompts_or_shots_are_flagged(results, tmp_path):
    table = build_table("base", results)
    assert row(table, "gsm8k").flagged and not row(table, "mmlu").flagged
    write(results, "qwen2.5-7b", "mmlu", 0.6, 3)
    table = build_table("base", results)
    assert row(table, "mmlu").flagged
    assert "models ran this benchmark with different shots or prompts" in render(table, "markdown")


def test_latex_uses_booktabs_and_escapes(results):
    tex = render(build_table("base", results), "latex")
    for needle in (r"\toprule", r"\midrule", r"\bottomrule", r"\textbf{70.0}", r"\multicolumn{8}{l}{\textit{Mathematics \& Science}}"):
        assert needle in tex
    assert "---" in tex


def test_json_round_trips_and_instruct_has_post_training_row(results):
    write(results, "evo-8b-instruct", "mmlu_pro", 0.5, 0, stage="instruct")
    payload = json.loads(render(build_table("instruct", results), "json"))
    assert payload["columns"][4] == "MDLM 9B"
    post = next(r for r in payload["rows"] if r["label"] == "Post-training")
    assert post["texts"][0] == "SFT" and post["texts"][1] == "SFT+RL"
    assert any(r["key"] == "mmlu_pro" and r["cells"][0]["value"] == 50.0 for r in payload["rows"])


def test_bad_inputs(results, tmp_path):
    with pytest.raises(UnknownNameError, match="unknown format 'html'"):
        render(build_table("base", results), "html")
    with pytest.raises(UnknownNameError, match="stage"):
        build_table("chat", results)
    with pytest.raises(UserError, match="does not exist"):
        build_table("base", tmp_path / "nowhere")
    broken = result_path(results, "base", "llada-8b", "piqa")
    broken.parent.mkdir(parents=True)
    broken.write_text('{"schema_version": 1, "kind"')
    with pytest.raises(ResultsError, match="truncated"):
        build_table("base", results)


def test_custom_cards_get_their_own_columns_and_variants_stay_out(results):
    write(results, "evo-tiny", "mmlu", 0.25, 5)
    write(results, "evo-8b@fixed-0", "mmlu", 0.99, 5)
    table = build_table("base", results)
    assert (table.cards[-1], table.columns[-1]) == ("evo-tiny", "evo-tiny")
    assert "evo-8b@fixed-0" not in table.cards
    assert [c.value for c in row(table, "mmlu").cells][-1] == pytest.approx(25.0)


# ---- intervals, paired marks, truthful labels -------------------------------------------------------------


@pytest.fixture
def sampled(tmp_path, write):
    """Evo right on 40 of 50 ARC-C documents, LLaMA3 on 25 (the 15 extra are Evo's alone), Qwen2.5 on 39;
    GSM8K run by LLaMA3 with other shots than Evo."""
    evo = [1.0] * 40 + [0.0] * 10
    write(tmp_path, "evo-8b", "arc_challenge", {"t": evo}, shots=25)
    write(tmp_path, "llama3-8b", "arc_challenge", {"t": [1.0] * 25 + [0.0] * 25}, shots=25)
    write(tmp_path, "qwen2.5-7b", "arc_challenge", {"t": [1.0] * 39 + [0.0] * 11}, shots=25)
    write(tmp_path, "evo-8b", "gsm8k", {"t": [1.0] * 10}, shots=4, metric="exact_match,flexible-extract")
    write(tmp_path, "llama3-8b", "gsm8k", {"t": [0.0] * 10}, shots=8, metric="exact_match,flexible-extract")
    return tmp_path


def test_ci_in_every_format(sampled):
    table = build_table("base", sampled, ci=True)
    cell = row(table, "arc_challenge").cells[0]
    low, high = cell.ci
    assert low < 80.0 < high and 65 < low and high < 94  # normal theory: [68.9, 91.1]
    md = render(table, "markdown")
    assert f"**80.0** [{low:.1f}, {high:.1f}]" in md
    assert rf"\textbf{{80.0}} {{\scriptsize [{low:.1f}, {high:.1f}]}}" in render(table, "latex")
    arc = next(r for r in csv.DictReader(io.StringIO(render(table, "csv"))) if r["benchmark"].startswith("ARC"))
    assert (arc["Evo 8B"], arc["Evo 8B (ci low)"], arc["Evo 8B (ci high)"]) == ("80.0", f"{low:.1f}", f"{high:.1f}")
    payload = json.loads(render(table, "json"))
    assert next(r for r in payload["rows"] if r["key"] == "arc_challenge")["cells"][0]["ci"] == [low, high]
    assert "95 % percentile-bootstrap interval" in md
    # Without --ci nothing changes.
    assert "[" not in next(l for l in render(build_table("base", sampled), "markdown").splitlines() if "ARC" in l)


def test_against_marks_significant_cells_and_says_why_others_are_not_tested(sampled):
    table = build_table("base", sampled, against="evo-8b")
    arc = row(table, "arc_challenge")
    evo, llama, qwen = arc.cells[0], arc.cells[5], arc.cells[6]
    assert not evo.marked and evo.paired is None
    # 15 documents Evo got right and LLaMA3 wrong, none the other way: p = 2 / 2**15.
    assert llama.marked and llama.paired["p_value"] == pytest.approx(2 / 2 ** 15)
    assert llama.paired["delta"] == pytest.approx(-30.0)
    assert not qwen.marked and qwen.paired["p_value"] == 1.0
    gsm = row(table, "gsm8k").cells[5]
    assert not gsm.marked and gsm.paired["reason"] == "different shots (8 vs 4)"
    md = render(table, "markdown")
    assert "| 50.0\\* | 78.0 |" in md
    assert "differs from Evo 8B (--against evo-8b) at the 0.05 level: exact two-sided sign test" in md
    assert "LLaMA3 8B, GSM8K: not tested against Evo 8B, different shots (8 vs 4)" in md
    assert r"50.0$^{*}$" in render(table, "latex")
    arc_csv = next(r for r in csv.DictReader(io.StringIO(render(table, "csv"))) if r["benchmark"].startswith("ARC"))
    assert (arc_csv["LLaMA3 8B (vs Evo 8B)"], arc_csv["LLaMA3 8B (significant)"]) == ("-30.0", "yes")
    with pytest.raises(UnknownNameError, match="unknown --against card for stage base 'evo-9b'"):
        build_table("base", sampled, against="evo-9b")


def test_ties_and_incomparable_rows_have_no_bold(tmp_path):
    write(tmp_path, "evo-8b", "mmlu", 0.5, 5)
    write(tmp_path, "llama3-8b", "mmlu", 0.5, 5)
    write(tmp_path, "qwen2.5-7b", "mmlu", 0.3, 5)
    assert not any(c.bold for c in row(build_table("base", tmp_path), "mmlu").cells)
    write(tmp_path, "llama3-8b", "mmlu", 0.6, 5, protocol="other")  # a different prompt: flagged, no winner
    table = build_table("base", tmp_path)
    assert row(table, "mmlu").flagged and not any(c.bold for c in row(table, "mmlu").cells)


def test_nan_score_is_nan_with_its_reason_not_a_dash(tmp_path):
    from evo_eval.record import score_reason

    lm_eval = {"results": {"evo_truthfulqa": {"acc,none": float("nan")}}}
    write(tmp_path, "evo-8b", "truthfulqa", None, 0)
    path = result_path(tmp_path, "base", "evo-8b", "truthfulqa")
    data = json.loads(path.read_text()) | {"lm_eval": lm_eval, "metric": "acc,none",
                                           "score_reason": score_reason(lm_eval, "evo_truthfulqa", "acc,none")}
    atomic_write_text(path, to_json(data))
    strict = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert strict["lm_eval"]["results"]["evo_truthfulqa"]["acc,none"] is None
    assert strict["score_reason"] == "lm-eval computed acc,none as NaN (undefined for these outputs)"
    # A file written before score_reason existed still has lm-eval's NaN, as a non-strict constant.
    old = json.loads(path.read_text()) | {"score_reason": None}
    old["lm_eval"]["results"]["evo_truthfulqa"]["acc,none"] = float("nan")
    write(tmp_path, "llama3-8b", "truthfulqa", None, 0)
    result_path(tmp_path, "base", "llama3-8b", "truthfulqa").write_text(json.dumps(old | {"model": "llama3-8b"}))
    table = build_table("base", tmp_path)
    cells = row(table, "truthfulqa").cells
    assert (cells[0].status, cells[1].status, cells[5].status) == ("nan", "not run", "nan")
    assert cells[0].reason == cells[5].reason == "lm-eval computed acc,none as NaN (undefined for these outputs)"
    assert "| TruthfulQA (0-shot) | NaN | — | — | — | — | NaN | — |" in render(table, "markdown")
    text = render(table, "json")
    payload = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    cell = next(r for r in payload["rows"] if r["key"] == "truthfulqa")["cells"][0]
    assert (cell["value"], cell["status"]) == (None, "nan") and "NaN" in cell["reason"]
    assert next(r for r in csv.DictReader(io.StringIO(render(table, "csv"))) if r["benchmark"].startswith("Truth"))["Evo 8B"] == "NaN"
    assert score_reason({"results": {"t": {"acc,none": 0.5}}}, "t", "acc,none") is None


def test_csv_keeps_the_notes_and_paper_numbers_share_the_columns_format(results):
    rows = list(csv.DictReader(io.StringIO(render(build_table("base", results, paper=True), "csv"))))
    notes = [r["benchmark"] for r in rows if r["section"] == "note"]
    assert "cells: measured (paper; measured − paper)" in notes and any("different shots or prompts" in n for n in notes)
    gsm = next(r for r in rows if r["benchmark"].startswith("GSM8K"))
    assert gsm["LLaMA3 8B (paper)"] == "52.7" and gsm["Evo 8B (paper)"] == "86.4"
    bbh = next(r for r in rows if r["benchmark"].startswith("HumanEval-FIM"))
    assert all(len(v.split(".")[-1]) == 1 for k, v in bbh.items() if k.endswith("(paper)") and v)


def _speed(tmp_path, model, tps, n_layers, device="cpu", comparable=False):
    from evo_eval.cards import all_cards
    from evo_eval.store import SpeedResult

    card = all_cards()[model]
    blank = {name: None for name in SpeedResult.__dataclass_fields__}
    record = SpeedResult(**{**blank, "model": model, "stage": "base", "tokens_per_s": tps, "e2e_latency_s": 1.0,
                            "synthetic": True, "device": device, "comparable_to_paper": comparable,
                            "shape": {**card.shape, "n_layers": n_layers or card.shape["n_layers"]}}).to_record()
    (tmp_path / "speed").mkdir(exist_ok=True)
    (tmp_path / "speed" / f"{model}.json").write_text(json.dumps(record))


def test_speed_rows_say_what_was_timed(tmp_path):
    write(tmp_path, "evo-8b", "mmlu", 0.5, 5)
    _speed(tmp_path, "evo-8b", 50.0, 2)
    _speed(tmp_path, "llama3-8b", 500.0, 2)
    md = render(build_table("base", tmp_path), "markdown")
    assert "synthetic weights at the paper's shapes" not in md
    assert "synthetic weights at small test shapes, not the paper's, for evo-8b, llama3-8b" in md
    assert "**" not in next(l for l in md.splitlines() if l.startswith("| Inference Speed"))
    _speed(tmp_path, "evo-8b", 50.0, None, device="NVIDIA H100", comparable=True)
    _speed(tmp_path, "llama3-8b", 500.0, None, device="NVIDIA H100", comparable=True)
    md = render(build_table("base", tmp_path), "markdown")
    assert "synthetic weights at the paper's shapes" in md
    assert "**500.0**" in next(l for l in md.splitlines() if l.startswith("| Inference Speed"))


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex installed (Debian: texlive-latex-recommended)")
def test_latex_compiles_in_a_two_column_paper_without_overfull_boxes(sampled, tmp_path):
    write(sampled, "evo-8b", "mmlu", 0.70, 5)
    write(sampled, "llama3-8b", "mmlu", 0.6512, 5)
    limited = json.loads(result_path(sampled, "base", "llama3-8b", "mmlu").read_text()) | {"limit": 2}
    atomic_write_text(result_path(sampled, "base", "llama3-8b", "mmlu"), to_json(limited))
    tex = render(build_table("base", sampled, paper=True, ci=True, against="evo-8b"), "latex")
    assert tex.count(r"\midrule") == 4  # one under the header, one before each section but the first
    assert "\n".join(tex.splitlines()[:12]).count(r"\midrule") == 1
    assert r"-{}-limit 2" in tex and r"-{}-against evo-8b" in tex  # two hyphens, not an en dash
    notes = tex[tex.index(r"{\footnotesize"):tex.index(r"\caption")]
    assert notes.count(r"\par") >= 4  # each note its own line
    doc = tmp_path / "paper.tex"
    doc.write_text("\\documentclass[twocolumn]{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs,graphicx}\n"
                   "\\begin{document}\nText.\n" + tex + "\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert run.returncode == 0, log[-2000:]
    assert "Overfull" not in log, [line for line in log.splitlines() if "Overfull" in line]


def test_stand_ins_come_after_the_paper_columns_labelled_and_only_when_asked(results):
    write(results, "dream-v0-7b", "mmlu", 0.695, 5)
    plain = build_table("base", results)
    assert "Dream-v0 7B (stand-in for MDLM)" not in plain.columns and "dream-v0-7b" not in plain.cards
    table = build_table("base", results, paper=True, stand_ins=True)
    assert table.columns[:7] == plain.columns and table.columns[7] == "Dream-v0 7B (stand-in for MDLM)"
    cell = row(table, "mmlu").cells[7]
    assert cell.value == pytest.approx(69.5) and cell.paper is None  # never compared with MDLM's number
    assert row(table, "mmlu").cells[4].value is None  # the MDLM 7B column itself stays empty


def test_fast_dllm_v2_stands_in_beside_bd3lm_in_the_post_trained_table_only(results):
    write(results, "fast-dllm-v2-7b", "mmlu", 0.666, 5, stage="instruct")
    plain = build_table("instruct", results)
    assert "fast-dllm-v2-7b" not in plain.cards
    table = build_table("instruct", results, paper=True, stand_ins=True)
    column = table.columns.index("Fast-dLLM v2 7B (stand-in for BD3-LM)")
    assert column >= len(plain.columns) and table.columns[:len(plain.columns)] == plain.columns
    cell = row(table, "mmlu").cells[column]
    assert cell.value == pytest.approx(66.6) and cell.paper is None  # never compared with BD3-LM's number
    assert "Fast-dLLM v2 7B (stand-in for BD3-LM)" not in build_table("base", results, stand_ins=True).columns
