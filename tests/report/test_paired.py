"""Paired differences: the exact sign test by hand, the paired bootstrap, and pairs that must not be tested."""

from __future__ import annotations

import math

import pytest

from evo_eval.report.paired import compare, sign_test


def test_sign_test_matches_the_binomial_by_hand(record):
    # 9 discordant documents, A right on 8 of them: P(X <= 1 | Bin(9, 1/2)) = (1 + 9) / 512, two-sided x2.
    assert sign_test(8, 1) == pytest.approx(20 / 512)
    assert sign_test(1, 8) == pytest.approx(20 / 512)
    assert sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(6, 0) == pytest.approx(2 / 64)
    # Large counts (MMLU-sized) stay exact: the closed form summed with math.comb.
    assert sign_test(100, 80) == 2 * sum(math.comb(180, i) for i in range(81)) / 2 ** 180


def test_paired_comparison_on_a_hand_made_example(record):
    # 12 documents: both right on 2, both wrong on 1, A right and B wrong on 8, A wrong and B right on 1.
    a = [1, 1, 0] + [1] * 8 + [0]
    b = [1, 1, 0] + [0] * 8 + [1]
    pair = compare(record("evo-8b", "arc_challenge", {"t": a}),
                   record("llama3-8b", "arc_challenge", {"t": b}))
    assert (pair.n, pair.a_better, pair.b_better) == (12, 8, 1)
    assert pair.delta == pytest.approx(7 / 12)
    assert pair.p_value == pytest.approx(20 / 512)  # the exact sign test: ties (concordant documents) dropped
    assert pair.significant()
    assert pair.low <= pair.delta <= pair.high and pair.low > 0
    # Only documents both answered are paired: B's extra document changes nothing.
    b_more = record("llama3-8b", "arc_challenge", {"t": b + [1]})
    b_more["score"] = sum(b + [1]) / 13
    again = compare(record("evo-8b", "arc_challenge", {"t": a}), b_more)
    assert (again.n, again.p_value) == (12, pair.p_value)


def test_pairs_with_different_shots_or_prompts_are_not_tested(record):
    a = record("evo-8b", "gsm8k", {"t": [1, 1, 1, 1, 1, 1, 1]}, shots=4)
    fewer = record("llama3-8b", "gsm8k", {"t": [0] * 7}, shots=8)
    pair = compare(a, fewer)
    assert not pair.tested and not pair.significant() and pair.reason == "different shots (4 vs 8)"
    other = record("llama3-8b", "gsm8k", {"t": [0] * 7}, shots=4,
                             prompts={"t": [f"other {i}" for i in range(7)]})
    assert compare(a, other).reason == "different prompts on 7 documents of t"
    other["protocol"] = "q"
    assert "protocol fingerprints differ" in compare(a, other).reason
    # Each post-trained model's own chat template changes the rendered prompt, not the protocol.
    chat_a = record("evo-8b-instruct", "gsm8k", {"t": [1] * 7}, shots=4, chat_template=True)
    chat_b = record("llama3-8b-instruct", "gsm8k", {"t": [0] * 7}, shots=4, chat_template=True,
                              prompts={"t": [f"<|user|>{i}" for i in range(7)]})
    assert compare(chat_a, chat_b).significant()
