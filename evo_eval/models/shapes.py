"""A card's ``shape`` block and a family's config: the checks every family makes, and the mapping.

``reject_unknown_keys`` and ``require_keys`` are the two checks every family's shape reader makes,
with the same messages. ``CardShapeConfig`` is the whole mapping for a transformers config whose
fields a shape block names one to one (Evo, LLaDA, ARD): ``from_shape``, ``to_shape`` and
``check_fits`` (does a checkpoint's config have the card's architecture). A family sets
``SHAPE_KEYS`` (card key -> config attribute, in the order the fix lists them),
``ARCHITECTURE_KEYS`` (the keys that decide whether weights fit), ``REQUIRED_SHAPE_KEYS``,
``ARCHITECTURE`` and ``FAMILY`` (its name in messages), and may override ``_from_shape_values``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import CheckpointError, UserError


def reject_unknown_keys(shape: dict[str, Any], known: Iterable[str], label: str) -> None:
    """Keys other than ``known`` (and the card's ``architecture`` label) are a UserError listing ``known``."""
    known = list(known)
    unknown = sorted(set(shape) - set(known) - {"architecture"})
    if unknown:
        raise UserError(f"shape key(s) {', '.join(unknown)} are not {label} shape fields",
                        f"use only {', '.join(known)} in the card's shape block")


def require_keys(shape: dict[str, Any], required: Iterable[str]) -> None:
    missing = [k for k in required if k not in shape]
    if missing:
        raise UserError(f"the card's shape lacks {', '.join(missing)}", "add them to the card's shape block")


class CardShapeConfig:
    """Mixed into a family's transformers config (before ``PreTrainedConfig``); see the module docstring."""

    @classmethod
    def from_shape(cls, shape: dict[str, Any], **extra: Any) -> Any:
        """The config of a card's ``shape`` block (keys as in the family's resources/cards/*.yaml)."""
        reject_unknown_keys(shape, cls.SHAPE_KEYS, cls.FAMILY)
        require_keys(shape, cls.REQUIRED_SHAPE_KEYS)
        if shape.get("architecture", cls.ARCHITECTURE) != cls.ARCHITECTURE:
            raise UserError(f"shape architecture '{shape['architecture']}' is not {cls.ARCHITECTURE}",
                            f"set architecture: {cls.ARCHITECTURE} in the card")
        return cls._from_shape_values({cls.SHAPE_KEYS[k]: v for k, v in shape.items() if k in cls.SHAPE_KEYS}, extra)

    @classmethod
    def _from_shape_values(cls, values: dict[str, Any], extra: dict[str, Any]) -> Any:
        """The config of those attribute values; one the family does not implement is a UserError."""
        config = cls(**values, **extra)
        problem = config.problem()
        if problem:
            raise UserError(f"the card's shape is not a valid {cls.FAMILY} architecture ({problem})",
                            "fix the shape block")
        return config

    def to_shape(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.ARCHITECTURE}
        for key, attr in self.SHAPE_KEYS.items():
            out[key] = getattr(self, attr)
        return out

    def check_fits(self, shape: dict[str, Any], card: str, where: str) -> None:
        """Raise a one-line CheckpointError if this checkpoint's architecture is not the card's."""
        ours = self.to_shape()
        wanted = type(self).from_shape(shape).to_shape()
        for key in self.ARCHITECTURE_KEYS:
            if ours[key] != wanted[key]:
                raise CheckpointError(
                    f"checkpoint {where} has {key}={ours[key]} but card {card} has {key}={wanted[key]}",
                    f"pass a checkpoint of the {card} architecture, or a card whose shape matches it")
