"""Fusion: many detectors' signals about one subject -> one risk score, an action, the reasons."""

from __future__ import annotations

from dataclasses import dataclass

from detectors.base import Signal

__all__ = ["ACTIONS", "Fusion", "Verdict"]

ACTIONS = ("allow", "tag", "challenge", "block")


@dataclass(frozen=True, slots=True)
class Verdict:
    score: float
    action: str
    reasons: list[str]
    detector: str


class Fusion:
    """Noisy-OR of signal scores (independent evidence accumulates, one strong signal is enough),
    mapped to an action by thresholds.

    >>> f = Fusion()
    >>> f.fuse([Signal("rate", "flood", 0.5, "a"), Signal("bruteforce", "brute_force", 0.5, "b")])
    Verdict(score=0.75, action='challenge', reasons=['rate: a', 'bruteforce: b'], detector='rate')
    >>> f.fuse([]).action
    'allow'
    >>> f.fuse([Signal("rate", "flood", 0.45, "a"), Signal("anomaly", "behaviour_anomaly", 0.5, "b")])
    Verdict(score=0.478, action='tag', reasons=['anomaly: b', 'rate: a'], detector='anomaly')
    """

    # Part of the processor's `model_version` with the detectors' versions: bump on logic changes.
    version = "1"

    def __init__(
        self,
        tag: float = 0.3,
        challenge: float = 0.6,
        block: float = 0.85,
        max_reasons: int = 3,
        supporting: tuple[str, ...] = ("anomaly",),
        support_weight: float = 0.1,
    ) -> None:
        if not 0 < tag < challenge < block <= 1:
            raise ValueError("need 0 < tag < challenge < block <= 1")
        self.tag = tag
        self.challenge = challenge
        self.block = block
        self.max_reasons = max_reasons
        self.supporting = supporting
        self.support_weight = support_weight

    @property
    def thresholds(self) -> tuple[float, float, float]:
        return (self.tag, self.challenge, self.block)

    def fuse(
        self, signals: list[Signal], thresholds: tuple[float, float, float] | None = None
    ) -> Verdict:
        """`thresholds` (tag, challenge, block) replace the default ones, e.g. a route's policy."""
        if not signals:
            return Verdict(0.0, "allow", [], "")
        ranked = sorted(signals, key=lambda s: s.score, reverse=True)
        alone = all(s.detector in self.supporting for s in ranked)
        keep = 1.0
        for s in ranked:
            # A supporting signal (the anomaly model) mostly re-says what a specific detector
            # saw in the same window: it counts in full only on its own.
            weight = 1.0 if alone or s.detector not in self.supporting else self.support_weight
            keep *= 1.0 - s.score * weight
        score = round(1.0 - keep, 3)
        return Verdict(
            score=score,
            action=self.action_for(score, thresholds or self.thresholds),
            reasons=[f"{s.detector}: {s.reason}" for s in ranked[: self.max_reasons]],
            detector=ranked[0].detector,
        )

    def action_for(self, score: float, thresholds: tuple[float, float, float] | None = None) -> str:
        tag, challenge, block = thresholds or self.thresholds
        if score >= block:
            return "block"
        if score >= challenge:
            return "challenge"
        if score >= tag:
            return "tag"
        return "allow"
