"""Paired differences between two systems on one benchmark: Δ, a paired bootstrap interval, a p-value.

Every column of a table answers the same documents with the same prompts (the results files prove it
by their protocol fingerprint and per-document prompt hashes), so two columns are compared document by
document: Δ is the score difference on the documents *both* answered, aggregated the way lm-eval
aggregates the benchmark (pooled over documents or per subject, see uncertainty.py).

* interval: a paired bootstrap — documents are resampled (within each leaf task) and the *same*
  resampled documents score both systems, so their shared difficulty cancels;
* p-value: the exact two-sided sign test on the per-document differences (ties dropped). For 0/1
  scores this is McNemar's exact test: only the documents one system got right and the other wrong
  carry evidence, and under "no difference" each is equally likely to go either way.

A pair is only tested when the two columns saw the same shots and the same task prompts; otherwise
the reason is returned and the cell is never marked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .uncertainty import (ITERATIONS, LEVEL, SEED, DocScores, aggregate, bootstrap_scores, doc_scores,
                          percentile_interval)

ALPHA = 0.05
TEST_NAME = "exact two-sided sign test on per-document scores (McNemar's exact test for right/wrong)"


@dataclass
class Paired:
    delta: float | None = None  # score(a) - score(b) on the shared documents, as a fraction
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    n: int = 0  # documents both answered
    a_better: int = 0  # documents where a scored higher
    b_better: int = 0
    reason: str | None = None  # why the pair was not tested

    @property
    def tested(self) -> bool:
        return self.reason is None and self.p_value is not None

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.tested and self.p_value < alpha


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test: P(a split at least this uneven | each discordant pair is a fair coin)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    term, tail = 1, 1  # C(n, 0); each next binomial coefficient from the last, in exact integers
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2 ** n)  # int / int: the correctly rounded float of the exact ratio


def protocol_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Why two results files are not a paired comparison (different shots or task prompts), or None.

    Each post-trained model wraps the prompt in its own chat template, so per-document prompt hashes
    are only compared between two plain-prompt runs; the protocol fingerprint (task configs, shots,
    data) covers the rest for every pair.
    """
    if a.get("shots") != b.get("shots"):
        return f"different shots ({a.get('shots')} vs {b.get('shots')})"
    if a.get("protocol") != b.get("protocol"):
        return "different task prompts or data (protocol fingerprints differ)"
    if a.get("chat_template") or b.get("chat_template"):
        return None
    ha, hb = a.get("prompt_hashes") or {}, b.get("prompt_hashes") or {}
    for task in sorted(set(ha) & set(hb)):
        differ = [d for d in set(ha[task]) & set(hb[task]) if ha[task][d] != hb[task][d]]
        if differ:
            return f"different prompts on {len(differ)} documents of {task}"
    return None


def _shared(a: DocScores, b: DocScores) -> tuple[list[np.ndarray], list[np.ndarray]]:
    xs, ys = [], []
    for task in sorted(set(a.tasks) & set(b.tasks)):
        docs = sorted(set(a.tasks[task]) & set(b.tasks[task]))
        if docs:
            xs.append(np.array([a.tasks[task][d] for d in docs]))
            ys.append(np.array([b.tasks[task][d] for d in docs]))
    return xs, ys


def paired_scores(a: DocScores, b: DocScores, iterations: int = ITERATIONS, seed: int = SEED,
                  level: float = LEVEL) -> Paired:
    xs, ys = _shared(a, b)
    n = sum(len(x) for x in xs)
    if n == 0:
        return Paired(reason="no document answered by both")
    diffs = {str(i): x - y for i, (x, y) in enumerate(zip(xs, ys))}
    delta = aggregate(diffs, a.weighted)
    wins = int(sum((x > y).sum() for x, y in zip(xs, ys)))
    losses = int(sum((x < y).sum() for x, y in zip(xs, ys)))
    # The difference is linear in the documents, so resampling it is resampling both systems at once.
    reps = bootstrap_scores(list(diffs.values()), a.weighted, iterations, seed)
    low, high = percentile_interval(reps, level)
    return Paired(delta, low, high, sign_test(wins, losses), n, wins, losses)


def compare(a: dict[str, Any], b: dict[str, Any], iterations: int = ITERATIONS, seed: int = SEED,
            scores: tuple[DocScores, DocScores] | None = None) -> Paired:
    """Paired comparison of two results files' data for the same benchmark (a minus b); ``scores``:
    their ``doc_scores`` when the caller already has them."""
    why = protocol_difference(a, b)
    if why:
        return Paired(reason=why)
    sa, sb = scores or (doc_scores(a), doc_scores(b))
    for scores, data in ((sa, a), (sb, b)):
        if scores.reason:
            return Paired(reason=f"{data.get('model')}: {scores.reason}")
    return paired_scores(sa, sb, iterations, seed)
