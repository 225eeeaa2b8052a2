"""The Figure 3 ablation: variants named as the paper names them, overrides that configure Evo, and the
table read from results files beside the paper's numbers."""

from __future__ import annotations

import csv
import json
from dataclasses import fields
from pathlib import Path

import pytest

from evo_eval.ablation import (FALLBACK_LABEL, PPL_METRIC, VARIANTS, ablation_entries, ablation_table, ablation_variants,
                               figure3_table, lm_for_entry, paper_ablation, ppl_document, ppl_results, render_ablation,
                               render_markdown, suite_variants, trained_dir, trained_variant, variant_dir, variants)
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
        ("ppl", "evo_ppl", 0, "likelihood"), ("ppl_ar", "evo_ppl", 0, "likelihood")]
    assert entries[-1].benchmark.metric["base"] == PPL_METRIC


def _write(root, stage, model, slug, benchmark, metric, score, trained=False, requests=None):
    name = trained_dir(root, stage, model, slug).name if trained else f"{model}@{slug}"
    record = {"schema_version": SCHEMA_VERSION, "kind": KIND, "model": name, "stage": stage,
              "benchmark": benchmark, "task": f"evo_{benchmark}", "metric": metric, "score": score,
              "lm_eval": {"results": {f"evo_{benchmark}": {metric: score}}}, "provenance": {},
              "requests": {"per_request": requests or []}}
    atomic_write_text(Path(root) / stage / name / f"{benchmark}.json", to_json(record))


def test_figure3_table_reads_each_variants_results(tmp_path):
    _write(tmp_path, "base", "evo-8b", "full", "mmlu", "acc,none", 0.70)
    _write(tmp_path, "base", "evo-8b", "full", "gsm8k", "exact_match,flexible-extract", 0.50)
    _write(tmp_path, "base", "evo-8b", "full", "ppl", PPL_METRIC, 12.5)
    _write(tmp_path, "base", "evo-8b", "full", "ppl_ar", PPL_METRIC, 7.5)
    _write(tmp_path, "base", "evo-8b", "fixed-0", "mmlu", "acc,none", 0.40)
    rows = {r["variant"]: r for r in figure3_table(tmp_path, "evo-8b")}
    full = rows["Evo (full)"]
    assert full["task_acc"] == pytest.approx(60.0) and full["ppl"] == 12.5 and full["ppl_ar"] == 7.5
    assert full["missing"] == [] and full["source"] == FALLBACK_LABEL and full["model"] == "evo-8b@full"
    assert (full["paper_ppl"], full["paper_task_acc"]) == (8.1, 81.6)
    ar_only = rows["Fixed t=0 (AR-only)"]
    assert ar_only["mmlu_acc"] == pytest.approx(40.0) and ar_only["task_acc"] is None and ar_only["ppl"] is None
    assert ar_only["missing"] == ["ppl", "ppl_ar", "gsm8k"]
    assert rows["Heuristic t (entropy)"]["missing"] == ["ppl", "ppl_ar", "mmlu", "gsm8k"]
    table = render_markdown(list(rows.values()))
    assert "| Evo (full) † | 12.5 | 7.5 | 8.1 | 60.0 | 81.6 | — |" in table
    assert "| Fixed t=0 (AR-only) † | — | — | 10.2 | — | 69.6 | — |" in table
    assert f"† {FALLBACK_LABEL}" in table


def test_a_trained_variants_results_come_first_and_figure_4_has_its_rows(tmp_path):
    gsm8k_requests = [{"extra": {"token_updates": 30, "canvas_tokens": 10}}, {"extra": {"token_updates": 10, "canvas_tokens": 30}}]
    _write(tmp_path, "base", "evo-8b", "fixed-1", "mmlu", "acc,none", 0.40)  # the fallback: ignored
    _write(tmp_path, "base", "evo-8b", "fixed-1", "mmlu", "acc,none", 0.55, trained=True)
    _write(tmp_path, "base", "evo-8b", "fixed-1", "gsm8k", "exact_match,flexible-extract", 0.25, trained=True,
           requests=gsm8k_requests)
    row = next(r for r in ablation_table(tmp_path, "evo-8b", "base", "3") if r["variant"] == "Fixed t=1 (Diff-only)")
    assert row["source"] == "trained variant" and row["model"] == "evo-8b-fixed-1"
    assert row["task_acc"] == pytest.approx(40.0) and row["steps_per_token"] == pytest.approx(1.0)
    _write(tmp_path, "base", "evo-8b", "frozen-ar", "ppl", PPL_METRIC, 9.0, trained=True)
    figure4 = {r["variant"]: r for r in ablation_table(tmp_path, "evo-8b", "base", "4")}
    assert list(figure4) == ["Two-Module (AR + Diff)", "No Shared Embeddings", "No Pretrained Init",
                             "Frozen AR Backbone", "Evo (full)"]
    assert figure4["Frozen AR Backbone"]["ppl"] == 9.0 and figure4["Frozen AR Backbone"]["paper_ppl"] == 8.7
    assert figure4["No Shared Embeddings"]["source"] == "trained variant"  # no fallback exists for Figure 4
    assert figure4["Two-Module (AR + Diff)"]["source"] == "trained variant"
    text = render_ablation(tmp_path, "evo-8b", "base", "markdown")
    assert "Figure 3" in text and "Figure 4" in text and "| Two-Module (AR + Diff) | — | — | 8.6 |" in text
    assert set(json.loads(render_ablation(tmp_path, "evo-8b", "base", "json"))) == {"3", "4"}


def test_one_card_per_trained_variant_outside_the_papers_columns():
    from evo_eval.cards import all_cards, get_card

    # Tables, `models` and `speed all` keep to the seven systems (public stand-ins are labelled apart).
    assert len([c for c in all_cards().values() if c.stand_in_for is None]) == 14
    for v in VARIANTS:
        if v.slug == "full":
            continue
        card = get_card(v.card_name)
        assert card.family == "evo" and card.needs_checkpoint and trained_variant(card) == v
        assert card.decoding_for(None)["schedule"] == v.schedule and card.decoding_for(None)["block_length"] == 0
        assert suite_variants(card) == [(card.name, None)]
        assert card.shape["tie_embeddings"] is v.shape.get("tie_embeddings", True)
        assert card.shape.get("two_module", False) is v.shape.get("two_module", False)
    assert get_card("evo-8b-no-time").likelihood["time_conditioning"] is False
    # The full model's card runs Figure 3's inference-time fallback, one results folder per variant.
    fallback = suite_variants(get_card("evo-8b"))
    assert [name for name, _ in fallback] == [f"evo-8b@{v.slug}" for v in variants("3")]


def test_the_ar_limit_perplexity_entry_scores_with_the_ar_estimator():
    class Lm:
        def with_settings(self, **settings):
            return settings

    entries = {e.key: e for e in ablation_entries("base")}
    assert lm_for_entry(Lm(), entries["ppl_ar"]) == {"estimator": "ar"}
    lm = Lm()
    assert lm_for_entry(lm, entries["ppl"]) is lm


def test_departures_are_named_and_a_trained_variants_schedule_is_not_one():
    from evo_eval.adapters.evo import departures
    from evo_eval.cards import get_card

    paper = departures(EvoSamplerConfig(), EvoScorerConfig(), get_card("evo-8b"))
    assert paper == []
    fallback = departures(EvoSamplerConfig(schedule="fixed:0", block_length=32), EvoScorerConfig(estimator="ar"),
                          get_card("evo-8b"))
    assert any("block_length=32" in d for d in fallback) and any(FALLBACK_LABEL in d for d in fallback)
    assert any("AR limit" in d for d in fallback)
    assert departures(EvoSamplerConfig(schedule="fixed:0"), EvoScorerConfig(), get_card("evo-8b-fixed-0")) == []


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
