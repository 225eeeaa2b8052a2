"""lm-eval backends for every non-HF family, registered lazily (Inspect-style): naming a family costs
nothing until it is used.

Importing this package registers each adapter family of the registry (``evo_eval.families``) with
lm-eval's model registry as a "module:Class" placeholder; each family module's own
``@register_model`` upgrades its placeholder when imported. lm-eval loads its built-in backends only
while its registry is empty, so they are imported first, keeping "hf", "vllm", ... visible next to ours.
"""

from __future__ import annotations

import lm_eval.models  # noqa: F401  (built-in backends first; see the docstring)
from lm_eval.api.registry import model_registry

from ..families import FAMILIES, family, load

for _family in FAMILIES.values():
    if not _family.is_hf and _family.name not in model_registry:
        model_registry.register(_family.name, target=_family.adapter)


def adapter_class(name: str):
    """The lm-eval backend class for a card family (imports its module on first use)."""
    return load(family(name).adapter)
