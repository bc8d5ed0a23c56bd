"""Scraping and BOLA enumeration: walking object ids.

Both walk the ids under one route template (`/products/{id}`, `/accounts/{id}`); they differ in
what comes back. A scraper reads thousands of distinct objects it may read, far faster than a
person or than this client normally does; an enumerator (broken object-level authorization) asks
for objects that are not its own and gets 403/404 back, often in id order.
"""

from __future__ import annotations

import math
import zlib

from detectors.base import Signal, SubjectContext
from detectors.sketch import distinct
from detectors.state import SubjectState
from detectors.useragents import BULK_CRAWLER, CRAWLER, UserAgentClassifier
from pipeline.events import GatewayEvent

__all__ = ["ObjectWalk"]

_ID_MARKERS = ("{id}", "{uuid}", "{hex}")
_SKETCH_BITS = 256
_DECLARED = (CRAWLER, BULK_CRAWLER)


class _Walk:
    """Decayed counts of one subject's object-id requests, a sketch of the ids, the client mix."""

    __slots__ = (
        "agents", "denied", "host", "ids", "keyed", "last_id", "n", "sequential", "switches", "ts"
    )

    def __init__(self) -> None:
        self.n = 0.0
        self.denied = 0.0
        self.keyed = 0.0  # requests that carried an API key, even one the route does not check
        self.sequential = 0.0
        self.switches = 0.0  # requests from another host than the one before (ranges only)
        self.ts = 0.0
        self.ids = 0  # linear-counting sketch of the object ids, cleared as the window fades
        self.agents = 0  # 16-bit sketch of user agents: a shared address shows many
        self.last_id = -1
        self.host = ""


def _id_position(route: str) -> int | None:
    """Where the object id sits in a template's segments, counted from the end (`-2` in
    `/accounts/{id}/invoices`): the last id-bearing segment names the object read."""
    segments = route.rstrip("/").split("/")
    for back in range(1, len(segments)):
        if segments[-back] in _ID_MARKERS:
            return -back
    return None


def _object_id(path: str, position: int) -> tuple[str, int] | None:
    """The path segment at the template's id position, as text and (when numeric) a number."""
    segments = path.rstrip("/").split("/")
    if len(segments) < -position:
        return None
    text = segments[position]
    if not text:
        return None
    return text, int(text) if text.isdigit() and len(text) < 19 else -1


class ObjectWalk:
    """Scores a subject's walk over object ids under id-bearing route templates.

    Parameters
    ----------
    tau_s
        Time constant of the decayed counters.
    min_requests
        Decayed id requests before anything is said.
    scrape_rate
        Distinct ids per `tau_s` above which an anonymous client is scraping; a subject with a learned
        baseline must also exceed `baseline_ratio` times its own normal request count over `tau_s`.
    unnamed_rate
        The same for an address whose reads carry no API key at all (a partner's sync sends its key
        even where the route does not check it; a scraper sends nothing).
    deny_ratio
        Share of 403/404 answers at which a walk is enumeration.
    shared_agents
        Distinct user agents from which an address counts as shared (a NAT): no enumeration verdict,
        and three times the scraping limit.
    client_factor
        How much higher the cold scraping limit of an authenticated client is than an address's.
    spread_ratio
        Share of a range's requests that must come from another host than the request before for
        the range to be judged: a walk split over a subnet's hosts, which no one address shows.
    agents
        A user-agent classifier: declared crawlers are left to the crawler-pace detector.

    Examples
    --------
    >>> state, walk = SubjectState(), ObjectWalk()
    >>> ctx = SubjectContext("ip:203.0.113.5", "ip", 0.0)
    >>> for i in range(60):
    ...     e = GatewayEvent(ts_ms=i * 250, gateway="kong", client_ip="203.0.113.5", method="GET",
    ...                      path=f"/accounts/{1000 + i}", route="/accounts/{id}", status=403)
    ...     walk.update(state, e, ctx)
    >>> signal = walk.score(state, SubjectContext("ip:203.0.113.5", "ip", 15.0))
    >>> signal.kind, signal.score >= 0.85
    ('bola_enumeration', True)
    >>> print(signal.reason)
    22 object-id requests in ~15 s, 100% answered 403/404, 98% in id order
    """

    name = "object_walk"
    version = "1"
    judges_ranges = True
    needs = ("memo",)

    def __init__(
        self,
        tau_s: float = 15.0,
        min_requests: float = 12.0,
        scrape_rate: float = 150.0,
        unnamed_rate: float = 100.0,
        baseline_ratio: float = 4.0,
        deny_ratio: float = 0.3,
        shared_agents: int = 4,
        client_factor: float = 5.0,
        spread_ratio: float = 0.3,
        agents: UserAgentClassifier | None = None,
    ) -> None:
        if not 0 < deny_ratio <= 1:
            raise ValueError("deny_ratio must be in (0, 1]")
        self.tau_s = tau_s
        self.min_requests = min_requests
        self.scrape_rate = scrape_rate
        self.unnamed_rate = unnamed_rate
        self.baseline_ratio = baseline_ratio
        self.deny_ratio = deny_ratio
        self.shared_agents = shared_agents
        self.client_factor = client_factor
        self.spread_ratio = spread_ratio
        self.agents = agents
        self._routes: dict[str, int | None] = {}

    def _position(self, route: str) -> int | None:
        if route in self._routes:
            return self._routes[route]
        position = _id_position(route)
        if len(self._routes) < 100_000:
            self._routes[route] = position
        return position

    def _walks(self, route: str) -> bool:
        return self._position(route) is not None

    def wants_range(self, event: GatewayEvent) -> bool:
        """Anonymous object reads are also counted per /24: a scraper spreads over its subnet."""
        return event.consumer is None and self._walks(event.route)

    def update(self, state: SubjectState, event: GatewayEvent, ctx: SubjectContext) -> None:
        position = self._position(event.route)
        if position is None:
            return
        if ctx.kind == "ip" and event.consumer is not None:
            return  # an authenticated walk is judged on its consumer, against that one's habits
        if self.agents is not None and self.agents.classify(event.user_agent).kind in _DECLARED:
            return  # a declared crawler walks ids by design; `CrawlerPace` judges its pace
        memo = state.memo if state.memo is not None else {}
        state.memo = memo
        walk = memo.get(self.name)
        if walk is None:
            walk = memo[self.name] = _Walk()
        assert isinstance(walk, _Walk)
        t = ctx.now
        decay = math.exp(-max(0.0, t - walk.ts) / self.tau_s)
        walk.ts = max(walk.ts, t)
        walk.n = walk.n * decay + 1.0
        walk.denied = walk.denied * decay + (event.status in (403, 404))
        walk.keyed = walk.keyed * decay + (event.credential is not None)
        if walk.n < 2.0:
            walk.ids = 0  # the last walk has faded: start a fresh sketch
        if "/" in ctx.subject:
            walk.switches = walk.switches * decay + (event.client_ip != walk.host)
            walk.host = event.client_ip
        found = _object_id(event.path, position)
        if found is not None:
            text, number = found
            walk.ids |= 1 << (zlib.crc32(text.encode()) % _SKETCH_BITS)
            step = number - walk.last_id if number >= 0 and walk.last_id >= 0 else 0
            walk.sequential = walk.sequential * decay + (0 < abs(step) <= 3)
            walk.last_id = number
        walk.agents |= 1 << (zlib.crc32(event.user_agent.encode()) & 15)

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        walk = state.memo.get(self.name) if state.memo is not None else None
        if not isinstance(walk, _Walk):
            return None
        decay = math.exp(-max(0.0, ctx.now - walk.ts) / self.tau_s)
        n = walk.n * decay
        if n < self.min_requests:
            return None
        if "/" in ctx.subject and walk.switches * decay / n < self.spread_ratio:
            return None  # one host walks: its own address is judged, its neighbours are not
        objects = min(n, distinct(walk.ids, _SKETCH_BITS))
        denied = walk.denied * decay / n
        sequential = walk.sequential * decay / n
        shared = distinct(walk.agents, 16) >= self.shared_agents
        if denied >= self.deny_ratio and objects >= 0.5 * n and not shared:
            strength = min(1.0, (n - self.min_requests) / (2 * self.min_requests))
            score = round(min(1.0, (0.45 + 0.55 * strength) * (denied / self.deny_ratio) ** 0.5
                              + 0.2 * sequential), 3)
            reason = (
                f"{n:.0f} object-id requests in ~{self.tau_s:.0f} s, {denied:.0%} answered 403/404, "
                f"{sequential:.0%} in id order"
            )
            return Signal(
                self.name, "bola_enumeration", min(1.0, score), reason, "denied_share",
                round(denied, 3), None, self.deny_ratio,
            )  # fmt: skip
        # An API client reading many objects is often a sync job: judge it on its own habits,
        # with a much higher bar until those are known.
        if ctx.kind != "ip":
            limit = self.scrape_rate * self.client_factor
        elif walk.keyed * decay >= 0.5 * n:
            limit = self.scrape_rate
        else:
            # Nothing names this client, not even a key its public reads do not need: the
            # strictest limit. (A random key only buys the keyed limit, not a free pass.)
            limit = self.unnamed_rate
        baseline = state.baseline
        usual: float | None = None
        if baseline is not None and baseline.windows >= 30:
            usual = baseline.rate_mean * self.tau_s
            limit = max(limit, self.baseline_ratio * baseline.rate_mean * self.tau_s)
        if shared:
            limit *= 3
        if objects <= limit * 0.5:
            return None
        score = round(min(1.0, 0.3 + 0.7 * (objects - 0.5 * limit) / (0.5 * limit)), 3)
        reason = (
            f"{objects:.0f} distinct objects in ~{self.tau_s:.0f} s "
            f"(limit {limit:.0f} for this client), {sequential:.0%} in id order"
        )
        return Signal(
            self.name, "scraping", score, reason, "distinct_objects", round(objects, 3),
            None if usual is None else round(usual, 3), round(limit, 3),
        )  # fmt: skip
