"""95 % intervals from the stored samples: coverage of a known accuracy, groups, and the honest refusals."""

from __future__ import annotations

import numpy as np
import pytest

from evo_eval.report.uncertainty import doc_scores, score_interval


def test_interval_covers_a_known_accuracy_in_at_least_93_of_100_seeded_trials(record):
    # An MMLU-like group: four subjects of unequal size, every document right with probability 0.7.
    truth, sizes = 0.7, (400, 300, 200, 100)
    covered, widths = 0, []
    for trial in range(100):
        rng = np.random.default_rng(1000 + trial)
        per_task = {f"evo_mmlu_s{i}": (rng.random(n) < truth).astype(float).tolist() for i, n in enumerate(sizes)}
        result = score_interval(record("evo-8b", "mmlu", per_task), seed=trial)
        low, high = result.interval.low, result.interval.high
        covered += low <= truth <= high
        widths.append(high - low)
    assert covered >= 93
    # Not covering by being vacuous: the normal-theory width is 2 * 1.96 * sqrt(.7 * .3 / 1000) = 0.057.
    assert 0.05 < np.mean(widths) < 0.064


def test_group_aggregation_is_read_off_the_stored_score(record):
    per_task = {"a": [1.0, 1.0, 1.0, 1.0], "b": [0.0, 0.0]}
    pooled = record("m", "mmlu", per_task, weighted=True)
    assert pooled["score"] == pytest.approx(4 / 6)
    assert doc_scores(pooled).weighted is True
    by_subject = record("m", "mmlu", per_task, weighted=False)
    assert by_subject["score"] == pytest.approx(0.5)
    scores = doc_scores(by_subject)
    assert scores.weighted is False and scores.score() == pytest.approx(0.5)
    # Subjects are resampled within themselves: "a" always gives 1 and "b" 0, so the mean of subject
    # means is exactly 0.5 in every replicate.
    interval = score_interval(by_subject).interval
    assert interval.low == pytest.approx(0.5) and interval.high == pytest.approx(0.5)


def test_no_interval_where_the_documents_do_not_make_the_score(record):
    data = record("m", "gsm8k", {"t": [1.0, 0.0, 1.0]}, metric="exact_match,flexible-extract")
    assert score_interval(data).interval is not None
    data["score"] = 0.9  # not the mean of the documents (e.g. a corpus-level metric)
    assert "do not reproduce the stored score" in score_interval(data).reason
    data["samples"] = {}
    assert score_interval(data).reason == "no per-document samples in the results file"
    other_filter = record("m", "gsm8k", {"t": [1.0, 0.0]}, metric="exact_match,strict-match")
    other_filter["metric"] = "exact_match,flexible-extract"
    assert "no 'exact_match' under filter 'flexible-extract'" in score_interval(other_filter).reason
    bleu = record("m", "x", {"t": [1.0, 0.0]})
    for row in bleu["samples"]["t"]:
        row["acc"] = ["ref", "pred"]
    assert "corpus-level" in score_interval(bleu).reason
