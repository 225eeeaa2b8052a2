import csv
import io
import json

import pytest

from evo_eval.errors import ResultsError, UnknownNameError, UserError
from evo_eval.report.tables import build_table, render
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


def test_stand_ins_come_after_the_paper_columns_labelled_and_only_when_asked(results):
    write(results, "dream-v0-7b", "mmlu", 0.695, 5)
    plain = build_table("base", results)
    assert "Dream-v0 7B (stand-in for MDLM)" not in plain.columns and "dream-v0-7b" not in plain.cards
    table = build_table("base", results, paper=True, stand_ins=True)
    assert table.columns[:7] == plain.columns and table.columns[7] == "Dream-v0 7B (stand-in for MDLM)"
    cell = row(table, "mmlu").cells[7]
    assert cell.value == pytest.approx(69.5) and cell.paper is None  # never compared with MDLM's number
    assert row(table, "mmlu").cells[4].value is None  # the MDLM 7B column itself stays empty
