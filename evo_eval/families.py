"""The family registry: one record per model family, and everything else derives from it.

A family is what a card's ``family:`` names. Its record says which lm-eval backend (adapter) runs it,
which sampler generates and which estimator scores, which module builds its network (the
``ModelModule`` contract below: ``speed`` times it, the tiny builders write it), the paper cards a
tiny stand-in copies, and the cheap settings of that stand-in. ``adapters/__init__`` (lm-eval's
registry), ``decoding.get_sampler``, ``cards`` (valid families), ``tiny`` and ``speed`` read it here;
no other code builds module names from a family string.

Entries are ``"module:attribute"`` strings, imported on first use (Inspect's lazy registry): naming a
family costs nothing, and this module imports neither torch nor lm-eval, so every layer may read it.
docs/extending.md lists what adding a family takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import UnknownNameError, UserError

if TYPE_CHECKING:
    import torch

    from .cards import ModelCard


@runtime_checkable
class ModelModule(Protocol):
    """What ``models/<family>.py`` offers the harness beyond its checkpoint loader (which the family's
    adapter calls): a shape small enough for a CPU, and the network at any shape with seeded random
    weights (timing with synthetic weights, tiny checkpoints for the demo and the tests)."""

    TINY_SHAPE: dict[str, Any]

    def random_model(self, shape: dict[str, Any], *, dtype: "torch.dtype", device: "torch.device | str",
                     seed: int = 0) -> "torch.nn.Module": ...


# Sampler name (what a card's ``decoding.default.sampler`` says) -> class.
SAMPLERS: dict[str, str] = {
    "ar": "evo_eval.decoding.ar:ARSampler",
    "evo": "evo_eval.decoding.evo:EvoSampler",
    "llada": "evo_eval.decoding.masked:LLaDASampler",
    "mdlm": "evo_eval.decoding.mdlm:MDLMSampler",
    "bd3lm": "evo_eval.decoding.block:BD3LMSampler",
    "ard": "evo_eval.decoding.ard:ARDSampler",
    "dream": "evo_eval.decoding.dream:DreamSampler",
    "fast_dllm_v2": "evo_eval.decoding.fast_dllm_v2:FastDLLMv2Sampler",
}


@dataclass(frozen=True)
class Family:
    name: str
    adapter: str  # lm-eval backend "module:Class" (hf: lm-eval's own HFLM, rank-fixed)
    sampler: str  # a SAMPLERS name: the default when a card names none
    scorer: str | None  # "module:Class" of the likelihood estimator (None: the backend's own)
    model: str  # the ModelModule: "evo_eval.models.<name>"
    paper_cards: tuple[str, str] | None = None  # (base, instruct) cards a tiny stand-in copies
    tiny_build: str | None = None  # "module:function"(model_module, out_dir, tokenizer_dir, seed) -> Path
    tiny_decoding: dict[str, Any] = field(default_factory=dict)  # cheap sizes; the algorithm stays the card's
    tiny_likelihood: dict[str, Any] = field(default_factory=dict)

    @property
    def is_hf(self) -> bool:
        return self.name == "hf"


FAMILIES: dict[str, Family] = {f.name: f for f in (
    # Autoregressive cards run through lm-eval's HF backend unchanged; speed times them on the fast
    # decoder of models/llama.py with the "ar" sampler.
    Family("hf", adapter="evo_eval.adapters.hf:RankedHFLM", sampler="ar", scorer=None, model="evo_eval.models.llama"),
    Family("evo", adapter="evo_eval.adapters.evo:EvoAdapter", sampler="evo",
           scorer="evo_eval.scoring.evo:EvoScorer", model="evo_eval.models.evo",
           paper_cards=("evo-8b", "evo-8b-instruct"), tiny_build="evo_eval.tiny:build_random_checkpoint",
           tiny_decoding={"k_max": 4}, tiny_likelihood={"mc_num": 2, "batch": 2}),
    Family("llada", adapter="evo_eval.adapters.llada:LLaDAAdapter", sampler="llada",
           scorer="evo_eval.scoring.llada:LLaDAScorer", model="evo_eval.models.llada",
           paper_cards=("llada-8b", "llada-8b-instruct"), tiny_build="evo_eval.tiny:build_llada_checkpoint",
           tiny_decoding={"gen_length": 0, "steps": 8, "block_length": 8}, tiny_likelihood={"mc_num": 4, "batch": 4}),
    Family("mdlm", adapter="evo_eval.adapters.mdlm:MDLMAdapter", sampler="mdlm",
           scorer="evo_eval.scoring.mdlm:MDLMScorer", model="evo_eval.models.mdlm",
           paper_cards=("mdlm-7b", "mdlm-7b-instruct"), tiny_build="evo_eval.tiny:build_dit_checkpoint",
           tiny_decoding={"steps": 8}, tiny_likelihood={"mc_num": 4, "batch": 4}),
    Family("bd3lm", adapter="evo_eval.adapters.bd3lm:BD3LMAdapter", sampler="bd3lm",
           scorer="evo_eval.scoring.bd3lm:BD3LMScorer", model="evo_eval.models.bd3lm",
           paper_cards=("bd3lm-7b", "bd3lm-7b-instruct"), tiny_build="evo_eval.tiny:build_dit_checkpoint",
           tiny_decoding={"steps": 8}, tiny_likelihood={"mc_num": 4, "batch": 4}),
    Family("ard", adapter="evo_eval.adapters.ard:ARDAdapter", sampler="ard",
           scorer="evo_eval.scoring.ard:ARDScorer", model="evo_eval.models.ard",
           paper_cards=("ard-7b", "ard-7b-instruct"), tiny_build="evo_eval.tiny:build_random_checkpoint",
           tiny_decoding={"gen_timesteps": 4}, tiny_likelihood={"mc_num": 4, "batch": 4}),
    # Dream-v0 7B: a public masked-diffusion model, shown beside the paper's MDLM column as a labelled
    # stand-in (its cards' stand_in_for), never in its place.
    Family("dream", adapter="evo_eval.adapters.dream:DreamAdapter", sampler="dream",
           scorer="evo_eval.scoring.dream:DreamScorer", model="evo_eval.models.dream",
           paper_cards=("dream-v0-7b", "dream-v0-7b-instruct"), tiny_build="evo_eval.tiny:build_dream_checkpoint",
           tiny_decoding={"gen_length": 0, "steps": 0}, tiny_likelihood={"mc_num": 4, "batch": 4}),
    # Fast-dLLM v2 7B: a public block-diffusion model (post-trained only, so one instruct card), shown
    # beside the paper's BD3-LM column as a labelled stand-in, never in its place. One block per tiny answer.
    Family("fast_dllm_v2", adapter="evo_eval.adapters.fast_dllm_v2:FastDLLMv2Adapter", sampler="fast_dllm_v2",
           scorer="evo_eval.scoring.fast_dllm_v2:FastDLLMv2Scorer", model="evo_eval.models.fast_dllm_v2",
           paper_cards=("fast-dllm-v2-7b", "fast-dllm-v2-7b"), tiny_build="evo_eval.tiny:build_fast_dllm_v2_checkpoint",
           tiny_decoding={"gen_length": 32, "stop_token_id": None}),  # tiny: the tokenizer's EOS stops
)}


def load(target: str) -> Any:
    """The attribute a ``"module:attribute"`` entry names (imports its module on first use)."""
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise UnknownNameError("model family", name, list(FAMILIES))
    return FAMILIES[name]


def model_module(name: str) -> ModelModule:
    return import_module(family(name).model)


def sampler_class(name: str) -> type:
    if name not in SAMPLERS:
        raise UnknownNameError("sampler", name, sorted(SAMPLERS))
    return load(SAMPLERS[name])


def card_sampler(card: "ModelCard") -> str:
    """The sampler a card runs with, for ``run`` and ``speed`` alike: its ``decoding.default.sampler``,
    else its family's. One per card: a per-benchmark entry may change settings, not the algorithm."""
    return card.decoding.get("default", {}).get("sampler") or family(card.family).sampler


def scorer_class(name: str) -> type:
    target = family(name).scorer
    if target is None:
        raise UserError(f"family '{name}' scores through its backend's own likelihood", "use an adapter family")
    return load(target)
