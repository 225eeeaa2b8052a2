"""Which log-likelihood requests can share a forward, and answering them so.

lm-eval's HF backend scores the options of a multiple-choice question whose continuations are one
token after the same context from a single forward (its ``_loglikelihood_tokens`` groups requests by
context and reads every option off the same last-position logits). The diffusion estimators have the
same property for one-token continuations: LLaDA's and MDLM's input is the context plus one [MASK],
BD3-LM's the clean context blocks plus a noisy block with that one position masked, Evo's AR limit the
context's causal pass; none of them depends on which token the option is. A scorer says so by
implementing ``score_choices`` (scoring/base.py); this module finds the groups and hands each to it.

Same numbers: a group's forward is exactly the forward each member would run alone (same input, same
shapes), so every score, ``is_greedy`` and record equals the ungrouped path's bit for bit. The forward's
NFE is recorded on the group's first member and 0 on the others (``extra.shared_forward`` names the
group size), so summing NFE over requests counts it once. Requests whose continuation is longer than
one token, or whose estimator cannot share, are answered one by one as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple


class Encoded(NamedTuple):
    context_ids: list[int]
    continuation_ids: list[int]
    key: Any  # (context, continuation) strings for lm-eval's cache hook, or None
    request: Any  # the lm-eval Instance (task and document ids for the records), or None


def truncate(context_ids: list[int], continuation_len: int, max_length: int) -> list[int]:
    """Left-truncate the context so context + continuation fits, as lm-eval's HF backend does."""
    budget = max_length - continuation_len
    return context_ids[-budget:] if budget > 0 else context_ids[-1:]


def shared_context_groups(items: Sequence[Encoded], max_length: int) -> list[list[int]]:
    """Indices of the requests in answer order: each inner list is one forward's worth.

    One-token continuations after the same (truncated) context form one group, in the order of
    their first member; every other request is a group of one. Distinct requests with identical
    arguments stay separate members (lm-eval may ask twice), they simply share the forward too.
    """
    groups: list[list[int]] = []
    by_context: dict[tuple[int, ...], list[int]] = {}
    for index, item in enumerate(items):
        if len(item.continuation_ids) != 1:
            groups.append([index])
            continue
        context = tuple(truncate(item.context_ids, 1, max_length))
        if context in by_context:
            by_context[context].append(index)
        else:
            by_context[context] = [index]
            groups.append(by_context[context])
    return groups


def score_requests(lm: Any, items: Sequence[Encoded], group: bool = True,
                   disable_tqdm: bool = False) -> list[tuple[float, bool]]:
    """Every request's (logprob, is_greedy), grouping shared forwards where the scorer can."""
    from tqdm import tqdm

    results: list[tuple[float, bool] | None] = [None] * len(items)
    groups = shared_context_groups(items, lm.max_length) if group else [[i] for i in range(len(items))]
    for members in tqdm(groups, disable=disable_tqdm or lm.rank != 0, desc=f"{lm.family} loglikelihood"):
        answer_group(lm, items, members, results)
    return results  # type: ignore[return-value]


def answer_group(lm: Any, items: Sequence[Encoded], members: list[int], results: list) -> None:
    """One group's results into ``results``: one shared forward where the scorer can, else one by one."""
    if len(members) > 1:
        shared = lm._score_group([items[i] for i in members])
        if shared is not None:
            for i, result in zip(members, shared):
                results[i] = result
            return
    for i in members:
        item = items[i]
        results[i] = lm._score_one(item.context_ids, item.continuation_ids, item.key, item.request)
