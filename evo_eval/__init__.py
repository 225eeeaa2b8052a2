"""evo-eval: Evo and its baselines under one matched evaluation protocol."""

__version__ = "0.1.0"
