"""95 % intervals for every measured score, from the per-document scores a results file already holds.

lm-eval logs every document it scored (``samples``: one row per document and filter, the metric's
per-document value under the metric's own name). A benchmark's score is a mean over those rows, of
one leaf task or, for groups such as MMLU's 57 subjects, an aggregate of the subjects' means: weighted
by size (every group of our suite says ``weight_by_size: true``, the pooled mean over documents) or
unweighted (the mean of subject means). The bootstrap resamples documents *within* each leaf task
(a stratified bootstrap), so every replicate keeps the subjects' sizes and is aggregated the way
lm-eval aggregated the real score.

Which aggregation lm-eval used is not written in the results, so it is read off the numbers: the
per-document scores must reproduce the stored score under one of the two rules, else no interval is
given and the reason says why (a corpus-level metric such as BLEU is not a mean over documents, and a
document-resampling interval for it would be made up). Nothing here runs a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

LEVEL = 0.95
ITERATIONS = 2000
SEED = 0  # fixed: the same results folder gives the same intervals on every machine
_TOLERANCE = 1e-6


@dataclass
class DocScores:
    """One system's per-document scores for one benchmark, grouped by leaf task."""

    tasks: dict[str, dict[str, float]]  # leaf task -> {doc_id: score}
    weighted: bool  # group aggregate: pooled over documents (True) or mean of the leaf tasks' means
    reason: str | None = None  # why there is no usable per-document score (then ``tasks`` is empty)

    @property
    def n(self) -> int:
        return sum(len(v) for v in self.tasks.values())

    def score(self) -> float:
        return aggregate({t: np.fromiter(v.values(), float) for t, v in self.tasks.items()}, self.weighted)


@dataclass
class Interval:
    low: float
    high: float
    level: float = LEVEL
    n: int = 0
    method: str = "percentile bootstrap over documents, stratified by leaf task"


@dataclass
class CellUncertainty:
    interval: Interval | None = None
    reason: str | None = None  # why there is no interval
    extra: dict[str, Any] = field(default_factory=dict)


def split_metric(metric: str) -> tuple[str, str]:
    """``"exact_match,flexible-extract"`` -> (``exact_match``, ``flexible-extract``), lm-eval's key."""
    name, _, filt = metric.partition(",")
    return name, filt or "none"


def aggregate(per_task: dict[str, np.ndarray], weighted: bool) -> float:
    arrays = [a for a in per_task.values() if len(a)]
    if not arrays:
        return math.nan
    if weighted or len(arrays) == 1:
        return float(np.concatenate(arrays).mean())
    return float(np.mean([a.mean() for a in arrays]))


def _value(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, (int, float)) and math.isfinite(raw):
        return float(raw)
    return None


def doc_scores(data: dict[str, Any]) -> DocScores:
    """The per-document scores of a results file's main metric, checked against its stored score."""
    samples = data.get("samples") or {}
    metric, filt = split_metric(str(data.get("metric", "")))
    if not samples:
        return DocScores({}, True, "no per-document samples in the results file")
    tasks: dict[str, dict[str, float]] = {}
    odd = 0
    for task, rows in sorted(samples.items()):
        for row in rows or []:
            if row.get("filter", "none") != filt or metric not in row:
                continue
            value = _value(row[metric])
            if value is None:  # a list (corpus-level metrics log their inputs) or a NaN
                odd += 1
                continue
            tasks.setdefault(task, {})[str(row.get("doc_id"))] = value
    if odd:
        return DocScores({}, True, f"{odd} documents have no numeric per-document '{metric}' "
                                   "(a corpus-level metric, or NaN): not a mean over documents")
    if not tasks:
        return DocScores({}, True, f"the samples hold no '{metric}' under filter '{filt}'")
    stored = data.get("score")
    arrays = {t: np.fromiter(v.values(), float) for t, v in tasks.items()}
    if stored is None:
        return DocScores(tasks, True)  # NaN or missing score: the documents still say something
    for weighted in (True, False):
        if abs(aggregate(arrays, weighted) - float(stored)) <= _TOLERANCE:
            return DocScores(tasks, weighted)
    return DocScores({}, True, f"the per-document '{metric}' scores do not reproduce the stored score "
                               f"{stored:.6g} as a mean (pooled or per subject)")


def resampled_sums(values: np.ndarray, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Sums of ``iterations`` resamples (with replacement, same size) of ``values``.

    Scores with few distinct levels (right/wrong, or a difference of two such) are resampled through
    the counts of each level, which follow a multinomial law exactly: the same distribution as drawing
    documents one by one, without drawing 14k MMLU indices per replicate.
    """
    n = len(values)
    levels, counts = np.unique(values, return_counts=True)
    if len(levels) <= 16:
        return rng.multinomial(n, counts / n, size=iterations) @ levels
    sums = np.empty(iterations)
    block = max(1, 2_000_000 // n)  # never 14k documents x 2000 replicates in memory at once
    for start in range(0, iterations, block):
        stop = min(iterations, start + block)
        sums[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].sum(axis=1)
    return sums


def bootstrap_scores(per_task: list[np.ndarray], weighted: bool, iterations: int, seed: int) -> np.ndarray:
    """``iterations`` replicate scores, each resampling every leaf task's documents with replacement."""
    rng = np.random.default_rng(seed)
    sums = np.stack([resampled_sums(values, iterations, rng) for values in per_task], axis=1)
    sizes = np.array([len(v) for v in per_task], float)
    if weighted or len(per_task) == 1:
        return sums.sum(axis=1) / sizes.sum()
    return (sums / sizes).mean(axis=1)


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(low), float(high)


def interval(scores: DocScores, iterations: int = ITERATIONS, seed: int = SEED,
             level: float = LEVEL) -> Interval:
    per_task = [np.fromiter(v.values(), float) for _, v in sorted(scores.tasks.items()) if v]
    low, high = percentile_interval(bootstrap_scores(per_task, scores.weighted, iterations, seed), level)
    return Interval(low, high, level, scores.n)


def score_interval(data: dict[str, Any], iterations: int = ITERATIONS, seed: int = SEED,
                   scores: DocScores | None = None) -> CellUncertainty:
    """The 95 % interval of a results file's score (as a fraction, like the stored score), or why none."""
    if data.get("score") is None:
        return CellUncertainty(reason="no score")
    scores = scores or doc_scores(data)
    if scores.reason:
        return CellUncertainty(reason=scores.reason)
    if scores.n < 2:
        return CellUncertainty(reason=f"{scores.n} document: no spread to resample")
    return CellUncertainty(interval(scores, iterations, seed))


def intervals_for(results: Iterable[Any]) -> dict[tuple[str, str], CellUncertainty]:
    """{(model, benchmark): interval} for StoredResults."""
    return {(r.model, r.benchmark): score_interval(r.data) for r in results}
