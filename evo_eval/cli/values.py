"""Option values as typed on the command line, parsed into what the APIs take (one rule each,
shared by every command)."""

from __future__ import annotations

from typing import Any

from ..errors import UserError


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _kv(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    from lm_eval.utils import simple_parse_args_string

    try:
        return simple_parse_args_string(value)
    except ValueError:
        raise UserError(f"cannot parse '{value}'", "write key=value pairs separated by commas") from None


def _limit(limit: float | None) -> int | float | None:
    return int(limit) if limit is not None and limit >= 1 and float(limit).is_integer() else limit


def _batch(value: str) -> int | str:
    if value.isdigit() and int(value) > 0:
        return int(value)
    if value == "auto" or value.startswith("auto:"):
        return value
    raise UserError(f"--batch-size must be a positive integer or auto, got '{value}'", "pass e.g. --batch-size 8")
