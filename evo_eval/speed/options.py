"""What ``evo-eval speed`` is asked to do: its options, the cards they select (checked before anything
is built), and each card's sampler and its settings (through the one merge of ``evo_eval.settings``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..cards import STAGES, ModelCard, all_cards, get_card, paper_order
from ..decoding.base import SamplerConfig
from ..devices import DTYPES
from ..errors import UnknownNameError, UserError
from ..families import card_sampler, model_module, sampler_class
from ..settings import merge

PROMPT_SETS = ("gsm8k",)
WEIGHTS = ("synthetic", "checkpoint")


@dataclass
class SpeedOptions:
    models: list[str] | None = None  # card names; None = every card (of --stage, if given)
    stage: str | None = None
    weights: str = "synthetic"
    checkpoint: str | None = None  # overrides the card's checkpoint with --weights checkpoint
    prompts: str = "gsm8k"
    gen_len: int = 256
    repeats: int = 5
    warmup: int = 2
    # reference: the card's decoding; any other name: that entry of the sampler's ``variants`` dict
    # (Config overrides, e.g. LLaDA's "cached"); a sampler without it skips the card with one line.
    variant: str | None = None
    decoding: dict[str, Any] = field(default_factory=dict)  # sampler Config overrides, e.g. schedule=fixed:0.5
    output: Path = Path("results/speed")
    device: str | None = None
    dtype: str | None = None  # default: the card's dtype on GPUs, float32 on the CPU
    data_dir: Path | None = None
    seed: int = 1234
    time_budget_s: float | None = None  # per model: fewer timed repeats (never under 3) if they would not fit

    @property
    def label(self) -> str | None:
        """Results-file suffix: what differs from the card's own decoding, in file-name-safe letters."""
        parts = [self.variant] if self.variant and self.variant != "reference" else []
        parts += [f"{k}-{v}" for k, v in sorted(self.decoding.items())]
        return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(map(str, parts))) if parts else None


class Skip(Exception):
    """A card that cannot be timed as asked (no checkpoint, no such variant): one line why."""


def plan_cards(options: SpeedOptions) -> list[ModelCard]:
    """The cards to time, in the paper's order, with every option checked before anything is built."""
    if options.stage is not None and options.stage not in STAGES:
        raise UnknownNameError("stage", options.stage, list(STAGES))
    if options.weights not in WEIGHTS:
        raise UnknownNameError("weights", options.weights, list(WEIGHTS))
    if options.prompts not in PROMPT_SETS:
        raise UnknownNameError("prompt set", options.prompts, list(PROMPT_SETS))
    if options.dtype is not None and options.dtype not in DTYPES:
        raise UnknownNameError("dtype", options.dtype, list(DTYPES))
    for name, value, least in (("--gen-len", options.gen_len, 1), ("--repeats", options.repeats, 1),
                               ("--warmup", options.warmup, 0)):
        if value < least:
            raise UserError(f"{name} must be at least {least}, got {value}", f"pass {name} {max(least, 1)} or more")
    if options.checkpoint and options.weights != "checkpoint":
        raise UserError("--checkpoint is given but --weights is synthetic", "add --weights checkpoint")
    order = {s: i for i, s in enumerate(paper_order())}
    if not options.models or options.models == ["all"]:
        # The paper's systems; a public stand-in (Dream-v0 for MDLM) is timed when named.
        cards = [c for c in all_cards().values() if options.stage in (None, c.stage) and c.stand_in_for is None]
    else:
        cards = [get_card(name) for name in options.models]
        wrong = [c.name for c in cards if options.stage not in (None, c.stage)]
        if wrong:
            raise UserError(f"{', '.join(wrong)} is not a {options.stage} card", "drop --stage or name that stage's cards")
    if options.checkpoint and len(cards) != 1:
        raise UserError("--checkpoint applies to one model", "name exactly one card with --models")
    # System by system (base, then post-trained): cards of one shape follow each other, so the
    # model pool builds (and compiles) each architecture once.
    return sorted(cards, key=lambda c: (order.get(c.system, 99), STAGES.index(c.stage)))


def family_module(card: ModelCard):
    """The card's ModelModule from the family registry (AR cards: the fast decoder ``models/llama.py``)."""
    return model_module(card.family)


def sampler_for(card: ModelCard):
    """The card's sampler: the one ``run``'s adapter uses too (``families.card_sampler``)."""
    return sampler_class(card_sampler(card))()


def fit_canvas(values: dict[str, Any], gen_len: int, user: dict[str, Any]) -> None:
    """Size a fixed canvas (LLaDA's gen_length) to the protocol's generation length.

    Every system must generate the same number of tokens in a timed request. A card whose canvas is
    larger (LLaDA base: 1024, though tables time 256 tokens) keeps its steps per token and its block
    length (capped at the canvas), so the algorithm is the card's, only its length is the protocol's.
    Settings the user passed with --decoding are left alone.
    """
    canvas = values.get("gen_length")
    if not canvas or "gen_length" in user or int(canvas) == gen_len:
        return
    canvas = int(canvas)
    values["gen_length"] = gen_len
    if "steps" in values and "steps" not in user:
        values["steps"] = max(1, round(int(values["steps"]) * gen_len / canvas))
    if "block_length" in values and "block_length" not in user:
        values["block_length"] = min(int(values["block_length"]), gen_len)


def sampler_config(card: ModelCard, sampler, options: SpeedOptions, eos_token_id: int | None) -> SamplerConfig:
    """The card's decoding for the prompt benchmark, then the variant's and the user's overrides;
    the generation length and end-of-sequence are the protocol's."""
    variants = getattr(sampler, "variants", {})
    if options.variant is not None and options.variant not in variants and options.variant != "reference":
        raise Skip(f"sampler '{sampler.name}' has no '{options.variant}' variant "
                   f"(it offers: {', '.join(variants) or 'none'})")
    # The one merge (evo_eval/settings.py): the variant and --decoding stand where run's --model-args do;
    # the protocol's length, EOS and seed stand where a request's kwargs do.
    values = merge(card, options.prompts, {**variants.get(options.variant, {}), **options.decoding})
    fit_canvas(values, options.gen_len, user=options.decoding)
    values.update(max_new_tokens=options.gen_len, eos_token_id=eos_token_id, seed=options.seed)
    if "fixed_length" in {f.name for f in fields(sampler.Config)}:  # block-bound answers (Fast-dLLM v2): cut to gen_len
        values.setdefault("fixed_length", True)
    try:
        return sampler.Config.from_dict(values)
    except ValueError as exc:
        raise UserError(f"{card.name}: {exc}", "fix --decoding or the card's decoding block") from None
