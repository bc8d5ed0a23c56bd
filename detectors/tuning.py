"""Feedback's threshold adjustments: how a reported false positive moves a detector's thresholds.

An analyst reports a false positive (`gatewatch feedback SUBJECT --false-positive`) for a detector,
a route, or a detector on a route. Each such *key* carries an adjustment `a` in [0, MAX]; the
thresholds of a verdict on that route from that detector are raised so that the distance left to 1
shrinks by `1 - a` for every key that matches (detector-wide, the longest route prefix, the
longest route prefix for that detector):

    threshold' = 1 - (1 - threshold) * prod(1 - a_key)

so every threshold stays in (0, 1], they keep their order, and with two keys at the default cap
(0.3) the challenge threshold 0.6 becomes 0.80 and block 0.85 becomes 0.93: detection on that
route is damped, never switched off.

The learning rule (`learn`): a false positive raises its key to what would have kept the reported
score below the challenge threshold (it may still be tagged, which only informs the upstream), by
at least `step`, and never above `cap`. A strong detection therefore survives a mistaken report,
and repeated reports converge on the cap. Adjustments decay with a half-life (`decayed`), so a
quiet week returns a route to its policy thresholds. Feedback that confirms a detection changes
nothing. The values live in Redis (`pipeline/operator/tuning.py`); workers reload them like
overrides and hand them to the policy (`Policy.tuning`, applied in `Policy.adjust`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["Tuning", "TuningKey", "decayed", "learn"]

# (route prefix or None, detector or None): None matches any.
TuningKey = tuple[str | None, str | None]
_MARGIN = 0.01
_CACHE_MAX = 10_000


def decayed(value: float, age_s: float, half_life_s: float) -> float:
    """`value` after `age_s` seconds of exponential decay.

    >>> decayed(0.3, 7 * 86400, 7 * 86400), decayed(0.3, 0, 86400)
    (0.15, 0.3)
    """
    if age_s <= 0 or half_life_s <= 0:
        return value
    return value * math.pow(0.5, age_s / half_life_s)


def learn(
    current: float,
    *,
    score: float | None,
    challenge: float,
    others: float = 0.0,
    step: float = 0.05,
    cap: float = 0.3,
) -> float:
    """A key's new adjustment after one false positive at `score` (None: unknown).

    `challenge` is the route's challenge threshold before any adjustment and `others` the combined
    adjustment of the other keys that match the same verdict (`1 - prod(1 - a)`).

    >>> learn(0.0, score=0.7, challenge=0.6)          # 0.7 < 1 - 0.4 * (1 - a) needs a > 0.25
    0.26
    >>> learn(0.26, score=0.7, challenge=0.6)         # once more: at least one step
    0.3
    >>> learn(0.0, score=0.99, challenge=0.6), learn(0.0, score=None, challenge=0.6)
    (0.3, 0.05)
    """
    needed = 0.0
    if score is not None:
        gap = (1.0 - challenge) * (1.0 - others)
        if gap > 0 and score >= 1.0 - gap:
            needed = 1.0 - (1.0 - score) / gap + _MARGIN
    return round(min(cap, max(current + step, needed)), 4)


class Tuning:
    """The adjustments in force (already decayed), as the policy applies them.

    >>> t = Tuning({(None, "rate"): 0.3, ("/v1/export", None): 0.2})
    >>> t.raise_thresholds((0.3, 0.6, 0.85), "/v1/export/{id}", "rate")
    (0.608, 0.776, 0.916)
    >>> t.raise_thresholds((0.3, 0.6, 0.85), "/v1/login", "bruteforce")
    (0.3, 0.6, 0.85)
    >>> bool(Tuning()), t.adjustment("/v1/login", "rate")
    (False, 0.3)
    """

    def __init__(self, adjustments: Mapping[TuningKey, float] | None = None) -> None:
        self.adjustments = {k: v for k, v in (adjustments or {}).items() if v > 0}
        self._detector = {d: a for (r, d), a in self.adjustments.items() if r is None and d}
        # Route keys, longest prefix first, as `Policy.for_route` matches them.
        self._routes = sorted(
            ((r, d, a) for (r, d), a in self.adjustments.items() if r is not None),
            key=lambda x: len(x[0]),
            reverse=True,
        )
        self._cache: dict[tuple[str, str], float] = {}

    def __bool__(self) -> bool:
        return bool(self.adjustments)

    def keep(self, route: str, detector: str) -> float:
        """prod(1 - a) over the keys matching a verdict of `detector` on `route` (1 = none)."""
        found = self._cache.get((route, detector))
        if found is not None:
            return found
        keep = 1.0 - self._detector.get(detector, 0.0)
        route_only = route_detector = False
        for prefix, key_detector, a in self._routes:
            if not route.startswith(prefix):
                continue
            if key_detector is None and not route_only:
                keep *= 1.0 - a
                route_only = True
            elif key_detector == detector and not route_detector:
                keep *= 1.0 - a
                route_detector = True
        if len(self._cache) < _CACHE_MAX:
            self._cache[(route, detector)] = keep
        return keep

    def adjustment(self, route: str, detector: str) -> float:
        """The combined adjustment for a verdict of `detector` on `route`."""
        return round(1.0 - self.keep(route, detector), 4)

    def raise_thresholds(
        self, thresholds: tuple[float, float, float], route: str, detector: str
    ) -> tuple[float, float, float]:
        keep = self.keep(route, detector)
        if keep >= 1.0:
            return thresholds
        tag, challenge, block = (round(1.0 - (1.0 - x) * keep, 3) for x in thresholds)
        return (tag, challenge, block)
