"""Where every ingest path delivers: the envelope producer, the dead-letter topic, the retry
deduplicator and (for the listeners) the disk spool behind them, wired once from settings and
shared by the collector, the bridge and the line receivers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from pipeline.config import Settings
from pipeline.ingest.delivery import Delivery, SpoolMetrics
from pipeline.ingest.guards import Deduplicator
from pipeline.ingest.normalize import TimeWindow
from pipeline.ingest.redaction import Redactor
from pipeline.ingest.spool import Spool
from pipeline.kafka import DeadLetters, EnvelopeProducer, ensure_topics, make_producer

__all__ = ["SPOOL_OFF", "IngestOutputs", "ingest_outputs", "spool_path"]

log = structlog.get_logger(__name__)
SPOOL_OFF = "off"


@dataclass
class IngestOutputs:
    redactor: Redactor
    delivery: Delivery  # Kafka, or the spool when Kafka is slow (if the listener has one)
    deduplicator: Deduplicator
    window: TimeWindow  # how far from now a live entry's timestamp may be
    # Kafka itself; None while a listener with a spool could not reach it yet (what it takes
    # goes to the spool meanwhile). Always set without a spool.
    producer: EnvelopeProducer | None = None
    dead_letters: DeadLetters | None = None


def spool_path(settings: Settings, listener: str) -> Path | None:
    """The spool directory of one listener (`collector-8080`), None when spooling is off."""
    if settings.spool_dir.strip().lower() == SPOOL_OFF:
        return None
    return Path(settings.spool_dir).expanduser() / listener


@dataclass
class _Kafka:
    client: AIOKafkaProducer
    producer: EnvelopeProducer
    dead_letters: DeadLetters

    async def close(self) -> None:
        await self.producer.close()
        await self.client.stop()


async def _connect(settings: Settings) -> _Kafka:
    """Topics ensured, a producer started; the client is stopped again if anything fails."""
    await ensure_topics(settings)
    client = make_producer(settings)
    try:
        await client.start()
        partitions = len(await client.partitions_for(settings.topics.events))
    except BaseException:
        await client.stop()
        raise
    return _Kafka(
        client,
        EnvelopeProducer(
            client,
            settings.topics.events,
            partitions,
            max_events=settings.envelope_max_events,
            linger_ms=settings.envelope_linger_ms,
            timeout_s=settings.kafka_timeout_s,
        ),
        DeadLetters(client, settings.topics.dlq, settings.kafka_timeout_s),
    )


@contextlib.asynccontextmanager
async def ingest_outputs(
    settings: Settings, *, spool: str | None = None, registry: CollectorRegistry | None = None
) -> AsyncIterator[IngestOutputs]:
    """Topics ensured, one Kafka producer started for the life of the context. `spool` names
    the listener whose spool (under `settings.spool_dir`) backs its deliveries; a spool left by
    an earlier run is replayed. A listener with a spool starts even when Kafka cannot be reached
    (a restart during a broker outage): it spools, and connects in the background. Spool metrics
    go to `registry`."""
    directory = spool_path(settings, spool) if spool else None
    kafka: _Kafka | None = None
    connecting: asyncio.Task[None] | None = None
    if directory is None:
        kafka = await _connect(settings)
    else:
        try:
            kafka = await asyncio.wait_for(_connect(settings), settings.kafka_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("ingest.kafka_unreachable", error=str(exc) or type(exc).__name__,
                        detail="spooling until Kafka answers")  # fmt: skip
    delivery = Delivery(
        kafka.producer if kafka else None,
        kafka.dead_letters if kafka else None,
        spool=Spool(directory, max_bytes=settings.spool_max_bytes) if directory else None,
        metrics=SpoolMetrics(registry or CollectorRegistry()),
        spool_after_s=settings.spool_after_s,
        kafka_timeout_s=settings.kafka_timeout_s,
    )

    async def connect_later() -> None:
        nonlocal kafka
        delay = 1.0
        while kafka is None:
            await asyncio.sleep(delay)  # backoff pacing, not synchronisation
            try:
                kafka = await asyncio.wait_for(_connect(settings), settings.kafka_timeout_s)
            except (KafkaError, OSError, TimeoutError) as exc:
                delay = min(delay * 2, 30.0)
                log.warning("ingest.kafka_unreachable", error=str(exc) or type(exc).__name__,
                            retry_in_s=delay)  # fmt: skip
        delivery.attach(kafka.producer, kafka.dead_letters)
        log.info("ingest.kafka_connected")

    try:
        await delivery.start()
        if kafka is None:
            connecting = asyncio.create_task(connect_later())
        yield IngestOutputs(
            redactor=Redactor(settings.redaction_key.get_secret_value().encode()),
            delivery=delivery,
            deduplicator=Deduplicator(settings.dedupe_window_s, settings.dedupe_max_ids),
            window=TimeWindow(settings.event_max_future_s, settings.event_max_age_s),
            producer=kafka.producer if kafka else None,
            dead_letters=kafka.dead_letters if kafka else None,
        )
    finally:
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
        await delivery.close()
        if kafka is not None:
            await kafka.close()
