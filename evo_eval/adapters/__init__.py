"""lm-eval backends for every non-HF family, registered lazily (Inspect-style): naming a family costs
nothing until it is used.

Importing this package registers "evo", "llada", "mdlm", "bd3lm", "ard" and "dream" with lm-eval's model
registry as "module:Class" placeholders; each family module's own ``@register_model`` upgrades its
placeholder when imported. lm-eval loads its built-in backends only while its registry is empty, so
they are imported first, keeping "hf", "vllm", ... visible next to ours.
"""

from __future__ import annotations

from importlib import import_module

import lm_eval.models  # noqa: F401  (built-in backends first; see the docstring)
from lm_eval.api.registry import model_registry

from ..errors import UnknownNameError

ADAPTERS: dict[str, str] = {
    "evo": "evo_eval.adapters.evo:EvoAdapter",
    "llada": "evo_eval.adapters.llada:LLaDAAdapter",
    "mdlm": "evo_eval.adapters.mdlm:MDLMAdapter",
    "bd3lm": "evo_eval.adapters.bd3lm:BD3LMAdapter",
    "ard": "evo_eval.adapters.ard:ARDAdapter",
    "dream": "evo_eval.adapters.dream:DreamAdapter",
}

for _name, _target in ADAPTERS.items():
    if _name not in model_registry:
        model_registry.register(_name, target=_target)


def adapter_class(family: str):
    """The adapter class for a card family (imports its module on first use)."""
    if family not in ADAPTERS:
        raise UnknownNameError("model family", family, list(ADAPTERS))
    module, name = ADAPTERS[family].split(":")
    return getattr(import_module(module), name)
