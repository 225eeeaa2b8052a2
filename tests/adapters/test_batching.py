"""Shared forwards for one-token options (adapters/batching.py): the same numbers as answering each
request alone, for every family, with fewer forwards where the estimator allows it."""

from __future__ import annotations

import json

import pytest
from lm_eval.api.instance import Instance

from evo_eval.adapters.batching import Encoded, shared_context_groups

LETTERS = [" A", " B", " C", " D"]


def mmlu_like_requests(benchdata, docs: int = 3) -> list[Instance]:
    """Real ARC questions posed MMLU-style (one-token letter options), plus ARC's own multi-token options."""
    lines = (benchdata / "arc_challenge" / "ARC-Challenge-Test.jsonl").read_text().splitlines()[:docs]
    out = []
    for doc_id, line in enumerate(lines):
        doc = json.loads(line)
        choices = doc["question"]["choices"][:4]
        listed = "\n".join(f"{L.strip()}. {c['text']}" for L, c in zip(LETTERS, choices))
        context = f"{doc['question']['stem']}\n{listed}\nAnswer:"
        out += [Instance("loglikelihood", doc, (context, L), i, ("mmlu_like", doc_id, 1))
                for i, L in enumerate(LETTERS[:len(choices)])]
        plain = f"Question: {doc['question']['stem']}\nAnswer:"
        out += [Instance("loglikelihood", doc, (plain, " " + c["text"]), i, ("arc_like", doc_id, 1))
                for i, c in enumerate(choices)]
    return out


def build(family: str, tiny_checkpoint, **settings):
    from evo_eval.adapters import adapter_class

    if family in ("llada", "evo", "ard"):
        from evo_eval.tiny import tiny_card

        card = tiny_card(family)
    else:
        card = f"{family}-7b"
    return adapter_class(family)(pretrained=str(tiny_checkpoint(family, seed=4)), card=card, device="cpu", **settings)


FAMILIES = [
    ("llada", {"mc_num": 4, "batch": 2}, True),
    ("mdlm", {"mc_num": 4, "batch": 2}, True),
    ("bd3lm", {"mc_num": 4, "batch": 2}, True),
    ("evo", {"estimator": "ar"}, True),
    ("evo", {"mc_num": 3, "batch": 2}, False),  # the latent ELBO noises the option's own latents
    ("ard", {"mc_num": 4, "batch": 4}, False),  # continuous embeddings of the option itself
]


@pytest.mark.parametrize("family,settings,shares", FAMILIES, ids=[f"{f}-{'shared' if s else 'alone'}" for f, _, s in FAMILIES])
def test_grouped_equals_separate_and_saves_forwards(family, settings, shares, tiny_checkpoint, benchdata):
    requests = mmlu_like_requests(benchdata)
    grouped = build(family, tiny_checkpoint, **settings)
    alone = build(family, tiny_checkpoint, share_forwards=False, **settings)
    one_token = [r for r in requests if len(grouped._encode_pair(*r.args)[1]) == 1]
    assert len(one_token) >= 12  # the letter options really are one token after a shared context

    got, want = grouped.loglikelihood(requests), alone.loglikelihood(requests)
    assert got == want  # byte-identical floats and greedy flags, every request
    assert [r.doc_id for r in grouped.records] == [r.doc_id for r in alone.records]
    nfe_grouped = sum(r.nfe for r in grouped.records)
    nfe_alone = sum(r.nfe for r in alone.records)
    if shares:
        letters = [r for r, q in zip(grouped.records, requests) if q.args[1] in LETTERS]
        assert sum(r.nfe for r in letters) == 3  # one forward per question
        assert sum(r.nfe for r, q in zip(alone.records, requests) if q.args[1] in LETTERS) == len(letters)
        assert nfe_alone - nfe_grouped == len(letters) - 3
        assert all(r.extra.get("shared_forward") == 4 for r in letters)
    else:
        assert nfe_grouped == nfe_alone


def test_groups_follow_the_truncated_context():
    items = [Encoded([1, 2, 3], [7], None, None), Encoded([9, 2, 3], [8], None, None),
             Encoded([1, 2, 3], [8, 9], None, None), Encoded([1, 2, 3], [9], None, None)]
    assert shared_context_groups(items, max_length=16) == [[0, 3], [1], [2]]
    # With room for two context tokens only, [1,2,3] and [9,2,3] are both (2,3): one forward.
    assert shared_context_groups(items, max_length=3) == [[0, 1, 3], [2]]
