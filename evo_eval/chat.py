"""The instruct stage renders every prompt through the tokenizer's chat template: check it is there
before any weights load (lm-eval would fail deep inside the first request, after the model loaded).

transformers saves a template in the tokenizer folder as ``chat_template.jinja`` (recent versions),
as the ``chat_template`` entry of ``tokenizer_config.json`` (older ones), or as extra named templates
under ``additional_chat_templates/``. A hub id that is not a local folder cannot be looked into
without the hub; it is checked when its tokenizer loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import CheckpointError


def has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or any((folder / "additional_chat_templates").glob("*.jinja")):
        return True
    config = folder / "tokenizer_config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # an unreadable tokenizer config fails on load, with its own message
    return bool(isinstance(data, dict) and data.get("chat_template"))


def check_chat_template(card: Any, checkpoint: str) -> None:
    """A card that renders prompts through a chat template needs a tokenizer that has one."""
    if not card.chat_template:
        return
    source = card.tokenizer or checkpoint
    folder = Path(source).expanduser()
    if not folder.is_dir() or has_chat_template(folder):
        return
    base = sibling_card(card, "base")
    instead = f", or run the base stage with --model {base}" if base else ""
    raise CheckpointError(
        f"the tokenizer in {folder} has no chat template, and {card.name} renders every prompt through one "
        f"(the {card.stage} stage)",
        f"pass the post-trained checkpoint, whose tokenizer_config.json or chat_template.jinja has it{instead}")


def sibling_card(card: Any, stage: str) -> str | None:
    """The card of the same system for ``stage``, if one exists (so a hint never names a missing card)."""
    from .cards import all_cards

    if card.stage == stage:
        return card.name
    named = card.name + "-instruct" if stage == "instruct" else card.name.removesuffix("-instruct")
    cards = all_cards()
    if named in cards and cards[named].stage == stage:
        return named
    same = [c.name for c in cards.values() if c.system == card.system and c.stage == stage]
    return same[0] if same else None
