"""Brute force and credential stuffing: a subject failing logins again and again."""

from __future__ import annotations

from detectors.base import Signal, SubjectContext
from detectors.state import AUTH_DECAY_TAU_S, SubjectState

__all__ = ["BruteForce"]


class BruteForce:
    """Scores decayed login failures (401/403 on an authentication route) and their share of
    attempts. A person mistyping a password fails a few times; a NAT address with hundreds of users
    fails often but rarely in proportion; a stuffing run fails dozens of times, nearly always.

    Parameters
    ----------
    min_failures
        Decayed failures below which nothing is said.
    full_failures
        Decayed failures at which the score reaches its maximum.
    min_failure_ratio
        Share of failing attempts below which nothing is said.

    Examples
    --------
    >>> from pipeline.events import GatewayEvent
    >>> state, detector = SubjectState(), BruteForce()
    >>> for i in range(20):
    ...     e = GatewayEvent(ts_ms=1_000 + i * 100, gateway="kong", client_ip="203.0.113.9",
    ...                      method="POST", path="/login", route="/login", status=401)
    ...     state.observe(e, auth_route=True, baseline_after=5, fading_factor=0.05)
    >>> signal = detector.score(state, SubjectContext("ip:203.0.113.9", "ip", now=3.0))
    >>> signal.score
    1.0
    >>> signal.reason
    '20 failed logins of 20 attempts (100% failing, decay 120 s)'
    """

    name = "bruteforce"

    def __init__(
        self, min_failures: float = 5.0, full_failures: float = 15.0, min_failure_ratio: float = 0.5
    ) -> None:
        if not 0 < min_failures < full_failures:
            raise ValueError("need 0 < min_failures < full_failures")
        self.min_failures = min_failures
        self.full_failures = full_failures
        self.min_failure_ratio = min_failure_ratio

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        attempts, failures = state.decayed_auth(ctx.now)
        if failures < self.min_failures:
            return None
        ratio = failures / attempts
        if ratio < self.min_failure_ratio:
            return None
        volume = min(1.0, (failures - self.min_failures) / (self.full_failures - self.min_failures))
        score = round((0.3 + 0.7 * volume) * min(1.0, ratio / 0.8), 3)
        kind = "credential_stuffing" if ctx.kind == "ip" else "brute_force"
        reason = (
            f"{failures:.0f} failed logins of {attempts:.0f} attempts "
            f"({ratio:.0%} failing, decay {AUTH_DECAY_TAU_S:.0f} s)"
        )
        return Signal(self.name, kind, score, reason)
