"""Per-subject state: what one consumer, key or IP has been doing, and its learned baseline.

Two tiers keep memory bounded under a million-IP attack:

- every subject has a few counters (`__slots__`, no dict): the current and previous 1-second window
  and decayed login-failure counters;
- only a subject that keeps coming back (`baseline_after` closed windows) gets a `Baseline` of River
  exponentially-weighted statistics. A one-shot IP never pays for it.

A window that a detector flagged is not learned from, so an attacker cannot teach the baseline that
their own flood is normal.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

from river import stats

from pipeline.events import GatewayEvent

__all__ = [
    "EVIDENCE_TAU_S",
    "FEATURE_NAMES",
    "Baseline",
    "Evidence",
    "SubjectState",
    "WindowFeatures",
]

FEATURE_NAMES = ("rate", "errors", "auth_failures", "path_diversity", "latency")

WINDOW_S = 1.0
# An idle gap is learned as empty windows, up to this many (a day-long silence is not 86,400 zeros).
MAX_IDLE_WINDOWS = 30
AUTH_DECAY_TAU_S = 120.0
SUSTAINED_TAU_S = 5.0
# Per-request findings (an injection payload, a scanner UA) fade with this time constant.
EVIDENCE_TAU_S = 300.0


@dataclass(frozen=True, slots=True)
class WindowFeatures:
    requests: int
    error_ratio: float
    auth_failure_ratio: float
    path_diversity: float
    latency_ms: float


def _unit(x: float, low: float, high: float) -> float:
    return round(min(1.0, max(0.0, (x - low) / (high - low))), 3)


class Baseline:
    """A subject's normal behaviour per 1-second window, as River exponentially-weighted stats.

    >>> b = Baseline(fading_factor=0.5)
    >>> for n in (1, 3, 1, 3):
    ...     b.learn(WindowFeatures(n, 0.0, 0.0, 1.0, 20.0))
    >>> round(b.rate_mean.get(), 2), round(b.rate_var.get(), 2), b.windows
    (2.25, 0.94, 4)
    """

    __slots__ = (
        "auth_failure_ratio",
        "error_ratio",
        "latency",
        "path_diversity",
        "rate_mean",
        "rate_slow",
        "rate_var",
        "windows",
    )

    def __init__(self, fading_factor: float = 0.05) -> None:
        self.rate_mean = stats.EWMean(fading_factor)
        self.rate_var = stats.EWVar(fading_factor)
        # A slow memory of the rate (~ten minutes of windows): an attacker ramping up a little at a
        # time teaches the fast baseline, not this one.
        self.rate_slow = stats.EWMean(fading_factor / 25)
        self.error_ratio = stats.EWMean(fading_factor)
        self.auth_failure_ratio = stats.EWMean(fading_factor)
        self.path_diversity = stats.EWMean(fading_factor)
        self.latency = stats.EWMean(fading_factor)
        self.windows = 0

    def learn(self, w: WindowFeatures) -> None:
        self.rate_mean.update(w.requests)
        self.rate_var.update(w.requests)
        # The slow memory may grow at most 2x+1 per window learned: a ramp raises it by about
        # e-fold per ten minutes however steep it is, a real daily rise never notices.
        slow = self.rate_slow.get()
        self.rate_slow.update(w.requests if self.windows == 0 else min(w.requests, 2 * slow + 1))
        if w.requests:
            self.error_ratio.update(w.error_ratio)
            self.auth_failure_ratio.update(w.auth_failure_ratio)
            self.path_diversity.update(w.path_diversity)
            self.latency.update(w.latency_ms)
        self.windows += 1

    def normalise(self, w: WindowFeatures) -> tuple[float, ...]:
        """A window against this baseline, one value in [0, 1] per `FEATURE_NAMES` (a window as
        usual sits low on rate and at 0.5 on the others). Judged before the window is learned.

        >>> b = Baseline(fading_factor=0.2)
        >>> for _ in range(20):
        ...     b.learn(WindowFeatures(10, 0.0, 0.0, 0.2, 50.0))
        >>> b.normalise(WindowFeatures(10, 0.0, 0.0, 0.2, 50.0))
        (0.231, 0.5, 0.5, 0.5, 0.5)
        >>> b.normalise(WindowFeatures(200, 0.9, 0.0, 0.2, 50.0))[:2]
        (1.0, 0.95)
        """
        std = max(1.0, math.sqrt(max(0.0, self.rate_var.get())))
        z = (w.requests - self.rate_mean.get()) / std
        latency = math.log2(max(w.latency_ms, 1.0) / max(self.latency.get(), 1.0))
        return (
            _unit(z, -3.0, 10.0),
            _unit(w.error_ratio - self.error_ratio.get(), -1.0, 1.0),
            _unit(w.auth_failure_ratio - self.auth_failure_ratio.get(), -1.0, 1.0),
            _unit(w.path_diversity - self.path_diversity.get(), -1.0, 1.0),
            _unit(latency, -4.0, 4.0),
        )

    def learn_idle(self, windows: int) -> None:
        for _ in range(min(windows, MAX_IDLE_WINDOWS)):
            self.rate_mean.update(0)
            self.rate_var.update(0)
            self.rate_slow.update(0)
        self.windows += windows


class Evidence:
    """Decayed sum of one detector's per-request findings about a subject, and the last reason.

    >>> e = Evidence()
    >>> e.add(0.5, 10.0, "sqli", "UNION SELECT in ?q")
    >>> e.add(0.5, 10.0, "sqli", "OR 1=1 in ?id")
    >>> round(e.value(10.0), 3), round(e.value(10.0 + EVIDENCE_TAU_S), 3), e.hits
    (1.0, 0.368, 2)
    """

    __slots__ = ("hits", "kind", "reason", "total", "ts")

    def __init__(self) -> None:
        self.total = 0.0
        self.ts = 0.0
        self.hits = 0
        self.kind = ""
        self.reason = ""

    def add(self, weight: float, t: float, kind: str, reason: str) -> None:
        self.total = self.value(t) + weight
        self.ts = max(self.ts, t)
        self.hits += 1
        self.kind = kind
        self.reason = reason

    def value(self, now: float) -> float:
        return self.total * math.exp(-max(0.0, now - self.ts) / EVIDENCE_TAU_S)


class SubjectState:
    """Counters for one subject; `observe` feeds it events in (roughly) time order."""

    __slots__ = (
        "action",
        "auth_attempts",
        "auth_failures",
        "auth_ts",
        "baseline",
        "decided_at",
        "evidence",
        "expires_at",
        "flagged",
        "memo",
        "prev_requests",
        "sustained",
        "sustained_ts",
        "score",
        "w_auth",
        "w_auth_fail",
        "w_errors",
        "w_latency",
        "w_paths",
        "w_requests",
        "w_start",
        "windows_seen",
    )

    def __init__(self) -> None:
        self.w_start = 0.0
        self.w_requests = 0
        self.w_errors = 0
        self.w_auth = 0
        self.w_auth_fail = 0
        self.w_latency = 0.0
        # Distinct routes in the window as a 64-bit bitmap: 8 bytes instead of a set.
        self.w_paths = 0
        self.prev_requests = 0
        # Requests decayed over SUSTAINED_TAU_S: a rate that holds, where one window only bursts.
        self.sustained = 0.0
        self.sustained_ts = 0.0
        self.windows_seen = 0
        self.baseline: Baseline | None = None
        # Decayed counters of login attempts and failures (time constant AUTH_DECAY_TAU_S).
        self.auth_attempts = 0.0
        self.auth_failures = 0.0
        self.auth_ts = 0.0
        # Set by scoring: do not learn the current window; last decision written for this subject.
        self.flagged = False
        self.action = "allow"
        self.score = 0.0
        self.decided_at = 0.0
        self.expires_at = 0.0
        # Allocated on first use, so a subject nobody finds anything about pays nothing for them.
        self.evidence: dict[str, Evidence] | None = None
        self.memo: dict[str, object] | None = None

    def note(self, detector: str, weight: float, t: float, kind: str, reason: str) -> None:
        """Keep a per-request finding of `detector` as evidence about this subject."""
        if self.evidence is None:
            self.evidence = {}
        found = self.evidence.get(detector)
        if found is None:
            found = self.evidence[detector] = Evidence()
        found.add(weight, t, kind, reason)

    def observe(
        self, event: GatewayEvent, *, auth_route: bool, baseline_after: int, fading_factor: float
    ) -> None:
        t = event.ts_ms / 1000.0
        if t >= self.w_start + WINDOW_S:
            self._roll(t, baseline_after, fading_factor)
        self.w_requests += 1
        if t > self.sustained_ts:
            self.sustained *= math.exp((self.sustained_ts - t) / SUSTAINED_TAU_S)
            self.sustained_ts = t
        self.sustained += 1.0
        status = event.status
        if status >= 400:
            self.w_errors += 1
        # crc32, not hash(): string hashes change per process and replays must be reproducible.
        self.w_paths |= 1 << (zlib.crc32(event.route.encode()) & 63)
        self.w_latency += event.latency_ms
        if auth_route and event.method != "GET":
            failed = status in (401, 403)
            self.w_auth += 1
            self.w_auth_fail += failed
            decay = math.exp(-max(0.0, t - self.auth_ts) / AUTH_DECAY_TAU_S)
            self.auth_attempts = self.auth_attempts * decay + 1.0
            self.auth_failures = self.auth_failures * decay + failed
            self.auth_ts = max(self.auth_ts, t)

    def closes_window(self, t: float) -> bool:
        """Whether an event at `t` would close a window that holds requests."""
        return self.w_requests > 0 and t >= self.w_start + WINDOW_S

    def current_rate(self) -> int:
        """Requests per window now: the open window or the last closed one, whichever is higher,
        so a burst is seen before its window closes and does not vanish the moment it does."""
        return max(self.w_requests, self.prev_requests)

    def sustained_rate(self, now: float) -> float:
        """Requests per second over about the last SUSTAINED_TAU_S seconds."""
        return self.sustained * math.exp(min(0.0, self.sustained_ts - now) / SUSTAINED_TAU_S) / (
            SUSTAINED_TAU_S
        )

    def decayed_auth(self, now: float) -> tuple[float, float]:
        decay = math.exp(-max(0.0, now - self.auth_ts) / AUTH_DECAY_TAU_S)
        return self.auth_attempts * decay, self.auth_failures * decay

    def _roll(self, t: float, baseline_after: int, fading_factor: float) -> None:
        if self.w_requests:
            closed = self._features()
            self.windows_seen += 1
            if self.baseline is None and self.windows_seen >= baseline_after:
                self.baseline = Baseline(fading_factor)
            # Windows scored risky, or seen under a standing decision, are never learned.
            if self.baseline is not None and not self.flagged and self.action == "allow":
                idle = int((t - self.w_start) // WINDOW_S) - 1
                self.baseline.learn(closed)
                if idle > 0:
                    self.baseline.learn_idle(idle)
            contiguous = t < self.w_start + 2 * WINDOW_S
            self.prev_requests = self.w_requests if contiguous else 0
        self.w_start = t - (t % WINDOW_S)
        self.w_requests = self.w_errors = self.w_auth = self.w_auth_fail = 0
        self.w_latency = 0.0
        self.w_paths = 0
        self.flagged = False

    def window(self) -> WindowFeatures:
        """The open window's features (a window about to close is complete)."""
        return self._features()

    def _features(self) -> WindowFeatures:
        n = self.w_requests
        return WindowFeatures(
            requests=n,
            error_ratio=self.w_errors / n,
            auth_failure_ratio=self.w_auth_fail / self.w_auth if self.w_auth else 0.0,
            path_diversity=self.w_paths.bit_count() / n,
            latency_ms=self.w_latency / n,
        )
