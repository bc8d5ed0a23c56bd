"""Where every ingest path delivers: the envelope producer, the dead-letter topic, the retry
deduplicator and (for the listeners) the disk spool behind them, wired once from settings and
shared by the collector, the bridge and the line receivers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from pipeline.config import Settings
from pipeline.ingest.delivery import Delivery, SpoolMetrics
from pipeline.ingest.guards import Deduplicator
from pipeline.ingest.normalize import TimeWindow
from pipeline.ingest.redaction import Redactor
from pipeline.ingest.spool import Spool
from pipeline.kafka import DeadLetters, EnvelopeProducer, ensure_topics, make_producer

__all__ = ["SPOOL_OFF", "IngestOutputs", "ingest_outputs", "spool_path"]

SPOOL_OFF = "off"


@dataclass
class IngestOutputs:
    redactor: Redactor
    producer: EnvelopeProducer
    dead_letters: DeadLetters
    deduplicator: Deduplicator
    delivery: Delivery  # Kafka, or the spool when Kafka is slow (if the listener has one)
    window: TimeWindow  # how far from now a live entry's timestamp may be


def spool_path(settings: Settings, listener: str) -> Path | None:
    """The spool directory of one listener (`collector-8080`), None when spooling is off."""
    if settings.spool_dir.strip().lower() == SPOOL_OFF:
        return None
    return Path(settings.spool_dir).expanduser() / listener


@contextlib.asynccontextmanager
async def ingest_outputs(
    settings: Settings, *, spool: str | None = None, registry: CollectorRegistry | None = None
) -> AsyncIterator[IngestOutputs]:
    """Topics ensured, one Kafka producer started for the life of the context. `spool` names
    the listener whose spool (under `settings.spool_dir`) backs its deliveries; a spool left by
    an earlier run is replayed. Spool metrics go to `registry`."""
    await ensure_topics(settings)
    kafka = make_producer(settings)
    await kafka.start()
    producer = None
    delivery = None
    try:
        partitions = len(await kafka.partitions_for(settings.topics.events))
        producer = EnvelopeProducer(
            kafka,
            settings.topics.events,
            partitions,
            max_events=settings.envelope_max_events,
            linger_ms=settings.envelope_linger_ms,
            timeout_s=settings.kafka_timeout_s,
        )
        dead_letters = DeadLetters(kafka, settings.topics.dlq, settings.kafka_timeout_s)
        directory = spool_path(settings, spool) if spool else None
        delivery = Delivery(
            producer,
            dead_letters,
            spool=Spool(directory, max_bytes=settings.spool_max_bytes) if directory else None,
            metrics=SpoolMetrics(registry or CollectorRegistry()),
            spool_after_s=settings.spool_after_s,
            kafka_timeout_s=settings.kafka_timeout_s,
        )
        await delivery.start()
        yield IngestOutputs(
            redactor=Redactor(settings.redaction_key.get_secret_value().encode()),
            producer=producer,
            dead_letters=dead_letters,
            deduplicator=Deduplicator(settings.dedupe_window_s, settings.dedupe_max_ids),
            delivery=delivery,
            window=TimeWindow(settings.event_max_future_s, settings.event_max_age_s),
        )
    finally:
        if delivery is not None:
            await delivery.close()
        if producer is not None:
            await producer.close()
        await kafka.stop()
