"""Reading a family's ``save_pretrained`` folder (or hub id) with one-line errors.

* ``looks_like_hub_id`` / ``resolve_folder``: a local folder with config.json, or an ``owner/name``
  hub id; anything else is a CheckpointError naming the family's fix;
* ``read_family_config``: the checkpoint's config through ``AutoConfig`` (its ``auto_map`` never
  executed), which must be the family's class and describe something the family implements;
* ``load_weights``: ``from_pretrained`` onto the device in the dtype, where missing, unexpected or
  mis-shaped weights are a CheckpointError rather than transformers' warning;
* ``load_qwen2_layout`` / ``check_card_fit``: the same for the public Qwen2-layout models (Dream-v0,
  Fast-dLLM v2), whose configs are transformers' own Qwen2 classes rather than the project's shape configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, first_line
from .building import inference_only


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` not starting like a path. Dots are allowed: hub names carry versions
    (meta-llama/Llama-3.1-8B, GSAI-ML/LLaDA-1.5)."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def resolve_folder(checkpoint: str | Path, missing_fix: str, *, kind: str = "save_pretrained folder") -> str:
    """A local folder holding config.json, or a hub id; anything else is a CheckpointError."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path} has no config.json, so it is not a {kind}",
                                  "point at the folder that holds config.json and the *.safetensors weights")
        return str(path)
    if looks_like_hub_id(str(checkpoint)):
        return str(checkpoint)
    raise CheckpointError(f"checkpoint folder {checkpoint} does not exist", missing_fix)


def read_family_config(where: str, checkpoint: str | Path, revision: str | None, config_cls: type, family: str, *,
                       unreadable_fix: str, other_fix: str, problem_fix: str) -> Any:
    """The config of the resolved checkpoint ``where``: a ``config_cls`` whose ``problem()`` is None."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(where, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the config of {checkpoint}: {first_line(exc)}", unreadable_fix) from None
    if not isinstance(config, config_cls):
        raise CheckpointError(f"{checkpoint} is a '{getattr(config, 'model_type', '?')}' checkpoint, not {family}",
                              other_fix)
    problem = config.problem()
    if problem:
        raise CheckpointError(f"{checkpoint} asks for {family} option {problem}, which this loader does not implement",
                              problem_fix)
    return config


def load_weights(model_cls: Any, where: str, checkpoint: str | Path, *, config: Any, card: Any, revision: str | None,
                 device: torch.device | str, dtype: torch.dtype) -> Any:
    """``model_cls.from_pretrained(where)`` on ``device`` in ``dtype``, its ``config`` of the ``card``'s
    architecture (when a card is given) and every weight fitting that config."""
    if card is not None:
        config.check_fits(card.shape, card.name, str(checkpoint))
    device = torch.device(device)
    try:
        model, info = model_cls.from_pretrained(
            where, config=config, revision=revision, dtype=dtype, output_loading_info=True,
            device_map={"": str(device)} if device.type != "cpu" else None)
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"cannot load the weights of {checkpoint}: {first_line(exc)}",
                              "check that config.json belongs to these weights") from None
    problems = [(kind, keys) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
                if (keys := list(info.get(kind) or []))]
    if problems:
        kind, keys = problems[0]
        example = keys[0][0] if isinstance(keys[0], tuple) else keys[0]
        raise CheckpointError(f"{checkpoint} does not fit its config: {len(keys)} {kind.replace('_', ' ')}, "
                              f"e.g. {example}", "check that config.json belongs to these weights")
    return inference_only(model.to(device))


def load_qwen2_layout(model_cls: Any, config_cls: Any, checkpoint: str | Path, *, revision: str | None,
                      device: torch.device | str, dtype: torch.dtype, name: str, source: str,
                      validate: Any) -> Any:
    """``model_cls`` from a hub id or local folder in its published layout: ``name`` says whose config or
    weights could not be read, ``source`` what to pass instead; ``validate(config)`` raises a
    CheckpointError for a readable config of another model."""
    try:
        config = config_cls.from_pretrained(str(checkpoint), revision=revision)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read a {name} config from {checkpoint}: {first_line(exc)}",
                              f"pass {source} or a folder with its config.json") from None
    validate(config)
    try:
        model = model_cls.from_pretrained(str(checkpoint), config=config, revision=revision, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the {name} weights of {checkpoint}: {first_line(exc)}",
                              "pass a checkpoint in the published layout (model.layers.N..., lm_head)") from None
    return model.to(device).eval()


def check_card_fit(config: Any, card: Any, keys: tuple[str, ...], checkpoint: str | Path) -> None:
    """One line when a loaded config's architecture (``keys`` but the vocabulary size, which the
    tokenizer check owns) differs from the card's shape."""
    wrong = [f"{k} {getattr(config, k)} (card: {card.shape[k]})" for k in keys
             if k in card.shape and k != "vocab_size" and getattr(config, k) != card.shape[k]]
    if wrong:
        raise CheckpointError(f"{checkpoint} does not fit model card {card.name}: {'; '.join(wrong)}",
                              "pass a checkpoint of the card's shape, or the card that matches it")
