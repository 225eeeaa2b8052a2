"""Benchmark data: the catalog of sources, the converters, the local mirror, the tasks' loader, and the
prompts rendered from the mirror (for prompt parity and for ``speed``)."""
