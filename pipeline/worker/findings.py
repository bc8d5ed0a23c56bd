"""Per-request findings aggregated per (subject, reason code) over short event-time windows.

A scanner sending 5,000 payloads in a minute is one alert with a count of 5,000 and its first few
request ids, not 5,000 alerts. Windows are aligned on event time (`start = ts - ts % window`), so
the alert id derived from (subject, code, start) is the same whoever computes it: a worker that
replays envelopes after a restart writes the same ids again.

A window is reported twice at most: when it opens (the SOC hears of an attack within seconds)
and, if more findings came in, when it closes (the final count, same id). It closes once the
partition's event clock is `grace_ms` past its end; `max_open` bounds memory under a spray from
a million addresses (the oldest window closes early).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from pipeline.events import GatewayEvent

__all__ = ["FindingWindow", "FindingWindows"]

GRACE_MS = 5_000


@dataclass(slots=True, eq=False)
class FindingWindow:
    """The findings of one subject and reason code in one window."""

    subject: str
    code: str
    detector: str
    start_ms: int
    first: GatewayEvent  # where and when it started: gateway, route, first request
    reason: str  # the first finding's, for a person
    score: float
    count: int = 0
    last_ms: int = 0
    client_ip: str = ""  # of the latest request
    evidence: list[str] = field(default_factory=list)
    emitted: int = 0  # `count` when last reported; 0 = never


class FindingWindows:
    """Open windows in the order they opened; `due` hands over what is to be reported.

    >>> from pipeline.events import GatewayEvent
    >>> def probe(ts_ms, rid):
    ...     return GatewayEvent(request_id=rid, ts_ms=ts_ms, gateway="kong", client_ip="192.0.2.1",
    ...                         method="GET", path="/.env", route="/.env", status=404)
    >>> windows = FindingWindows(window_ms=60_000, evidence=2)
    >>> for i in range(5):
    ...     windows.add("ip:192.0.2.1", "secret_file", "probing", 0.6, "'/.env' -> 404",
    ...                 probe(1_000 + i, f"r{i}"))
    >>> [(w.count, w.evidence) for w in windows.due(2_000)]   # a new window is reported at once
    [(5, ['r0', 'r1'])]
    >>> windows.add("ip:192.0.2.1", "secret_file", "probing", 0.6, "x", probe(3_000, "r5"))
    >>> windows.due(60_000 + GRACE_MS - 1)                     # not yet closed: nothing new
    []
    >>> [(w.count, w.start_ms) for w in windows.due(60_000 + GRACE_MS)]   # closed, 6 in all
    [(6, 0)]
    >>> len(windows)
    0
    """

    def __init__(
        self,
        window_ms: int = 60_000,
        *,
        evidence: int = 5,
        max_open: int = 20_000,
        grace_ms: int = GRACE_MS,
    ) -> None:
        if window_ms <= 0 or evidence < 0 or max_open <= 0:
            raise ValueError("need window_ms > 0, evidence >= 0 and max_open > 0")
        self.window_ms = window_ms
        self.evidence = evidence
        self.max_open = max_open
        self.grace_ms = grace_ms
        self._open: OrderedDict[tuple[str, str, int], FindingWindow] = OrderedDict()
        self._fresh: list[FindingWindow] = []  # opened since the last `due`
        self._closing: list[FindingWindow] = []  # pushed out by `max_open`

    def add(
        self,
        subject: str,
        code: str,
        detector: str,
        score: float,
        reason: str,
        event: GatewayEvent,
    ) -> None:
        ts = event.ts_ms
        start = ts - ts % self.window_ms
        key = (subject, code, start)
        window = self._open.get(key)
        if window is None:
            window = self._open[key] = FindingWindow(
                subject, code, detector, start, event, reason, score
            )
            self._fresh.append(window)
            if len(self._open) > self.max_open:
                self._closing.append(self._open.popitem(last=False)[1])
        window.count += 1
        if ts > window.last_ms:
            window.last_ms = ts
            window.client_ip = event.client_ip
        if score > window.score:
            window.score = score
        if event.request_id is not None and len(window.evidence) < self.evidence:
            window.evidence.append(event.request_id)

    def due(self, now_ms: int) -> list[FindingWindow]:
        """Windows to report now: those opened since the last call, and those closed by `now_ms`
        (event time) that grew since they were reported. Closed windows are forgotten."""
        out = [w for w in self._fresh if w.count != w.emitted]
        self._fresh = []
        closing, self._closing = self._closing, []
        open_ = self._open
        span = self.window_ms + self.grace_ms
        # Windows open roughly in event-time order: the closed ones are at the front.
        while open_ and next(iter(open_))[2] + span <= now_ms:
            closing.append(open_.popitem(last=False)[1])
        if closing:
            fresh = {id(w) for w in out}
            out.extend(w for w in closing if w.count != w.emitted and id(w) not in fresh)
        for w in out:
            w.emitted = w.count
        return out

    def __len__(self) -> int:
        return len(self._open)
