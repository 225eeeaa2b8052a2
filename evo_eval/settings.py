"""One merge of decoding and likelihood settings, with one stated precedence (later wins):

    card ``decoding.default``  <  card ``decoding.tasks[<benchmark>]``  <  ``--model-args``  <  the request

The request is lm-eval's generation kwargs for one ``generate_until`` call (the task's
``generation_kwargs``, with ``--gen-kwargs`` merged in by lm-eval): its length (``max_gen_toks``) and
its sampling knobs (``temperature``, ``top_p``, ``top_k``; ``do_sample: false`` means greedy) win over
everything, where the sampler has them. Likelihood settings: the card's ``likelihood`` block < the same keys in the decoding blocks <
``--model-args``. ``run`` (every adapter), ``speed`` and the ablation variants merge through here, and
``in_force`` folds what the requests changed into what the results record.

Light on purpose: no torch, no lm-eval.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cards import ModelCard

# lm-eval's request kwarg -> the sampler setting it sets.
REQUEST_KEYS = {"max_gen_toks": "max_new_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k"}


def merge(card: "ModelCard | None", benchmark: str | None, model_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card's default, its entry for ``benchmark`` (None: none), then ``model_args``; without the
    ``sampler`` name (``families.card_sampler`` reads that)."""
    values = card.decoding_for(benchmark) if card is not None else {}
    values.update(model_args or {})
    values.pop("sampler", None)
    return values


def likelihood(card: "ModelCard | None", values: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    """Estimator settings: the card's ``likelihood`` block, under the merged ``values`` for ``keys``."""
    out = {k: v for k, v in (card.likelihood if card is not None else {}).items() if k in keys}
    out.update({k: v for k, v in values.items() if k in keys})
    return out


def for_request(values: dict[str, Any], request: dict[str, Any], default_max: int) -> dict[str, Any]:
    """A sampler's merged settings (``values``, every field of its Config) with one request's kwargs on
    top: the length always (the request's, else the settings', else ``default_max``), sampling knobs
    where the sampler has them."""
    out = dict(values)
    out["max_new_tokens"] = int(request.get("max_gen_toks", values.get("max_new_tokens", default_max)))
    for key in ("temperature", "top_p", "top_k"):
        if key in request and key in values:
            out[key] = request[key]
    if request.get("do_sample") is False:
        out.update(greedy(set(values)))
    return out


def greedy(known: set[str]) -> dict[str, Any]:
    """What ``do_sample: false`` (lm-eval's default when a task names no temperature) sets in a sampler
    config with these fields: temperature 0 (argmax wherever a sampler draws tokens) and ``do_sample``
    off, as lm-eval's HF backend decodes greedily; a sampler with neither (ARD, whose tokens are
    rounded latents) has no token sampling to turn off."""
    out: dict[str, Any] = {}
    if "temperature" in known:
        out["temperature"] = 0.0
    if "do_sample" in known:
        out["do_sample"] = False
    return out


def changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The settings a request changed (what its record stores next to its stats)."""
    return {k: v for k, v in after.items() if before.get(k, object()) != v}


def in_force(decoding: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The benchmark's decoding record with what its generation requests changed folded in.

    Every request of a benchmark usually carries the same kwargs (the task's): then ``sampler_config``
    is exactly what produced the samples. Where requests differ, it stays the benchmark's and each
    request's own changes are in ``requests.per_request[].settings``.
    """
    changes = [r.get("settings") or {} for r in records if r.get("request_type") == "generate_until"]
    distinct = {json.dumps(c, sort_keys=True, default=str) for c in changes}
    out = dict(decoding)
    if len(distinct) == 1:
        out["sampler_config"] = {**decoding.get("sampler_config", {}), **changes[0]}
        out["request_settings"] = "the same for every request (folded into sampler_config)"
    elif distinct:
        out["request_settings"] = "differ per request: see requests.per_request[].settings"
    return out
