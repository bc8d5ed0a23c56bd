"""Where every ingest path delivers: the envelope producer, the dead-letter topic and the retry
deduplicator, wired once from settings and shared by the collector, the bridge and the syslog
receiver."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pipeline.config import Settings
from pipeline.ingest.guards import Deduplicator
from pipeline.ingest.redaction import Redactor
from pipeline.kafka import DeadLetters, EnvelopeProducer, ensure_topics, make_producer

__all__ = ["IngestOutputs", "ingest_outputs"]


@dataclass
class IngestOutputs:
    redactor: Redactor
    producer: EnvelopeProducer
    dead_letters: DeadLetters
    deduplicator: Deduplicator


@contextlib.asynccontextmanager
async def ingest_outputs(settings: Settings) -> AsyncIterator[IngestOutputs]:
    """Topics ensured, one Kafka producer started for the life of the context."""
    await ensure_topics(settings)
    kafka = make_producer(settings)
    await kafka.start()
    producer = None
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
        yield IngestOutputs(
            redactor=Redactor(settings.redaction_key.get_secret_value().encode()),
            producer=producer,
            dead_letters=DeadLetters(kafka, settings.topics.dlq, settings.kafka_timeout_s),
            deduplicator=Deduplicator(settings.dedupe_window_s, settings.dedupe_max_ids),
        )
    finally:
        if producer is not None:
            await producer.close()
        await kafka.stop()
