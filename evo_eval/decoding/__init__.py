"""Samplers, looked up by name without importing every algorithm up front (the lazy registry of
``evo_eval.families``: a module is imported only when its sampler is asked for)."""

from ..families import SAMPLERS, sampler_class
from .base import DecodeStats, SampleOutput, Sampler, SamplerConfig, StopFn


def sampler_names() -> list[str]:
    return sorted(SAMPLERS)


def get_sampler(name: str) -> Sampler:
    return sampler_class(name)()


__all__ = ["DecodeStats", "SampleOutput", "Sampler", "SamplerConfig", "StopFn", "get_sampler", "sampler_names"]
