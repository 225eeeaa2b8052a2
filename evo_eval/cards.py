"""Model cards: one YAML per (system, stage) in ``evo_eval/resources/cards/`` (or EVO_EVAL_CARDS), looked up by name.

A card says everything the harness needs to run or time a model without reading code: which
adapter family runs it, where its checkpoint is (a hub id with revision, or none where no public
weights exist and the user must pass ``--checkpoint``), its dtype, the architecture's shape (enough
to build it with random weights for timing), decoding defaults per benchmark, how it scores
likelihoods, and the paper's column header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import UnknownNameError, UserError
from .families import FAMILIES, SAMPLERS
from .paths import cards_dir

STAGES = ("base", "instruct")
DTYPES = ("float32", "bfloat16", "float16")

_REQUIRED = ("name", "system", "stage", "family", "column", "dtype", "shape")


@dataclass(frozen=True)
class ModelCard:
    name: str
    system: str  # groups a system's base and post-trained cards, e.g. "llada"
    stage: str  # "base" or "instruct"
    family: str  # a family of the registry (evo_eval.families)
    column: str  # the paper's column header, e.g. "LLaDA 8B"
    dtype: str
    shape: dict[str, Any]
    checkpoint: str | None = None  # hub id or local path; None: user must pass --checkpoint
    revision: str | None = None
    tokenizer: str | None = None  # defaults to the checkpoint's own
    decoding: dict[str, Any] = field(default_factory=dict)  # {"default": {...}, "tasks": {bench: {...}}}
    likelihood: dict[str, Any] = field(default_factory=dict)
    chat_template: bool = False  # post-trained cards render prompts through the chat template
    paper: dict[str, Any] = field(default_factory=dict)  # paper facts: params, order, post-training
    sources: list[str] = field(default_factory=list)
    notes: str = ""
    # A public model shown beside a paper column it stands in for (e.g. "mdlm"), never in its place:
    # not in paper_order(); report/tables.py adds it after the paper's columns when asked.
    stand_in_for: str | None = None
    path: Path | None = None

    @property
    def needs_checkpoint(self) -> bool:
        return self.checkpoint is None

    @property
    def is_hf(self) -> bool:
        return FAMILIES[self.family].is_hf

    def decoding_for(self, benchmark: str | None = None) -> dict[str, Any]:
        """Decoding settings in force for a benchmark: the card's default, then its per-task entry."""
        merged = dict(self.decoding.get("default", {}))
        if benchmark is not None:
            merged.update(self.decoding.get("tasks", {}).get(benchmark, {}))
        return merged

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "path"}
        out["path"] = str(self.path) if self.path else None
        return out


def _bad_card(path: Path, problem: str) -> UserError:
    return UserError(f"model card {path.name} is invalid: {problem}", f"fix the YAML in {path}")


def load_card(path: Path) -> ModelCard:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise _bad_card(path, f"not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise _bad_card(path, "not UTF-8 text") from None
    if not isinstance(raw, dict):
        raise _bad_card(path, "expected a mapping of fields at the top level")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise _bad_card(path, f"missing field(s) {', '.join(missing)}")
    unknown = sorted(set(raw) - (set(ModelCard.__dataclass_fields__) - {"path"}))
    if unknown:
        raise _bad_card(path, f"unknown field(s) {', '.join(unknown)}")
    if raw["stage"] not in STAGES:
        raise _bad_card(path, f"stage '{raw['stage']}' is not one of {', '.join(STAGES)}")
    if raw["family"] not in FAMILIES:  # the registry's families (evo_eval.families)
        raise _bad_card(path, f"family '{raw['family']}' is not one of {', '.join(FAMILIES)}")
    if raw["dtype"] not in DTYPES:
        raise _bad_card(path, f"dtype '{raw['dtype']}' is not one of {', '.join(DTYPES)}")
    if not isinstance(raw["shape"], dict) or not raw["shape"]:
        raise _bad_card(path, "shape must be a non-empty mapping")
    _check_types(path, raw)
    if path.stem != raw["name"]:
        raise _bad_card(path, f"file name must match its name field '{raw['name']}'")
    return ModelCard(**raw, path=path)


def _check_types(path: Path, raw: dict[str, Any]) -> None:
    """Field types, so a wrong one is this one line rather than an AttributeError mid-run."""
    for name in ("name", "system", "column"):
        if not isinstance(raw[name], str) or not raw[name]:
            raise _bad_card(path, f"{name} must be a non-empty string")
    for name in ("checkpoint", "revision", "tokenizer", "stand_in_for"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise _bad_card(path, f"{name} must be a string or null, got {raw[name]!r}")
    for name in ("decoding", "likelihood", "paper"):
        if not isinstance(raw.get(name, {}), dict):
            raise _bad_card(path, f"{name} must be a mapping")
    decoding = raw.get("decoding", {})
    if not set(decoding) <= {"default", "tasks"}:
        raise _bad_card(path, "decoding takes only 'default' and 'tasks'")
    if not isinstance(decoding.get("default", {}), dict) or not isinstance(decoding.get("tasks", {}), dict) or \
            not all(isinstance(v, dict) for v in decoding.get("tasks", {}).values()):
        raise _bad_card(path, "decoding.default and each decoding.tasks entry must be mappings")
    if any("sampler" in v for v in decoding.get("tasks", {}).values()):
        raise _bad_card(path, "sampler is set per card (decoding.default), not per benchmark")
    sampler = decoding.get("default", {}).get("sampler")
    if sampler is not None and sampler not in SAMPLERS:
        raise _bad_card(path, f"sampler '{sampler}' is not one of {', '.join(sorted(SAMPLERS))}")
    if not isinstance(raw.get("chat_template", False), bool):
        raise _bad_card(path, "chat_template must be true or false")
    if not isinstance(raw.get("sources", []), list) or not isinstance(raw.get("notes", ""), str):
        raise _bad_card(path, "sources must be a list and notes a string")


@lru_cache(maxsize=None)
def _all_cards(directory: str) -> dict[str, ModelCard]:
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"model card folder {root} does not exist", "set EVO_EVAL_CARDS to a folder of card YAMLs")
    cards = {}
    for path in sorted(root.glob("*.yaml")):
        card = load_card(path)
        cards[card.name] = card
    return cards


def all_cards() -> dict[str, ModelCard]:
    return _all_cards(str(cards_dir()))


def get_card(name: str) -> ModelCard:
    """A card by name, or a card YAML file by path (a user's own model, or a tiny stand-in)."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name).expanduser()
        if not path.is_file():
            raise UserError(f"model card file {name} does not exist", "pass a card name or an existing YAML path")
        return load_card(path)
    cards = all_cards()
    if name not in cards:
        # Evo's separately trained ablation variants (Figures 3 and 4): by name, outside the paper's
        # columns, so tables, `models` and `speed all` keep to the seven systems.
        variant = cards_dir() / "ablation" / f"{name}.yaml"
        if variant.is_file():
            return load_card(variant)
        raise UnknownNameError("model", name, list(cards), hint="`evo-eval models` lists them")
    return cards[name]


def paper_order() -> list[str]:
    """Systems in the paper's column order (Table 1): the order key in each card's paper block."""
    systems = {}
    for card in all_cards().values():
        if card.stand_in_for is None:
            systems.setdefault(card.system, card.paper.get("order", 99))
    return sorted(systems, key=lambda s: systems[s])


def write_card(card: ModelCard, directory: Path) -> Path:
    """Save a card as ``<directory>/<name>.yaml`` (e.g. a tiny stand-in) so ``--model PATH`` can run it."""
    data = card.to_dict()
    data.pop("path", None)
    path = Path(directory) / f"{card.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path
