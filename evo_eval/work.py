"""What a request costs before it runs: forwards, positions computed, attention pairs.

Every sampler and scorer states its own cost next to its algorithm (``Sampler.work``,
``Scorer.work``), in the terms its stats record when it runs: ``nfe`` as the family counts it (a CFG
pair or a Monte-Carlo row counts each), and the forward *calls* grouped into phases of equal shape,
since a call reads the weights once however many rows it carries. ``plan`` turns phases into FLOPs
and device time; nothing here touches a model.

FLOPs of one call: ``2 · dense parameters · positions`` (every position through every weight matrix)
``+ 4 · layers · width · attended`` (scores and weighted sums over the query-key pairs). ``exact`` is
False where the count depends on the data (a confidence threshold, learned progression times,
Monte-Carlo rows that mask nothing): the figure is then the upper bound, or the expectation, the
``note`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Phase:
    calls: float  # forward calls of this shape
    positions: int  # token positions computed per call, all rows together
    attended: int  # query-key pairs per call, all rows and (one) layer together


@dataclass
class Work:
    nfe: float = 0.0
    phases: list[Phase] = field(default_factory=list)
    exact: bool = True
    note: str = ""

    def add(self, calls: float, positions: int, attended: int, nfe: float | None = None) -> "Work":
        if calls > 0:
            self.phases.append(Phase(calls, int(positions), int(attended)))
            self.nfe += calls if nfe is None else nfe
        return self

    def bound(self, note: str) -> "Work":
        self.exact, self.note = False, note
        return self

    @property
    def calls(self) -> float:
        return sum(p.calls for p in self.phases)

    @property
    def positions(self) -> float:
        return sum(p.calls * p.positions for p in self.phases)

    def flops(self, dense_params: int, layers: int, width: int) -> float:
        return sum(p.calls * (2.0 * dense_params * p.positions + 4.0 * layers * width * p.attended) for p in self.phases)

    def seconds(self, weight_bytes: float, dense_params: int, layers: int, width: int,
                bandwidth: float, flop_rate: float) -> float:
        """Each call at the slower of reading the weights and computing its FLOPs."""
        return sum(p.calls * max(weight_bytes / bandwidth,
                                 (2.0 * dense_params * p.positions + 4.0 * layers * width * p.attended) / flop_rate)
                   for p in self.phases)


def causal_pairs(n: int, past: int = 0) -> int:
    """Query-key pairs of n causal queries after ``past`` cached positions."""
    return n * past + n * (n + 1) // 2
