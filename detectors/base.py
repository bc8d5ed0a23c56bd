"""The contract every detector keeps, River-style: learning happens in `SubjectState.observe`
(shared counters and baselines), and a detector's `score` reads that state without changing it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from detectors.state import SubjectState

__all__ = ["Detector", "Signal", "SubjectContext"]


@dataclass(frozen=True, slots=True)
class Signal:
    """One detector's finding about one subject. `score` is in [0, 1]; high means risky."""

    detector: str
    kind: str
    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class SubjectContext:
    subject: str
    kind: str  # consumer | key | ip
    now: float  # event time, seconds


class Detector(Protocol):
    name: str

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        """A signal when the subject looks risky now, else None (always None while warming up)."""
        ...
