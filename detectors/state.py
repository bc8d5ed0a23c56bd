"""Per-subject state: what one consumer, key or IP has been doing, and its learned baseline.

Two tiers keep memory bounded under a million-IP attack:

- every subject has a few counters (`__slots__`, no dict): the current and previous 1-second window
  and decayed login-failure counters;
- only a subject that keeps coming back (`baseline_after` closed windows) gets a `Baseline` of
  exponentially weighted statistics (River's arithmetic, in plain floats). A one-shot IP never pays
  for it.

A window that a detector flagged is not learned from, so an attacker cannot teach the baseline that
their own flood is normal.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

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


# Route template -> its bit in a window's path bitmap, bounded like the other per-route caches.
_ROUTE_BITS: dict[str, int] = {}
_MAX_ROUTE_BITS = 100_000


def _route_bit(route: str) -> int:
    bit = _ROUTE_BITS.get(route)
    if bit is None:
        # crc32, not hash(): string hashes change per process and replays must be reproducible.
        bit = 1 << (zlib.crc32(route.encode()) & 63)
        if len(_ROUTE_BITS) < _MAX_ROUTE_BITS:
            _ROUTE_BITS[route] = bit
    return bit


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
    """A subject's normal behaviour per 1-second window, as exponentially weighted means.

    The same numbers as River's `stats.EWMean` / `stats.EWVar` (the first value is taken as is,
    then `mean = a * x + (1 - a) * mean`; the variance is the mean of squares minus the squared
    mean), held as plain floats: a River statistic is a Python wrapper around a Rust object, and a
    baseline of seven of them cost more memory than the rest of a subject's state.

    >>> b = Baseline(fading_factor=0.5)
    >>> for n in (1, 3, 1, 3):
    ...     b.learn(WindowFeatures(n, 0.0, 0.0, 1.0, 20.0))
    >>> round(b.rate_mean, 2), round(b.rate_var, 2), b.windows
    (2.25, 0.94, 4)
    """

    __slots__ = (
        "auth_failure_ratio",
        "busy",
        "error_ratio",
        "fading_factor",
        "latency",
        "path_diversity",
        "rate_mean",
        "rate_slow",
        "rate_sq",
        "windows",
    )

    def __init__(self, fading_factor: float = 0.05) -> None:
        if not 0 <= fading_factor <= 1:
            raise ValueError("fading_factor must be in [0, 1]")
        self.fading_factor = fading_factor
        self.rate_mean = 0.0
        self.rate_sq = 0.0  # mean of squared rates, for the variance
        # A slow memory of the rate (~ten minutes of windows): an attacker ramping up a little at a
        # time teaches the fast baseline, not this one.
        self.rate_slow = 0.0
        self.error_ratio = 0.0
        self.auth_failure_ratio = 0.0
        self.path_diversity = 0.0
        self.latency = 0.0
        self.windows = 0
        self.busy = False  # whether a window with requests was learned (the ratios have a value)

    @property
    def rate_var(self) -> float:
        return self.rate_sq - self.rate_mean * self.rate_mean

    def learn(self, w: WindowFeatures) -> None:
        self.learn_window(
            w.requests, w.error_ratio, w.auth_failure_ratio, w.path_diversity, w.latency_ms
        )

    def learn_window(
        self,
        requests: int,
        error_ratio: float,
        auth_failure_ratio: float,
        path_diversity: float,
        latency_ms: float,
    ) -> None:
        """`learn` without building a `WindowFeatures` (a subject closes one every second)."""
        a = self.fading_factor
        b = 1.0 - a
        slow_a = a / 25
        if self.windows == 0:
            self.rate_mean = self.rate_slow = float(requests)
            self.rate_sq = float(requests * requests)
        else:
            self.rate_mean = a * requests + b * self.rate_mean
            self.rate_sq = a * (requests * requests) + b * self.rate_sq
            # The slow memory may grow at most 2x+1 per window learned: a ramp raises it by about
            # e-fold per ten minutes however steep it is, a real daily rise never notices.
            slow = self.rate_slow
            self.rate_slow = slow_a * min(requests, 2 * slow + 1) + (1.0 - slow_a) * slow
        if requests:
            if self.busy:
                self.error_ratio = a * error_ratio + b * self.error_ratio
                self.auth_failure_ratio = a * auth_failure_ratio + b * self.auth_failure_ratio
                self.path_diversity = a * path_diversity + b * self.path_diversity
                self.latency = a * latency_ms + b * self.latency
            else:
                self.error_ratio = float(error_ratio)
                self.auth_failure_ratio = float(auth_failure_ratio)
                self.path_diversity = float(path_diversity)
                self.latency = float(latency_ms)
                self.busy = True
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
        std = max(1.0, math.sqrt(max(0.0, self.rate_var)))
        z = (w.requests - self.rate_mean) / std
        latency = math.log2(max(w.latency_ms, 1.0) / max(self.latency, 1.0))
        return (
            _unit(z, -3.0, 10.0),
            _unit(w.error_ratio - self.error_ratio, -1.0, 1.0),
            _unit(w.auth_failure_ratio - self.auth_failure_ratio, -1.0, 1.0),
            _unit(w.path_diversity - self.path_diversity, -1.0, 1.0),
            _unit(latency, -4.0, 4.0),
        )

    def learn_idle(self, windows: int) -> None:
        """Learn `windows` empty windows (at most MAX_IDLE_WINDOWS of them). An empty window scales
        each rate mean by `1 - a`; multiplied once per window, as learning them one by one would,
        so the numbers stay bit for bit those of River's statistics (a power would round apart)."""
        idle = min(windows, MAX_IDLE_WINDOWS)
        if idle > 0:
            b = 1.0 - self.fading_factor
            slow_b = 1.0 - self.fading_factor / 25
            mean, sq, slow = self.rate_mean, self.rate_sq, self.rate_slow
            for _ in range(idle):
                mean *= b
                sq *= b
                slow *= slow_b
            self.rate_mean, self.rate_sq, self.rate_slow = mean, sq, slow
        self.windows += windows


class Evidence:
    """Decayed sum of one detector's per-request findings about a subject, and the last reason.

    A subject's evidence from several detectors is a short chain (`next`), and its first link
    answers `get(detector)` and `detector in` for the whole chain: most subjects with evidence
    have it from one detector, and a dict of one entry cost twice this object.

    >>> e = Evidence("injection")
    >>> e.add(0.5, 10.0, "sqli", "UNION SELECT in ?q")
    >>> e.add(0.5, 10.0, "sqli", "OR 1=1 in ?id")
    >>> round(e.value(10.0), 3), round(e.value(10.0 + EVIDENCE_TAU_S), 3), e.hits
    (1.0, 0.368, 2)
    >>> chain = Evidence("probing", e)
    >>> chain.get("injection") is e, "probing" in chain, chain.get("bot_ua")
    (True, True, None)
    """

    __slots__ = ("detector", "hits", "kind", "next", "reason", "total", "ts")

    def __init__(self, detector: str = "", next: Evidence | None = None) -> None:
        self.detector = detector
        self.next = next
        self.total = 0.0
        self.ts = 0.0
        self.hits = 0
        self.kind = ""
        self.reason = ""

    def add(self, weight: float, t: float, kind: str, reason: str) -> None:
        # The first finding's total is its weight (0 decayed plus it): keep the finding's float
        # rather than a copy, a saving that matters for a million one-shot addresses.
        self.total = self.value(t) + weight if self.hits else float(weight)
        self.ts = max(self.ts, t)
        self.hits += 1
        self.kind = kind
        self.reason = reason

    def value(self, now: float) -> float:
        return self.total * math.exp(-max(0.0, now - self.ts) / EVIDENCE_TAU_S)

    def get(self, detector: str) -> Evidence | None:
        """This chain's evidence from `detector`, if any."""
        link: Evidence | None = self
        while link is not None:
            if link.detector == detector:
                return link
            link = link.next
        return None

    def __contains__(self, detector: object) -> bool:
        return isinstance(detector, str) and self.get(detector) is not None


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
        self.decided_at = 0.0
        self.expires_at = 0.0
        # Allocated on first use, so a subject nobody finds anything about pays nothing for them.
        self.evidence: Evidence | None = None  # a chain, one link per detector (see `Evidence`)
        self.memo: dict[str, object] | None = None

    def note(self, detector: str, weight: float, t: float, kind: str, reason: str) -> None:
        """Keep a per-request finding of `detector` as evidence about this subject."""
        found = self.evidence.get(detector) if self.evidence is not None else None
        if found is None:
            found = self.evidence = Evidence(detector, self.evidence)
        found.add(weight, t, kind, reason)

    def observe(
        self, event: GatewayEvent, *, auth_route: bool, baseline_after: int, fading_factor: float
    ) -> None:
        self.observe_at(event.ts_ms / 1000.0, event, auth_route, baseline_after, fading_factor)

    def observe_at(
        self,
        t: float,
        event: GatewayEvent,
        auth_route: bool,
        baseline_after: int,
        fading_factor: float,
    ) -> None:
        """`observe` with the event's time in seconds already worked out (`event.ts_ms / 1000`)."""
        if t >= self.w_start + WINDOW_S:
            self._roll(t, baseline_after, fading_factor)
        self.w_requests += 1
        last = self.sustained_ts
        if t > last:
            self.sustained = self.sustained * math.exp((last - t) / SUSTAINED_TAU_S) + 1.0
            self.sustained_ts = t
        else:
            self.sustained += 1.0
        status = event.status
        if status >= 400:
            self.w_errors += 1
        route = event.route
        self.w_paths |= _ROUTE_BITS.get(route) or _route_bit(route)
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
        n = self.w_requests
        if n:
            self.windows_seen += 1
            baseline = self.baseline
            if baseline is None and self.windows_seen >= baseline_after:
                baseline = self.baseline = Baseline(fading_factor)
            # Windows scored risky, or seen under a standing decision, are never learned.
            if baseline is not None and not self.flagged and self.action == "allow":
                baseline.learn_window(
                    n,
                    self.w_errors / n,
                    self.w_auth_fail / self.w_auth if self.w_auth else 0.0,
                    self.w_paths.bit_count() / n,
                    self.w_latency / n,
                )
                idle = int((t - self.w_start) // WINDOW_S) - 1
                if idle > 0:
                    baseline.learn_idle(idle)
            contiguous = t < self.w_start + 2 * WINDOW_S
            self.prev_requests = n if contiguous else 0
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
