"""The Figure 3 ablation: variants named as the paper names them, overrides that configure Evo, and the
table read from results files beside the paper's numbers."""

from __future__ import annotations

import csv
from dataclasses import fields

import pytest

from evo_eval.ablation import (PPL_METRIC, ablation_variants, figure3_table, paper_ablation, ppl_document, ppl_results,
                               render_markdown, variant_dir)
from evo_eval.decoding.evo import EvoSamplerConfig
from evo_eval.paths import paper_dir
from evo_eval.scoring.evo import EvoScorerConfig
from evo_eval.store import KIND, SCHEMA_VERSION, atomic_write_text, to_json


def test_variants_are_figure_3_in_the_papers_words_and_order():
    with (paper_dir() / "ablations.csv").open(encoding="utf-8") as handle:
        figure3 = [row["variant"] for row in csv.DictReader(handle) if row["figure"] == "3"]
    variants = ablation_variants()
    assert [v["variant"] for v in variants] == figure3
    assert {v["schedule"] for v in variants} == {"learned", "fixed:0", "fixed:0.5", "fixed:1", "entropy", "none"}
    assert len({v["slug"] for v in variants}) == len(variants)
    known = {f.name for f in fields(EvoSamplerConfig)} | {f.name for f in fields(EvoScorerConfig)}
    for v in variants:
        assert set(v["overrides"]) <= known
        EvoSamplerConfig.from_dict({k: x for k, x in v["overrides"].items() if k in {f.name for f in fields(EvoSamplerConfig)}})
    assert paper_ablation()["Evo (full)"] == {"ppl": 8.1, "task_acc": 81.6}


def test_the_ablation_suite_is_mmlu_gsm8k_and_perplexity():
    from evo_eval.ablation import ablation_entries

    entries = ablation_entries("base")
    assert [(e.key, e.task, e.shots, e.mode) for e in entries] == [
        ("mmlu", "evo_mmlu", 5, "likelihood"), ("gsm8k", "evo_gsm8k", 4, "generation"),
        ("ppl", "evo_ppl", 0, "likelihood")]
    assert entries[-1].benchmark.metric["base"] == PPL_METRIC


def _write(root, stage, model, slug, benchmark, metric, score):
    record = {"schema_version": SCHEMA_VERSION, "kind": KIND, "model": f"{model}@{slug}", "stage": stage,
              "benchmark": benchmark, "task": f"evo_{benchmark}", "metric": metric, "score": score,
              "lm_eval": {"results": {f"evo_{benchmark}": {metric: score}}}, "provenance": {}}
    atomic_write_text(variant_dir(root, stage, model, slug) / f"{benchmark}.json", to_json(record))


def test_figure3_table_reads_each_variants_results(tmp_path):
    _write(tmp_path, "base", "evo-8b", "full", "mmlu", "acc,none", 0.70)
    _write(tmp_path, "base", "evo-8b", "full", "gsm8k", "exact_match,flexible-extract", 0.50)
    _write(tmp_path, "base", "evo-8b", "full", "ppl", PPL_METRIC, 12.5)
    _write(tmp_path, "base", "evo-8b", "fixed-0", "mmlu", "acc,none", 0.40)
    rows = {r["variant"]: r for r in figure3_table(tmp_path, "evo-8b")}
    full = rows["Evo (full)"]
    assert full["task_acc"] == pytest.approx(60.0) and full["ppl"] == 12.5 and full["missing"] == []
    assert (full["paper_ppl"], full["paper_task_acc"]) == (8.1, 81.6) and full["model"] == "evo-8b@full"
    ar_only = rows["Fixed t=0 (AR-only)"]
    assert ar_only["mmlu_acc"] == pytest.approx(40.0) and ar_only["task_acc"] is None and ar_only["ppl"] is None
    assert ar_only["missing"] == ["ppl", "gsm8k"]
    assert rows["Heuristic t (entropy)"]["missing"] == ["ppl", "mmlu", "gsm8k"]
    table = render_markdown(list(rows.values()))
    assert "| Evo (full) | 12.5 | 8.1 | 60.0 | 81.6 |" in table
    assert "| Fixed t=0 (AR-only) | — | 10.2 | — | 69.6 |" in table


def test_a_corrupt_results_file_is_reported_not_skipped(tmp_path):
    from evo_eval.errors import ResultsError

    path = variant_dir(tmp_path, "base", "evo-8b", "full") / "mmlu.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"kind": "evo-eval/benchmark-res')
    with pytest.raises(ResultsError, match="mmlu.json is (malformed|truncated) JSON"):
        figure3_table(tmp_path, "evo-8b")


def test_perplexity_documents_are_hellaswag_passages_with_their_gold_ending(benchdata, tmp_path):
    from evo_eval.data.mirror import import_mirror
    from evo_eval.data.source import load

    import_mirror(benchdata, tmp_path / "data", ["hellaswag"])
    docs = load("hellaswag", data_dir=str(tmp_path / "data"))["validation"]
    doc = docs[0]
    text = ppl_document(doc)
    assert text == "A man is sitting on a roof. he starts pulling up roofing on a roof."
    counts = ppl_results(doc, [-30.0])
    assert counts["word_perplexity"] == (-30.0, 15)
    assert counts["byte_perplexity"] == (-30.0, len(text.encode("utf-8")))
    # lm-eval's own cleaning applies ([header], [title] and double spaces never reach the scored text).
    assert all("[" not in ppl_document(docs[i]) and "  " not in ppl_document(docs[i]) for i in range(200))
