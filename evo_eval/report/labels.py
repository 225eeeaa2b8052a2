"""What speed figures were measured on, said truthfully wherever they are shown (tables, figure, page).

"Synthetic weights at the paper's shapes" is true only of a model timed at its card's (the paper's)
shape; a CPU smoke run at a family's tiny test shape says so instead.
"""

from __future__ import annotations

from typing import Any

from ..cards import ModelCard


def at_paper_shape(record: dict[str, Any], cards: dict[str, ModelCard]) -> bool:
    card = cards.get(record.get("model"))
    shape = record.get("shape") or {}
    return card is not None and all(shape.get(k) == card.shape.get(k) for k in ("n_layers", "d_model"))


def speed_weights_notes(records: list[dict[str, Any]], cards: dict[str, ModelCard], prefix: str) -> list[str]:
    notes = []
    synthetic = [r for r in records if r.get("synthetic")]
    paper_shape = [r for r in synthetic if at_paper_shape(r, cards)]
    tiny = [r for r in synthetic if not at_paper_shape(r, cards)]
    if paper_shape:
        notes.append(f"{prefix}: synthetic weights at the paper's shapes (fixed generation length, EOS disabled)"
                     + ("" if not tiny else f" for {', '.join(sorted(r['model'] for r in paper_shape))}"))
    if tiny:
        notes.append(f"{prefix}: synthetic weights at small test shapes, not the paper's, for "
                     + ", ".join(sorted(r["model"] for r in tiny)) + ": timings say nothing about 8B models")
    return notes
