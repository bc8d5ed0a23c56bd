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

import structlog
from aiokafka import AIOKafkaConsumer

from pipeline.config import Settings
from pipeline.envelopes import EventRecord
from pipeline.events import Reject
from pipeline.ingest.guards import Deduplicator
from pipeline.ingest.kong import KongParser
from pipeline.ingest.outputs import ingest_outputs
from pipeline.kafka import DeadLetters, EnvelopeProducer, KafkaUnavailable
from pipeline.retry import until_done

__all__ = ["RawTopicBridge", "serve_bridge"]

log = structlog.get_logger(__name__)
MAX_BACKOFF_S = 5.0


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
    ) -> None:
        self.consumer = consumer
        self.parser = parser
        self.producer = producer
        self.dead_letters = dead_letters
        self.deduplicator = deduplicator
        self.max_records = max_records
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
            return 0
        events = self._fresh(events)
        await self._deliver(events, rejects)
        await self.consumer.commit()
        self.forwarded += len(events)
        self.rejected += len(rejects)
        return records

    def _fresh(self, events: list[EventRecord]) -> list[EventRecord]:
        if self.deduplicator is None:
            return events
        fresh, dropped = self.deduplicator.filter(events, operator.itemgetter("request_id"))
        self.duplicates += dropped
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
        )
        if self.deduplicator is not None:
            self.deduplicator.remember(e["request_id"] for e in events if e["request_id"])


async def serve_bridge(settings: Settings, *, group_id: str = "gatewatch-bridge") -> None:
    """Bridge the raw kafka-log topic until cancelled."""
    async with ingest_outputs(settings) as out:
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
            KongParser(out.redactor),
            out.producer,
            out.dead_letters,
            deduplicator=out.deduplicator,
        )
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
