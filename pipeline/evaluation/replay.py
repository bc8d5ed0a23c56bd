"""Offline replay: gateway logs through the same detection step the workers run, in-process.

No broker, no Redis: lines are parsed by the collector's parsers, batched like envelopes, and fed to
a `Processor` on the *event* clock, so an hour of logs replayed in seconds still sees decisions
expire and refresh as they would have live.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.decisions import Decision
from pipeline.events import GatewayEvent
from pipeline.ingest.apigee import ApigeeParser
from pipeline.ingest.kong import KongParser
from pipeline.ingest.redaction import Redactor
from pipeline.ingest.syslog_wire import SyslogError, parse_line
from pipeline.worker.processor import EventTrace, Processor, StateStore

__all__ = ["SOURCES", "ReplayResult", "parse_lines", "replay"]

SOURCES = ("kong", "apigee-syslog")


@dataclass
class ReplayResult:
    events: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    decisions: list[Decision] = field(default_factory=list)
    parse_s: float = 0.0
    detect_s: float = 0.0
    subjects: int = 0

    def summary(self) -> dict[str, Any]:
        total = self.parse_s + self.detect_s
        return {
            "events": self.events,
            "rejects": sum(self.rejects.values()),
            "reject_reasons": dict(self.rejects.most_common(10)),
            "decisions": len(self.decisions),
            "subjects": self.subjects,
            "events_per_s": round(self.events / total) if total else None,
            "detect_events_per_s": round(self.events / self.detect_s) if self.detect_s else None,
        }


def parse_lines(
    lines: Iterable[bytes], source: str, redactor: Redactor, result: ReplayResult
) -> Iterator[GatewayEvent]:
    """Events from Kong NDJSON (one serializer entry or http-log body per line) or Apigee syslog
    lines; rejects are counted in `result` by reason, never raised."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    kong = KongParser(redactor)
    apigee = ApigeeParser(redactor)
    for line in lines:
        if not line.strip():
            continue
        started = time.perf_counter()
        if source == "kong":
            parsed = kong.parse_body(line)
        else:
            try:
                message = parse_line(line.rstrip(b"\n"))
            except SyslogError as exc:
                result.rejects[str(exc)] += 1
                continue
            if message is None:
                continue
            parsed = apigee.parse_payload(message.payload, host=message.host, ts_ms=message.ts_ms)
        for reject in parsed.rejects:
            result.rejects[reject.reason.split(":")[0]] += 1
        result.parse_s += time.perf_counter() - started
        yield from parsed.events


def replay(
    events: Iterable[GatewayEvent],
    processor: Processor,
    *,
    max_subjects: int = 500_000,
    batch_size: int = 256,
    on_event: Callable[[EventTrace], None] | None = None,
    observe: Callable[[GatewayEvent], None] | None = None,
    result: ReplayResult | None = None,
    store: StateStore | None = None,
) -> ReplayResult:
    """Run `events` (in time order) through `processor`, `batch_size` at a time like envelopes.

    `on_event` gets every event's trace (one batch per event, slower); `observe` sees each event
    before detection (the evaluator uses it to know who was active when); `store` keeps the
    states learned for the caller (`gatewatch recommend`)."""
    if not processor.event_clock:
        raise ValueError("replay needs a processor on the event clock (event_clock=True)")
    result = result if result is not None else ReplayResult()
    store = store if store is not None else StateStore(max_subjects)
    size = 1 if on_event is not None else batch_size
    batch: list[GatewayEvent] = []

    def flush() -> None:
        started = time.perf_counter()
        result.decisions.extend(processor.process(batch, store, on_event=on_event))
        result.detect_s += time.perf_counter() - started
        result.events += len(batch)
        batch.clear()

    for event in events:
        if observe is not None:
            observe(event)
        batch.append(event)
        if len(batch) >= size:
            flush()
    if batch:
        flush()
    result.subjects = len(store)
    return result
