"""The network and tokenizer a speed run times: synthetic weights at the card's shape (on a CPU, the
family's TINY_SHAPE) with the labelled proxy tokenizer, or a checkpoint through the family's own
loader; a pool keeps the last build, so cards of one shape share it."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..cards import ModelCard
from ..errors import UserError
from .options import Skip


@dataclass
class Built:
    model: torch.nn.Module
    tokenizer: Any
    shape: dict[str, Any]
    tokenizer_label: str
    eos_token_id: int | None
    until: tuple[str, ...]
    tied: bool


class ModelPool:
    """Keeps the last built model, so base and post-trained cards of one shape share one build."""

    def __init__(self):
        self._key: Any = None
        self._built: Built | None = None

    def get(self, key: Any, build: Callable[[], Built]) -> Built:
        if key != self._key:
            self.clear()
            self._built, self._key = build(), key
        return self._built

    def clear(self) -> None:
        self._built, self._key = None, None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _vocab_size(model: torch.nn.Module, shape: dict[str, Any]) -> int:
    if "vocab_size" in shape:
        return int(shape["vocab_size"])
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            return module.num_embeddings
    raise UserError("cannot tell the model's vocabulary size", "add vocab_size to the family's shape")


def build_synthetic(card: ModelCard, module, device: torch.device, dtype: torch.dtype, seed: int) -> Built:
    from ..data.speed_prompts import ProxyTokenizer, proxy_limit

    shape = dict(card.shape) if device.type == "cuda" else dict(module.TINY_SHAPE)
    model = module.random_model(shape, dtype=dtype, device=device, seed=seed)
    model.eval()
    tokenizer = ProxyTokenizer(proxy_limit(shape, _vocab_size(model, shape)))
    return Built(model, tokenizer, shape, ProxyTokenizer.label, None, (), _tied(model, shape))


def _tied(model: torch.nn.Module, shape: dict[str, Any]) -> bool:
    """Whether the output head reads the embedding table (then it counts as read per forward)."""
    config = getattr(model, "config", None)
    return bool(shape.get("tie_embeddings") or getattr(config, "tie_word_embeddings", False))


def build_checkpoint(card: ModelCard, checkpoint: str | None, device: torch.device, dtype: torch.dtype) -> Built:
    from ..data.speed_prompts import GSM8K_UNTIL

    path = checkpoint or card.checkpoint
    if not path:
        raise Skip(f"no public checkpoint for {card.name}; pass --checkpoint DIR")
    if card.is_hf:
        from transformers import AutoTokenizer

        from ..models.llama_checkpoint import load_pretrained, resolve_checkpoint

        model = load_pretrained(path, revision=card.revision, dtype=dtype, device=device)
        tokenizer = AutoTokenizer.from_pretrained(str(resolve_checkpoint(path, card.revision)))
    else:  # every other family loads through its adapter, the one place that knows its checkpoint layout
        from ..adapters import adapter_class

        adapter = adapter_class(card.family)(pretrained=path, card=card, device=str(device), dtype=dtype)
        model, tokenizer = adapter.model, adapter.tokenizer
    shape = getattr(model, "shape", None)
    shape = shape.as_dict() if hasattr(shape, "as_dict") else dict(card.shape)
    return Built(model, tokenizer, shape, f"checkpoint ({type(tokenizer).__name__})", tokenizer.eos_token_id,
                 GSM8K_UNTIL, _tied(model, shape))
