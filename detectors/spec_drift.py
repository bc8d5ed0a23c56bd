"""API-spec drift: the traffic an API actually serves, against its OpenAPI documents.

Two outputs, for two audiences:

- *findings*, for the API's owners, reported and never acted on: `shadow_endpoint` (an undocumented
  path the gateway answered with 2xx/3xx: it exists), `unknown_endpoint_probe` (an undocumented path
  answered with an error), `undocumented_method`, `deprecated_operation`, `unknown_parameter`;
  aggregated per (kind, method, route) by `FindingLog`.
- a subject signal, `shadow_endpoint_discovery`, for fusion: one subject walking many *distinct*
  undocumented endpoints in a short time, mostly answered 404/405 with the odd 200, is mapping the
  API. Distinct is what tells it from a client that keeps hitting one stale link, so the detector
  keeps a small sketch of each such subject's undocumented endpoints (`update`); `inspect` leaves
  one low-weight piece of evidence per undocumented request, whose reason the signal quotes.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from detectors.base import Signal, SubjectContext
from detectors.fusion import Fusion
from detectors.sketch import distinct
from detectors.spec_findings import Finding, FindingLog
from detectors.spec_index import Operation, SpecIndex
from detectors.state import SubjectState
from pipeline.events import GatewayEvent
from pipeline.ingest.normalize import route_template

__all__ = ["SpecDrift", "drift_report"]

_SKETCH_BITS = 128


class _Discovery:
    """One subject's recent undocumented endpoints (two generations of a linear-counting sketch)
    and decayed counts of its requests, its undocumented ones and the failed among those."""

    __slots__ = ("cur", "gen", "misses", "prev", "total", "ts", "undocumented")

    def __init__(self, t: float) -> None:
        self.gen = t
        self.cur = 0
        self.prev = 0
        self.ts = t
        self.total = 0.0
        self.undocumented = 0.0
        self.misses = 0.0

    def add(self, t: float, key: str | None, status: int, window_s: float) -> None:
        decay = math.exp(-(t - self.ts) / window_s) if t > self.ts else 1.0
        self.ts = max(self.ts, t)
        self.total = self.total * decay + 1.0
        self.undocumented *= decay
        self.misses *= decay
        if key is None:
            return
        self.undocumented += 1.0
        self.misses += status >= 400
        if t >= self.gen + window_s:
            self.prev = self.cur if t < self.gen + 2 * window_s else 0
            self.cur = 0
            self.gen = t
        self.cur |= 1 << (zlib.crc32(key.encode()) % _SKETCH_BITS)

    def distinct(self, now: float, window_s: float) -> float:
        """Distinct undocumented endpoints over the last one to two windows."""
        if now >= self.gen + 2 * window_s:
            return 0.0
        bits = self.cur if now >= self.gen + window_s else self.cur | self.prev
        return distinct(bits, _SKETCH_BITS)


class SpecDrift:
    """Matches every request to the documented operations; records drift findings and scores
    subjects that discover undocumented endpoints.

    The score starts at 0.45 with `min_distinct` distinct undocumented endpoints (method and route
    template) within one to two `window_s`, and reaches 1 at `full_distinct`; it shrinks when
    fewer than `min_miss_share` of those requests failed (a client of an undocumented API it is
    allowed to use gets 2xx) or when they are under `min_share` of the subject's requests (a
    shared address where many people each hit a stale link).

    Parameters
    ----------
    index
        The documented operations.
    window_s
        Time over which distinct endpoints are counted, and the decay of the request counts.
    min_distinct, full_distinct
        Distinct undocumented endpoints where the score starts and where it is full.
    min_miss_share
        Share of error answers (4xx/5xx) among the undocumented requests of a discovery.
    min_share
        Share of undocumented requests among all the subject's requests of a discovery.
    hit_weight
        Evidence left by one undocumented request.
    max_findings_per_kind, max_subjects
        Bounds of the findings (routes per kind, example subjects per route).

    Examples
    --------
    >>> spec = {"openapi": "3.0.3", "paths": {"/v1/products/{id}": {"get": {}}}}
    >>> drift = SpecDrift(SpecIndex([spec]))
    >>> state = SubjectState()
    >>> for i, word in enumerate("admin backup config debug env internal metrics old "
    ...                          "private secret test tmp upload v0 v2 wp".split()):
    ...     e = GatewayEvent(ts_ms=i * 300, gateway="kong", client_ip="198.51.100.4",
    ...                      method="GET", path=f"/v1/{word}", route=f"/v1/{word}",
    ...                      status=200 if word == "debug" else 404)
    ...     finding = drift.inspect(e)
    ...     state.note(drift.name, finding.score, e.ts_ms / 1000, finding.kind, finding.reason)
    ...     drift.update(state, e, SubjectContext("ip:198.51.100.4", "ip", e.ts_ms / 1000))
    >>> signal = drift.score(state, SubjectContext("ip:198.51.100.4", "ip", 4.5))
    >>> signal.kind, signal.score >= 0.6
    ('shadow_endpoint_discovery', True)
    >>> for part in signal.reason.split("; "):
    ...     print(part)
    17 distinct undocumented endpoints in ~60 s, 94% answered 4xx/5xx, 100% of its requests
    last: GET /v1/wp answered 404, no documented path
    >>> [(f.kind, f.route) for f in drift.findings()][:2]
    [('shadow_endpoint', '/v1/debug'), ('unknown_endpoint_probe', '/v1/admin')]
    """

    name = "spec_drift"
    version = "1"
    needs = ("memo",)

    def __init__(
        self,
        index: SpecIndex,
        *,
        window_s: float = 60.0,
        min_distinct: float = 8.0,
        full_distinct: float = 32.0,
        min_miss_share: float = 0.5,
        min_share: float = 0.3,
        hit_weight: float = 0.05,
        max_findings_per_kind: int = 256,
        max_subjects: int = 5,
    ) -> None:
        if not 0 < min_distinct < full_distinct:
            raise ValueError("need 0 < min_distinct < full_distinct")
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        if not (0 < min_miss_share <= 1 and 0 < min_share <= 1):
            raise ValueError("min_miss_share and min_share must be in (0, 1]")
        self.index = index
        self.window_s = window_s
        self.min_distinct = min_distinct
        self.full_distinct = full_distinct
        self.min_miss_share = min_miss_share
        self.min_share = min_share
        self.hit_weight = hit_weight
        self.log = FindingLog(max_findings_per_kind, max_subjects)
        # Calls per documented operation (bounded by the documents): what is never used.
        self.calls: dict[Operation, int] = {}
        # `update` runs once per subject right after `inspect` saw the event: reuse its match.
        self._last_event: GatewayEvent | None = None
        self._last_key: str | None = None

    def inspect(self, event: GatewayEvent) -> Signal | None:
        method = event.method
        entry = self.index.match(event.path, event.route)
        self._last_event = event
        if entry is None:
            route = _route(event)
            self._last_key = f"{method} {route}"
            kind = "shadow_endpoint" if event.status < 400 else "unknown_endpoint_probe"
            self.log.record(
                kind, method, route, event.ts_ms, event.status, event.partition_subject()
            )
            reason = f"{method} {_short(route)} answered {event.status}, no documented path"
            return Signal(self.name, kind, self.hit_weight, reason)
        op = entry.operations.get(method)
        if op is None:
            self._last_key = f"{method} {entry.template}"
            documented = sorted(m for m, o in entry.operations.items() if not o.implicit)
            self.log.record(
                "undocumented_method",
                method,
                entry.template,
                event.ts_ms,
                event.status,
                event.partition_subject(),
                documented_methods=documented,
            )
            reason = f"{method} not documented on {_short(entry.template)}, answered {event.status}"
            return Signal(self.name, "undocumented_method", self.hit_weight, reason)
        self._last_key = None
        self.calls[op] = self.calls.get(op, 0) + 1
        if op.deprecated:
            self._record_op("deprecated_operation", op, event)
        if event.query and not op.open_query:
            unknown = op.unknown_params(event.query)
            if unknown:
                self._record_op("unknown_parameter", op, event, unknown)
        return None

    def _record_op(
        self, kind: str, op: Operation, event: GatewayEvent, params: list[str] | None = None
    ) -> None:
        self.log.record(
            kind,
            event.method,
            op.template,
            event.ts_ms,
            event.status,
            event.partition_subject(),
            operation_id=op.operation_id,
            spec=op.spec,
            params=params,
        )

    def update(self, state: SubjectState, event: GatewayEvent, ctx: SubjectContext) -> None:
        if "/" in ctx.subject:
            return  # address ranges only see login traffic
        key = self._last_key if event is self._last_event else self._key(event)
        memo = state.memo.get(self.name) if state.memo is not None else None
        if memo is None:
            if key is None:
                return  # a subject pays for the sketch from its first undocumented request
            if state.memo is None:
                state.memo = {}
            memo = state.memo[self.name] = _Discovery(ctx.now)
        assert isinstance(memo, _Discovery)
        memo.add(ctx.now, key, event.status, self.window_s)

    def _key(self, event: GatewayEvent) -> str | None:
        entry = self.index.match(event.path, event.route)
        if entry is None:
            return f"{event.method} {_route(event)}"
        return None if event.method in entry.operations else f"{event.method} {entry.template}"

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        memo = state.memo.get(self.name) if state.memo is not None else None
        if not isinstance(memo, _Discovery):
            return None
        distinct = memo.distinct(ctx.now, self.window_s)
        if distinct < self.min_distinct or memo.undocumented <= 0:
            return None
        # The counts share one decay, so their ratios need none.
        share = memo.undocumented / memo.total
        missed = memo.misses / memo.undocumented
        volume = min(1.0, (distinct - self.min_distinct) / (self.full_distinct - self.min_distinct))
        score = (0.45 + 0.55 * volume) * min(1.0, share / self.min_share)
        score = round(score * min(1.0, missed / self.min_miss_share), 3)
        if score < 0.1:
            return None
        reason = (
            f"{distinct:.0f} distinct undocumented endpoints in ~{self.window_s:.0f} s, "
            f"{missed:.0%} answered 4xx/5xx, {share:.0%} of its requests"
        )
        last = state.evidence.get(self.name) if state.evidence is not None else None
        if last is not None:
            reason += f"; last: {last.reason}"
        return Signal(
            self.name, "shadow_endpoint_discovery", score, reason, "undocumented_endpoints",
            round(distinct, 3), None, self.min_distinct,
        )  # fmt: skip

    def findings(self) -> list[Finding]:
        """The drift found so far, most severe kind first (see `FindingLog`)."""
        return self.log.findings()


def _short(text: str, limit: int = 120) -> str:
    """Request text cut for a reason: it travels in every decision about the subject."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _route(event: GatewayEvent) -> str:
    """The event's route template when it is one of its path, else one made from the path."""
    route, path = event.route, event.path
    if route == path or ("{" in route and route.count("/") == path.count("/")):
        return route
    return route_template(path)


def drift_report(
    events: Iterable[GatewayEvent],
    specs: Sequence[Mapping[str, Any]],
    *,
    base_paths: Sequence[str] | None = None,
    ignored_params: Iterable[str] = (),
    max_subjects: int = 100_000,
    max_listed: int = 200,
) -> dict[str, Any]:
    """Replays `events` through a `SpecDrift` on `specs`: the findings, the documented operations
    never called, and the subjects whose discovery would be tagged or worse (JSON-able).

    Subject states are kept for the `max_subjects` most recently seen subjects, as a worker does.
    """
    drift = SpecDrift(SpecIndex(specs, base_paths=base_paths, ignored_params=ignored_params))
    fusion = Fusion()
    states: OrderedDict[str, SubjectState] = OrderedDict()
    flagged: dict[str, dict[str, Any]] = {}
    count = 0
    for event in events:
        count += 1
        t = event.ts_ms / 1000.0
        finding = drift.inspect(event)
        for subject in event.subjects():
            state = states.get(subject)
            if state is None:
                state = states[subject] = SubjectState()
                if len(states) > max_subjects:
                    states.popitem(last=False)
            else:
                states.move_to_end(subject)
            if finding is not None:
                state.note(drift.name, finding.score, t, finding.kind, finding.reason)
            ctx = SubjectContext(subject, subject.partition(":")[0], t)
            drift.update(state, event, ctx)
            if state.memo is None:
                continue
            signal = drift.score(state, ctx)
            if signal is None or fusion.action_for(signal.score) == "allow":
                continue
            seen = flagged.get(subject)
            if seen is None:
                if len(flagged) >= 10 * max_listed:
                    continue  # a scan from a million addresses: the first ones make the point
                seen = flagged[subject] = {
                    "subject": subject,
                    "score": 0.0,
                    "action": "allow",
                    "reason": "",
                    "first_flagged_ms": event.ts_ms,
                    "first_challenged_ms": None,
                }
            if signal.score > seen["score"]:
                action = fusion.action_for(signal.score)
                seen.update(score=signal.score, action=action, reason=signal.reason)
            if seen["first_challenged_ms"] is None and signal.score >= fusion.challenge:
                seen["first_challenged_ms"] = event.ts_ms
    documented = drift.index.operations
    uncalled = [op for op in documented if drift.calls.get(op, 0) == 0]
    discovery = sorted(flagged.values(), key=lambda s: (-s["score"], s["subject"]))
    return {
        "specs": list(drift.index.titles),
        "events": count,
        "documented_operations": len(documented),
        "documented_calls": sum(drift.calls.values()),
        "operations_called": len(documented) - len(uncalled),
        "uncalled_operations": [
            {"method": op.method, "route": op.template, "operation_id": op.operation_id}
            for op in uncalled[:max_listed]
        ],
        "findings": [f.as_dict() for f in drift.findings()],
        "finding_totals": dict(drift.log.totals),
        "findings_not_kept": dict(drift.log.evicted),
        "discovery_subjects": discovery[:max_listed],
    }
