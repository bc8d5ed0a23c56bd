"""The worker's Prometheus metrics, one registry per process, served at `/metrics` on its Faust
web port.

Counted per envelope, never per event: the processing lag histogram takes a whole envelope's event
times at once (sorted, then one bisection per bucket), so 500 events cost a few microseconds.
Consumer lag is the records between each assigned partition's highwater and the next offset this
worker will process (its processing position, not Faust's read-ahead fetch position).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from pipeline.alerts import Alert
from pipeline.decisions import Decision
from pipeline.events import GatewayEvent

__all__ = ["LAG_BUCKETS_S", "WorkerMetrics"]

log = structlog.get_logger(__name__)
LAG_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class _LagHistogram(Collector):
    """`gatewatch_processing_lag_seconds`: now minus event time, observed an envelope at a time."""

    def __init__(self, buckets: Sequence[float] = LAG_BUCKETS_S) -> None:
        self.bounds_ms = [b * 1000.0 for b in buckets]
        self.buckets = list(buckets)
        self.cumulative = [0] * len(buckets)  # events with lag <= each bound
        self.count = 0
        self.sum_s = 0.0

    def observe(self, ts_ms: list[int], now_ms: float) -> None:
        n = len(ts_ms)
        if not n:
            return
        ts_ms.sort()
        # lag <= bound  <=>  ts >= now - bound: the events from the first such one on.
        for i, bound in enumerate(self.bounds_ms):
            self.cumulative[i] += n - bisect_left(ts_ms, now_ms - bound)
        self.count += n
        self.sum_s += (now_ms * n - sum(ts_ms)) / 1000.0

    def collect(self) -> Iterator[HistogramMetricFamily]:
        buckets = [(repr(b), c) for b, c in zip(self.buckets, self.cumulative, strict=True)]
        yield HistogramMetricFamily(
            "gatewatch_processing_lag_seconds",
            "Seconds from a request (event time) to the end of its processing by this worker",
            buckets=[*buckets, ("+Inf", self.count)],
            sum_value=self.sum_s,
        )


class WorkerMetrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        subjects: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        self.events = Counter(
            "gatewatch_worker_events_total", "Events processed", registry=registry
        )
        self.envelopes = Counter(
            "gatewatch_worker_envelopes_total", "Envelopes handled", registry=registry
        )
        self.decisions = Counter(
            "gatewatch_decisions_total",
            "Decisions written (changes and refreshes)",
            ["action", "mode", "detector"],
            registry=registry,
        )
        self.alerts = Counter(
            "gatewatch_alerts_emitted_total",
            "Alerts written to the alerts topic (a finding window's close is a second write)",
            ["kind"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "gatewatch_worker_dead_letters_total",
            "Envelopes parked on the dead-letter topic",
            ["reason"],
            registry=registry,
        )
        self.subjects = Gauge(
            "gatewatch_subjects_held", "Subject states in this worker's memory", registry=registry
        )
        self.subjects.set_function(subjects)
        self.consumer_lag = Gauge(
            "gatewatch_consumer_lag",
            "Records between a partition's highwater and the next one this worker processes",
            ["topic", "partition"],
            registry=registry,
        )
        self.lag = _LagHistogram()
        registry.register(self.lag)
        # Next offset to process, per partition of the events topic (set after each envelope).
        self.positions: dict[int, int] = {}
        self._lag_labels: set[tuple[str, str]] = set()

    def envelope(
        self,
        events: Sequence[GatewayEvent],
        decisions: Iterable[Decision],
        alerts: Iterable[Alert],
        now_ms: float | None = None,
    ) -> None:
        """One envelope handled: its events, the decisions and alerts it wrote."""
        self.envelopes.inc()
        if events:
            self.events.inc(len(events))
            now_ms = time.time() * 1000 if now_ms is None else now_ms
            self.lag.observe([e.ts_ms for e in events], now_ms)
        for d in decisions:
            self.decisions.labels(d.action, d.mode, d.detector).inc()
        self.emitted(alerts)

    def emitted(self, alerts: Iterable[Alert]) -> None:
        for a in alerts:
            self.alerts.labels(a.kind).inc()

    def dead_letter(self, reason: str) -> None:
        """An envelope parked on the dead-letter topic (`bad_envelope`, `processing_failed`)."""
        self.envelopes.inc()
        self.dead_letters.labels(reason).inc()

    def set_consumer_lag(self, topic: str, highwaters: Mapping[int, int | None]) -> None:
        """Lag of each assigned partition from its highwater; partitions no longer assigned go."""
        seen = set()
        for partition, highwater in highwaters.items():
            position = self.positions.get(partition)
            if highwater is None or position is None:
                continue  # nothing fetched or processed yet: unknown, not zero
            labels = (topic, str(partition))
            seen.add(labels)
            self.consumer_lag.labels(*labels).set(max(0, highwater - position))
        for labels in self._lag_labels - seen:
            if labels[0] == topic:
                self.consumer_lag.remove(*labels)
        self._lag_labels = {labels for labels in self._lag_labels if labels[0] != topic} | seen

    def refresh_consumer_lag(self, consumer: Any, topic: str) -> None:
        """Read highwaters from a Faust consumer (its last fetch responses; no broker call)."""
        try:
            assigned = [tp for tp in consumer.assignment() if tp.topic == topic]
            highwaters = {tp.partition: consumer.highwater(tp) for tp in assigned}
        except Exception as exc:  # not started yet, or rebalancing: try again next time
            log.debug("metrics.consumer_lag_unavailable", error=repr(exc))
            return
        self.set_consumer_lag(topic, highwaters)

    def render(self) -> bytes:
        return generate_latest(self.registry)
