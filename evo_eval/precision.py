"""The dtype a run uses, checked up front, and the one line that says when it is not the card's."""

from __future__ import annotations

from typing import Any

from .devices import DTYPES, resolve_device, resolve_dtype
from .errors import UnknownNameError


def check_dtype(name: str | None) -> None:
    if name is not None and name not in DTYPES:
        raise UnknownNameError("dtype", name, list(DTYPES), hint="in --dtype")


def effective_dtype(card: Any, requested: str | None, device: str | None) -> str:
    """The dtype the weights will run in (devices.resolve_dtype): what the user asked, else the card's
    on an accelerator and float32 on a CPU."""
    return str(resolve_dtype(requested, resolve_device(device), card.dtype)).removeprefix("torch.")


def dtype_change(card: Any, requested: str | None, device: str | None) -> str | None:
    """Why the run's dtype differs from the card's, as one sentence; None when it is the card's."""
    used = effective_dtype(card, requested, device)
    if used == card.dtype:
        return None
    if requested is not None:
        return f"model card {card.name} is {card.dtype}; it runs in {used} because --dtype {requested} was given"
    return (f"model card {card.name} is {card.dtype}; it runs in {used} because the device is a CPU "
            f"(bfloat16 matmuls are slow or missing on many CPUs) — pass --dtype {card.dtype} to keep the card's")
