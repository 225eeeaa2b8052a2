"""``evo-eval speed``: the matched timing protocol (see ``measure``)."""
