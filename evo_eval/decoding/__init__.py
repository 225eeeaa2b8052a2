"""Samplers, looked up by name without importing every algorithm up front (a lazy registry)."""

from importlib import import_module

from .base import DecodeStats, SampleOutput, Sampler, SamplerConfig, StopFn

# name -> "module:Class"; a module is imported only when its sampler is asked for.
_REGISTRY: dict[str, str] = {
    "ar": "evo_eval.decoding.ar:ARSampler",
    "evo": "evo_eval.decoding.evo:EvoSampler",
    "llada": "evo_eval.decoding.masked:LLaDASampler",
    "mdlm": "evo_eval.decoding.mdlm:MDLMSampler",
    "bd3lm": "evo_eval.decoding.block:BD3LMSampler",
    "ard": "evo_eval.decoding.ard:ARDSampler",
    "dream": "evo_eval.decoding.dream:DreamSampler",
}


def sampler_names() -> list[str]:
    return sorted(_REGISTRY)


def get_sampler(name: str) -> Sampler:
    if name not in _REGISTRY:
        raise KeyError(f"unknown sampler '{name}'; known: {', '.join(sampler_names())}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(import_module(module), cls)()


__all__ = ["DecodeStats", "SampleOutput", "Sampler", "SamplerConfig", "StopFn", "get_sampler", "sampler_names"]
