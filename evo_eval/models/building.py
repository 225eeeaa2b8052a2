"""How every family's network comes into being: Auto-class registration and random weights.

* ``register_auto``: a family's config and model classes under its model type with transformers'
  ``AutoConfig`` and the Auto model classes it answers to, so ``from_pretrained`` needs no remote
  code; importing a family module twice registers the same classes again without error.
* ``random_weights``: a network built on the meta device in the target dtype and materialised
  directly on the target device (a 7-8B model never exists as a float32 CPU copy), then filled in
  place, parameter by parameter in ``named_parameters`` order, from one generator seeded on that
  device. Each family says how a parameter is filled (``normal_fill`` is the usual rule);
  ``device="meta"`` returns the unmaterialised network, for counting.
* ``inference_only``: eval mode, no gradients (what every loader and builder returns).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig

Fill = Callable[[str, nn.Parameter, torch.Generator], None]


def register_auto(config_cls: type, model_cls: type, *autos: Any) -> None:
    """``config_cls`` under its ``model_type`` with AutoConfig, and ``model_cls`` with each Auto class."""
    AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
    for auto in autos:
        auto.register(config_cls, model_cls, exist_ok=True)


def normal_fill(std: float, *, ones: tuple[str, ...], zeros: tuple[str, ...] = ()) -> Fill:
    """A parameter whose name ends with one of ``ones`` is one, with one of ``zeros`` zero, and any
    other is drawn from N(0, std)."""

    def fill(name: str, param: nn.Parameter, gen: torch.Generator) -> None:
        if name.endswith(ones):
            param.fill_(1.0)
        elif name.endswith(zeros):
            param.zero_()
        else:
            param.normal_(0.0, std, generator=gen)

    return fill


def hf_random_model(model_cls: type, config: Any, *, dtype: torch.dtype, device: torch.device | str, seed: int) -> Any:
    """A transformers model of ``config`` initialised by its own ``_init_weights`` under ``seed`` (the Qwen2
    layouts, Dream and Fast-dLLM v2, keep their authors' init), then cast to ``dtype``."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_cls(config)
    return model.to(dtype).eval()


def random_weights(make: Callable[[], nn.Module], *, dtype: torch.dtype, device: torch.device | str, seed: int,
                   fill: Fill) -> Any:
    """``make()`` with seeded random weights, allocated on ``device`` in ``dtype`` directly."""
    device = torch.device(device)
    with torch.device("meta"):
        model = make().to(dtype)
    if device.type == "meta":
        return inference_only(model)
    model.to_empty(device=device)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    with torch.no_grad():
        for name, param in model.named_parameters():
            fill(name, param, gen)
    return inference_only(model)


def meta_parameter_count(random_model: Callable[..., nn.Module], shape: dict[str, Any]) -> int:
    """Parameters of the architecture a card's shape describes, counted on the meta device."""
    return sum(p.numel() for p in random_model(shape, dtype=torch.bfloat16, device="meta").parameters())


def inference_only(model: Any) -> Any:
    model.eval()
    model.requires_grad_(False)
    return model
