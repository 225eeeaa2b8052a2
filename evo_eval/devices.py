"""Where and in what precision a model runs: one resolution of --device and dtype for run, speed and
every adapter. Light on purpose (torch only): `speed` runs on machines without lm-eval."""

from __future__ import annotations

import torch

from .errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | None) -> torch.device:
    """The device to run on: the given one if torch can use it here, else CUDA when visible, else CPU.

    Checked up front: lm-eval's HF backend would silently fall back or fail deep inside a run.
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"--device '{device}' is not a device name torch knows", "use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device} was given but no CUDA GPU is visible here",
                            "drop --device to run on the CPU, or run on a machine with a GPU")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)",
                            f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif parsed.type not in ("cpu", "mps"):
        raise UserError(f"--device {device} is not supported", "use cpu, cuda or cuda:N")
    return parsed


def resolve_dtype(name: str | torch.dtype | None, device: torch.device, default: str | None = None) -> torch.dtype:
    """The given dtype; unset, float32 on a CPU (bfloat16 matmuls are slow or missing on many CPUs) and
    the card's dtype (``default``, else bfloat16) on an accelerator."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        if device.type == "cpu":
            return torch.float32
        name = default or "bfloat16"
    if name not in DTYPES:
        raise ValueError(f"unknown dtype '{name}'; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]
