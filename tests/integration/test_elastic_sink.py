"""The Elasticsearch/OpenSearch `_bulk` sink through the real runner on the real broker, against a
test server implementing `_bulk`'s documented contract (`tests/receivers/bulk.py`; neither can run
here): `create` actions into the data stream with ECS documents, items pushed back with 429 resent
alone, mapping errors dead-lettered, a lost answer resent and its 409s counted as delivered, and
credentials (API key or basic) required."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer

from pipeline.config import Settings
from sinks.elastic import build
from sinks.runner import SinkRunner
from tests.receivers.bulk import BulkServer
from tests.sinklib import make_alert, produce, runner_for, wait_until, with_settings

from .conftest import read_topic, serve

STREAM = "logs-gatewatch.alerts-default"


@asynccontextmanager
async def running(
    settings: Settings, server: BulkServer, **extra: object
) -> AsyncIterator[SinkRunner]:
    web_runner, base = await serve(server.app())
    settings = with_settings(
        settings,
        **{
            "sink_backoff_initial_s": 0.01,
            "sink_backoff_max_s": 0.05,
            "sink_batch_max_alerts": 50,
            "sink_elastic_url": base,
            "sink_elastic_api_key": server.api_key,
            **extra,
        },
    )
    sink = build(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    runner = runner_for(settings, sink, producer)
    await sink.start()
    await runner.consumer.start()
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.consumer.stop()
        await sink.close()
        await producer.stop()
        await web_runner.cleanup()


async def test_alerts_are_created_in_the_data_stream_as_ecs(settings: Settings) -> None:
    alerts = [make_alert(i) for i in range(120)]
    await produce(settings, [a.to_json() for a in alerts])
    server = BulkServer(expect=120)
    async with running(settings, server):
        async with asyncio.timeout(30):
            await server.indexed.wait()
    assert set(server.docs) == {a.id for a in alerts}
    doc = server.docs[alerts[4].id]
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["id"] == alerts[4].id
    assert doc["threat"]["technique"]["subtechnique"]["id"] == ["T1110.004"]
    assert doc["data_stream"] == {
        "type": "logs",
        "dataset": "gatewatch.alerts",
        "namespace": "default",
    }
    assert server.gzipped == server.requests >= 3


async def test_items_pushed_back_are_resent_alone(settings: Settings) -> None:
    alerts = [make_alert(i) for i in range(50)]
    busy = {alerts[3].id: 2, alerts[40].id: 1}
    await produce(settings, [a.to_json() for a in alerts])
    server = BulkServer(expect=50, busy=dict(busy))
    async with running(settings, server) as runner:
        async with asyncio.timeout(30):
            await server.indexed.wait()
    assert set(server.docs) == {a.id for a in alerts}
    assert {i: n for i, n in server.attempts.items() if n > 1} == {
        alerts[3].id: 3,
        alerts[40].id: 2,
    }
    assert server.requests == 3  # all 50, then the two pushed back, then the one left
    assert runner.totals.retried == 3
    assert runner.totals.rejected == 0


async def test_mapping_errors_are_dead_lettered_with_the_reason(settings: Settings) -> None:
    alerts = [make_alert(i) for i in range(30)]
    await produce(settings, [a.to_json() for a in alerts])
    server = BulkServer(expect=29, poison={alerts[17].id})
    async with running(settings, server) as runner:
        async with asyncio.timeout(30):
            await server.indexed.wait()
            dlq = await read_topic(settings.kafka, settings.topics.dlq, expect=1)
    assert set(server.docs) == {a.id for a in alerts} - {alerts[17].id}
    [(_, value, headers)] = dlq
    assert value == alerts[17].to_json()
    assert headers["gatewatch.reason"] == (
        b"elastic: 400 document_parsing_exception: "
        b"failed to parse field [event.original] of type [keyword]"
    )
    assert runner.totals.rejected == 1
    assert server.attempts[alerts[17].id] == 1  # never resent


async def test_a_lost_answer_is_resent_and_conflicts_count_as_delivered(
    settings: Settings,
) -> None:
    alerts = [make_alert(i) for i in range(40)]
    await produce(settings, [a.to_json() for a in alerts])
    server = BulkServer(expect=40, lose_answers=1)
    server.script = [(503, {"error": {"type": "unavailable_shards_exception"}, "status": 503})]
    async with running(settings, server) as runner:
        async with asyncio.timeout(30):
            await server.indexed.wait()

            async def resent() -> bool:  # after the lost answer: all 409, counted delivered
                return runner.totals.delivered >= 40

            await wait_until(resent)
    assert set(server.docs) == {a.id for a in alerts}
    assert runner.totals.rejected == 0
    assert runner.totals.retried == 80  # after the 503, after the lost answer
    assert all(n == 2 for n in server.attempts.values())


async def test_basic_auth_and_wrong_credentials(settings: Settings) -> None:
    alerts = [make_alert(i) for i in range(10)]
    await produce(settings, [a.to_json() for a in alerts])
    server = BulkServer(expect=10, basic=("gatewatch", "right"))
    async with running(
        settings,
        server,
        sink_elastic_api_key="",
        sink_elastic_username="gatewatch",
        sink_elastic_password="wrong",
    ) as runner:
        async with asyncio.timeout(30):

            async def refused_thrice() -> bool:  # 401: held and retried, not dead-lettered
                return server.requests >= 3

            await wait_until(refused_thrice)
            assert runner.totals.rejected == 0 and not server.docs
            server.basic = ("gatewatch", "wrong")  # the cluster accepts the password now
            await server.indexed.wait()
    assert set(server.docs) == {a.id for a in alerts}
