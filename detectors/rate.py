"""Floods: a subject's request rate against its own learned baseline."""

from __future__ import annotations

import math
import zlib

from detectors.base import Signal, SubjectContext
from detectors.sketch import distinct, network, vote
from detectors.state import SUSTAINED_TAU_S, Baseline, SubjectState, WindowFeatures
from pipeline.events import GatewayEvent

__all__ = ["RateAnomaly", "recommended_limit"]


class _Mix:
    """The route most of a credential's recent requests went to, and by how much it leads the
    others (a majority vote, decayed like the held rate)."""

    __slots__ = ("lead", "networks", "route", "ts")

    def __init__(self) -> None:
        self.route = ""
        self.lead = 0.0
        self.ts = 0.0
        self.networks = 0  # 64-bit sketch of the /24s it came from: an app's key spans hundreds

# A subject's p99 rate per window, under a normal approximation of its learned baseline.
_P99_Z = 2.33


def recommended_limit(
    baseline: Baseline | None, factor: float = 3.0, warmup_windows: int = 30, floor: int = 5
) -> int | None:
    """A per-subject rate limit (requests/s) to export with a decision: its own p99 x `factor`.

    None until the baseline has seen `warmup_windows` windows: no limit is better than a guess.

    >>> b = Baseline(fading_factor=0.1)
    >>> for n in [2, 4] * 20:
    ...     b.learn(WindowFeatures(n, 0.0, 0.0, 1.0, 10.0))
    >>> recommended_limit(b), recommended_limit(None)
    (17, None)
    """
    if baseline is None or baseline.windows < warmup_windows:
        return None
    std = math.sqrt(max(0.0, baseline.rate_var))
    return max(floor, math.ceil((baseline.rate_mean + _P99_Z * std) * factor))


class RateAnomaly:
    """Flags a request rate far above what this subject normally does.

    With a warm baseline the limit is the highest of `mean + sigmas * std`, `ratio * mean` and
    `min_rate` per second; without one (a new subject) only `cold_limit` applies, so a fresh client
    is never judged against a baseline it has not had time to build. The score passes 0.4 as soon
    as the limit is crossed and reaches 1 at twice the limit.

    Parameters
    ----------
    warmup_windows
        Baseline windows needed before the baseline is trusted.
    sigmas, ratio, min_rate
        The three floors of the warm limit.
    cold_limit
        Requests per second above which even an unknown subject is a flood.
    slow_ratio, slow_windows
        Once `slow_windows` windows are learned, the limit is never above `slow_ratio` times the
        slow (~10-minute) baseline: a flood ramped up gently is still a flood.
    sustained_ratio, sustained_min, sustained_windows
        Below the per-second limits, a rate held over ~10 s above both `sustained_min` per second
        and `sustained_ratio` times the subject's average is a flood too (once `sustained_windows`
        windows are learned). Only from `sustained_strong` per second is
        it more than a tag (1.5 times that limit when higher), unless the held traffic spreads
        over routes (no route takes more than `top_route_share` of it): a batch job walks one
        collection, a flood (a key in a load test, a runaway client) repeats the client's mix.
    population_networks, population_score
        A consumer or key seen from this many networks (/24) is a population's (an app's key):
        its floods score at most `population_score`, a tag, and its addresses are judged instead.

    Examples
    --------
    >>> from pipeline.events import GatewayEvent
    >>> state, detector = SubjectState(), RateAnomaly()
    >>> def burst(second, n):
    ...     for i in range(n):
    ...         e = GatewayEvent(ts_ms=second * 1000 + i, gateway="kong", client_ip="10.0.0.1",
    ...                          consumer="c1", method="GET", path="/a", route="/a", status=200)
    ...         state.observe(e, auth_route=False, baseline_after=1, fading_factor=0.1)
    >>> for second in range(30):
    ...     burst(second, 2)
    >>> detector.score(state, SubjectContext("consumer:c1", "consumer", now=30.0)) is None
    True
    >>> burst(30, 120)
    >>> detector.score(state, SubjectContext("consumer:c1", "consumer", now=30.0)).score
    1.0
    """

    name = "rate"
    version = "1"
    update_kinds = ("consumer", "key")  # `update` follows credentials' routes and networks

    def __init__(
        self,
        warmup_windows: int = 10,
        sigmas: float = 6.0,
        ratio: float = 4.0,
        min_rate: float = 30.0,
        cold_limit: float = 150.0,
        slow_ratio: float = 8.0,
        slow_windows: int = 300,
        sustained_ratio: float = 8.0,
        sustained_min: float = 5.0,
        sustained_windows: int = 60,
        sustained_strong: float = 15.0,
        top_route_share: float = 0.6,
        population_networks: int = 32,
        population_score: float = 0.45,
    ) -> None:
        self.warmup_windows = warmup_windows
        self.sigmas = sigmas
        self.ratio = ratio
        self.min_rate = min_rate
        self.cold_limit = cold_limit
        self.slow_ratio = slow_ratio
        self.slow_windows = slow_windows
        self.sustained_ratio = sustained_ratio
        self.sustained_min = sustained_min
        self.sustained_windows = sustained_windows
        self.sustained_strong = sustained_strong
        self.top_route_share = top_route_share
        self.population_networks = population_networks
        self.population_score = population_score

    def update(self, state: SubjectState, event: GatewayEvent, ctx: SubjectContext) -> None:
        if ctx.kind == "ip":
            return  # held rates are judged for credentials only
        memo = state.memo if state.memo is not None else {}
        state.memo = memo
        mix = memo.get(self.name)
        if mix is None:
            mix = memo[self.name] = _Mix()
        assert isinstance(mix, _Mix)
        decay = math.exp(min(0.0, mix.ts - ctx.now) / SUSTAINED_TAU_S)
        mix.route, mix.lead = vote(mix.route, mix.lead * decay, event.route)
        mix.ts = max(mix.ts, ctx.now)
        mix.networks |= 1 << (zlib.crc32(network(event.client_ip).encode()) & 63)

    def _population(self, state: SubjectState) -> bool:
        """A credential used from `population_networks` networks or more (a phone app's key):
        its rate is its users' sum, and a push notification doubles it."""
        mix = state.memo.get(self.name) if state.memo is not None else None
        return isinstance(mix, _Mix) and distinct(mix.networks, 64) >= self.population_networks

    def _spread_over_routes(self, state: SubjectState) -> bool:
        """No route takes more than `top_route_share` of the held requests (False without a memo).
        A route with share p leads the others by about 2p - 1 of them."""
        mix = state.memo.get(self.name) if state.memo is not None else None
        if not isinstance(mix, _Mix) or state.sustained <= 0:
            return False
        # Both counters decay with the same time constant: compare them at the same instant.
        held = state.sustained * math.exp(min(0.0, state.sustained_ts - mix.ts) / SUSTAINED_TAU_S)
        return held > 0 and mix.lead / held < 2 * self.top_route_share - 1

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        current = state.current_rate()
        if current <= self.min_rate:
            return self._sustained(state, ctx)
        baseline = state.baseline
        usual: float | None = None
        if baseline is None or baseline.windows < self.warmup_windows:
            limit = self.cold_limit
            basis = "no baseline yet"
        else:
            mean = usual = baseline.rate_mean
            std = math.sqrt(max(0.0, baseline.rate_var))
            limit = max(mean + self.sigmas * std, self.ratio * mean, self.min_rate)
            basis = f"baseline {mean:.1f}±{std:.1f}/s"
            if baseline.windows >= self.slow_windows:
                # A slow ramp drags the fast baseline along; the slow one keeps the older normal.
                slow = baseline.rate_slow
                slow_limit = max(self.slow_ratio * slow, self.min_rate)
                if slow_limit < limit:
                    limit, usual = slow_limit, slow
                    basis = f"long-run baseline {slow:.1f}/s"
        if current <= limit:
            return self._sustained(state, ctx)
        score = round(min(1.0, 0.4 + 0.6 * (current / limit - 1.0)), 3)
        reason = f"{current} requests/s ({basis}, limit {limit:.0f}/s)"
        if ctx.kind != "ip" and self._population(state):
            # Blocking an app's key blocks all its users: tell the upstream, judge the addresses.
            score = min(score, self.population_score)
            reason += ", a credential many networks share"
        return Signal(
            self.name, "flood", score, reason, "requests_per_s", float(current),
            None if usual is None else round(usual, 3), round(limit, 3),
        )  # fmt: skip

    def _sustained(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        """A quiet client turned busy: too slow per second for the window limits, but held for
        tens of seconds at many times its own average (a consumer at 0.5/s going to 12/s)."""
        baseline = state.baseline
        if baseline is None or baseline.windows < self.sustained_windows or ctx.kind == "ip":
            # An address's average says little (NATs, reassigned addresses, partners syncing a
            # public catalogue): held rates are judged for the credentials behind the traffic.
            return None
        rate = state.sustained_rate(ctx.now)
        usual = baseline.rate_slow if baseline.windows >= self.slow_windows else (
            baseline.rate_mean
        )
        limit = max(self.sustained_min, self.sustained_ratio * usual)
        if rate <= limit:
            return None
        # A first batch run looks like a modest flood: only a strong one is acted on, the rest
        # is tagged for the upstream to see, unless it spreads over the client's routes.
        mixed = self._spread_over_routes(state)
        strong = limit if mixed else max(self.sustained_strong, 1.5 * limit)
        if rate < strong:
            score = round(0.4 + 0.15 * (rate - limit) / (strong - limit), 3)
        else:
            score = round(min(1.0, 0.6 + 0.4 * (rate / strong - 1.0)), 3)
        reason = (
            f"{rate:.1f} requests/s held over ~{SUSTAINED_TAU_S:.0f} s "
            f"(usually {usual:.2f}/s, limit {limit:.1f}/s)" + (" across its routes" if mixed else "")
        )
        return Signal(
            self.name, "flood", score, reason, "held_requests_per_s", round(rate, 3),
            round(usual, 3), round(limit, 3),
        )  # fmt: skip
