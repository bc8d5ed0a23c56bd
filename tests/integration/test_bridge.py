"""Kong kafka-log: raw serializer JSON per message → the bridge → redacted envelopes, with the raw
offsets committed only once the events are on the events topic."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline import envelopes
from pipeline.config import Settings
from pipeline.ingest.bridge import RawTopicBridge
from pipeline.ingest.kong import KongParser
from pipeline.ingest.outputs import ingest_outputs

from .conftest import FIXTURES, read_topic

KONG_FILES = sorted((FIXTURES / "kong").glob("*.json"))


async def test_raw_kafka_log_messages_become_envelopes(settings: Settings) -> None:
    async with ingest_outputs(settings) as out:
        raw = AIOKafkaProducer(bootstrap_servers=settings.kafka)
        await raw.start()
        try:
            for path in KONG_FILES:
                await raw.send_and_wait(settings.topics.raw_kong, path.read_bytes())
            await raw.send_and_wait(settings.topics.raw_kong, b'{"request": 1}')
            # Kong retried this one after a timeout: same request.id again.
            await raw.send_and_wait(settings.topics.raw_kong, KONG_FILES[2].read_bytes())
        finally:
            await raw.stop()

        consumer = AIOKafkaConsumer(
            settings.topics.raw_kong,
            bootstrap_servers=settings.kafka,
            group_id=f"{settings.worker_id}-bridge",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            bridge = RawTopicBridge(
                consumer,
                KongParser(out.redactor),
                out.producer,
                out.dead_letters,
                deduplicator=out.deduplicator,
            )
            handled = 0
            async with asyncio.timeout(30):
                while handled < 6:
                    handled += await bridge.step(timeout_ms=200)
            committed = {tp.partition: await consumer.committed(tp) for tp in consumer.assignment()}
            ends = await consumer.end_offsets(list(consumer.assignment()))
        finally:
            await consumer.stop()

    assert (bridge.forwarded, bridge.rejected, bridge.duplicates) == (4, 1, 1)
    assert committed == {tp.partition: end for tp, end in ends.items()}
    records = await read_topic(settings.kafka, settings.topics.events, expect=1)
    events = [e for _, value, _ in records for e in envelopes.decode(value)]
    assert sorted(e.status for e in events) == [200, 200, 200, 429]
    assert all(b"my-secret-key-not-redacted" not in value for _, value, _ in records)
    dead = await read_topic(settings.kafka, settings.topics.dlq, expect=1)
    assert b"request: expected an object" in dead[0][2]["gatewatch.reason"]
