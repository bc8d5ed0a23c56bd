"""The Kafka alert sink on the real broker: alerts re-published to another topic keyed by subject,
each one record as it was on the alerts topic (the producer is idempotent by default; the embedded
Tansu broker refuses producer ids, so this test turns that off)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from pipeline.alerts import Alert
from pipeline.config import Settings
from sinks.kafka import build
from tests.sinklib import make_alert, produce, runner_for, with_settings

from .conftest import read_topic


async def test_alerts_are_republished_keyed_by_subject(settings: Settings) -> None:
    target = f"{settings.topics.alerts}.soar"
    # Tansu's memory store answers InitProducerId with UnknownError: no idempotence here.
    settings = with_settings(
        settings, sink_kafka_topic=target, sink_batch_max_alerts=64, sink_kafka_idempotent=False
    )
    alerts = [make_alert(i) for i in range(200)]
    await produce(settings, [a.to_json() for a in alerts])
    await produce(settings, [b"\x00garbage"], topic=settings.topics.alerts)
    sink = build(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    runner = runner_for(settings, sink, producer)
    await sink.start()
    await runner.consumer.start()
    task = asyncio.create_task(runner.run())
    try:
        records = await read_topic(settings.kafka, target, expect=200)
        dlq = await read_topic(settings.kafka, settings.topics.dlq, expect=1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.consumer.stop()
        await sink.close()
        await producer.stop()
    assert len(records) == 200
    by_id = {a.id: a for a in alerts}
    for key, value, _ in records:
        alert = Alert.from_json(value)
        assert alert == by_id[alert.id]
        assert key == alert.subject.encode()
    assert b"not an alert" in dlq[0][2]["gatewatch.reason"]
