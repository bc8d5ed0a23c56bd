"""Kong `kafka-log` → envelopes: a raw topic of one serializer JSON per message, re-published as
redacted, partition-keyed envelopes on the events topic.

The raw topic holds secrets in clear (Kong's kafka-log redacts only `authorization`), so it should
live on a restricted topic; this bridge is what turns it into something workers may read.
At-least-once: the raw offsets are committed only after the events are acknowledged on the events
topic and the rejects on the dead-letter topic; while Kafka refuses, the bridge retries and
does not move on.
"""

from __future__ import annotations

import operator

import prometheus_client
import structlog
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.config import Settings
from pipeline.envelopes import EventRecord
from pipeline.events import Reject
from pipeline.ingest.guards import Deduplicator
from pipeline.ingest.kong import KongParser
from pipeline.ingest.outputs import ingest_outputs
from pipeline.kafka import DeadLetters, EnvelopeProducer, KafkaUnavailable
from pipeline.retry import until_done

__all__ = ["BridgeMetrics", "RawTopicBridge", "serve_bridge"]

log = structlog.get_logger(__name__)
MAX_BACKOFF_S = 5.0


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = Counter(
            "gatewatch_bridge_events_total",
            "Raw kafka-log entries by outcome (forwarded, rejected, duplicate)",
            ["outcome"],
            registry=registry,
        )
        self.rejects = Counter(
            "gatewatch_bridge_rejects_total",
            "Rejected entries by reason (the field named first in the reason)",
            ["reason"],
            registry=registry,
        )
        self.lag = Gauge(
            "gatewatch_bridge_lag",
            "Raw-topic records not yet bridged, per partition (high water - position)",
            ["partition"],
            registry=registry,
        )
        self.kafka_retries = Counter(
            "gatewatch_bridge_kafka_retries_total",
            "Rounds retried because Kafka did not confirm the events or dead letters",
            registry=registry,
        )


def _reason_label(reason: str) -> str:
    # "gatewatch.raw.kong/0@12: request: expected an object" -> "request".
    parts = reason.split(": ", 2)
    return (parts[1] if len(parts) > 1 else parts[0]).split(":", 1)[0][:64]


class RawTopicBridge:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        parser: KongParser,
        producer: EnvelopeProducer,
        dead_letters: DeadLetters,
        *,
        deduplicator: Deduplicator | None = None,
        max_records: int = 5_000,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        self.consumer = consumer
        self.parser = parser
        self.producer = producer
        self.dead_letters = dead_letters
        self.deduplicator = deduplicator
        self.max_records = max_records
        self.metrics = metrics or BridgeMetrics(CollectorRegistry())
        self.forwarded = 0
        self.rejected = 0
        self.duplicates = 0

    async def run(self) -> None:
        """Bridge until cancelled."""
        while True:
            await self.step()

    async def step(self, timeout_ms: int = 500) -> int:
        """One fetch → parse → produce → commit round; returns the records it handled."""
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_records)
        events: list[EventRecord] = []
        rejects: list[Reject] = []
        records = 0
        for tp, messages in batch.items():
            for message in messages:
                records += 1
                if message.value is None:
                    rejects.append(Reject(source="kong-kafka-log", reason="empty message", raw=b""))
                    continue
                result = self.parser.parse_records(message.value)
                events.extend(result.records)
                for reject in result.rejects:
                    reject.reason = f"{tp.topic}/{tp.partition}@{message.offset}: {reject.reason}"
                    rejects.append(reject)
        if not records:
            await self._measure_lag()
            return 0
        events = self._fresh(events)
        await self._deliver(events, rejects)
        await self.consumer.commit()
        self.forwarded += len(events)
        self.rejected += len(rejects)
        self.metrics.events.labels("forwarded").inc(len(events))
        if rejects:
            self.metrics.events.labels("rejected").inc(len(rejects))
            for reject in rejects:
                self.metrics.rejects.labels(_reason_label(reject.reason)).inc()
        await self._measure_lag()
        return records

    async def _measure_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None:
                position = await self.consumer.position(tp)
                self.metrics.lag.labels(str(tp.partition)).set(max(0, high - position))

    def _fresh(self, events: list[EventRecord]) -> list[EventRecord]:
        if self.deduplicator is None:
            return events
        fresh, dropped = self.deduplicator.filter(events, operator.itemgetter("request_id"))
        self.duplicates += dropped
        if dropped:
            self.metrics.events.labels("duplicate").inc(dropped)
        return fresh

    async def _deliver(self, events: list[EventRecord], rejects: list[Reject]) -> None:
        async def store() -> None:
            await self.producer.submit_records(events)
            await self.dead_letters.send(rejects, origin="kafka-log")

        await until_done(
            store,
            retry_on=KafkaUnavailable,
            event="bridge.kafka_unavailable",
            max_backoff_s=MAX_BACKOFF_S,
            on_retry=lambda _: self.metrics.kafka_retries.inc(),
        )
        if self.deduplicator is not None:
            self.deduplicator.remember(e["request_id"] for e in events if e["request_id"])


async def serve_bridge(
    settings: Settings,
    *,
    group_id: str = "gatewatch-bridge",
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Bridge the raw kafka-log topic until cancelled; /metrics on `metrics_port`. No spool:
    what the bridge has not delivered stays on the raw topic, uncommitted."""
    registry = CollectorRegistry()
    async with ingest_outputs(settings) as out:
        assert out.producer is not None and out.dead_letters is not None  # no spool: connected
        consumer = AIOKafkaConsumer(
            settings.topics.raw_kong,
            bootstrap_servers=settings.kafka,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        bridge = RawTopicBridge(
            consumer,
            KongParser(out.redactor, window=out.window),
            out.producer,
            out.dead_letters,
            deduplicator=out.deduplicator,
            metrics=BridgeMetrics(registry),
        )
        if metrics_port is not None:
            prometheus_client.start_http_server(metrics_port, addr=metrics_host, registry=registry)
            log.info("bridge.metrics", host=metrics_host, port=metrics_port)
        log.info("bridge.started", topic=settings.topics.raw_kong, group=group_id)
        try:
            await bridge.run()
        finally:
            await consumer.stop()
            log.info(
                "bridge.stopped",
                forwarded=bridge.forwarded,
                rejected=bridge.rejected,
                duplicates=bridge.duplicates,
            )
