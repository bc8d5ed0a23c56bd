"""The Splunk HEC sink through the real runner on the real broker, against a test server that
implements HEC's documented contract (`tests/receivers/hec.py`; Splunk cannot run here): the
envelope fields and gzip, retries on 503/500 with Retry-After, a bad event found and dead-lettered
(named by Splunk, or by splitting), indexer acknowledgement with a lost ack, and a wrong token
holding the cursor instead of dropping alerts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer

from pipeline.config import Settings
from sinks.runner import SinkRunner
from sinks.splunk import SplunkHecSink, build
from tests.receivers.hec import HecServer
from tests.sinklib import committed, make_alert, produce, runner_for, with_settings

from .conftest import read_topic, serve

CHANNEL = "0f3a1d58-6c1e-4a53-9a61-3c1f3f6e2a10"


def configured(settings: Settings, base: str, **extra: object) -> Settings:
    return with_settings(
        settings,
        **{
            "sink_backoff_initial_s": 0.01,
            "sink_backoff_max_s": 0.05,
            "sink_batch_max_alerts": 40,
            "sink_splunk_url": base,
            "sink_splunk_token": "hec-token",
            "sink_splunk_index": "gatewatch",
            **extra,
        },
    )


@asynccontextmanager
async def running(
    settings: Settings, server: HecServer, **extra: object
) -> AsyncIterator[tuple[SinkRunner, SplunkHecSink]]:
    """A HEC server, the sink built from settings, and its runner going in the background."""
    web_runner, base = await serve(server.app())
    settings = configured(settings, base, **extra)
    sink = build(settings)
    sink.ack_poll_s = 0.05  # the test server acknowledges at once
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    runner = runner_for(settings, sink, producer)
    await sink.start()
    await runner.consumer.start()
    task = asyncio.create_task(runner.run())
    try:
        yield runner, sink
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.consumer.stop()
        await sink.close()
        await producer.stop()
        await web_runner.cleanup()


async def test_events_carry_the_hec_envelope_gzipped(settings: Settings) -> None:
    alerts = [make_alert(i) for i in range(100)]
    await produce(settings, [a.to_json() for a in alerts])
    server = HecServer(expect=100)
    async with running(settings, server, sink_splunk_host="") as (_, sink):
        async with asyncio.timeout(30):
            await server.indexed.wait()
        assert await sink.health()
    assert sorted(server.ids()) == sorted(a.id for a in alerts)
    first = next(e for e in server.events if e["event"]["id"] == alerts[7].id)
    assert first["time"] == alerts[7].event_time / 1000
    assert (first["host"], first["source"], first["sourcetype"], first["index"]) == (
        "kong-1",
        "gatewatch",
        "gatewatch:alert",
        "gatewatch",
    )
    assert first["event"] == alerts[7].model_dump(mode="json")
    assert server.gzipped == server.requests >= 3  # batches of at most 40


async def test_busy_and_failing_hec_is_retried_honouring_retry_after(settings: Settings) -> None:
    await produce(settings, [make_alert(i).to_json() for i in range(30)])
    server = HecServer(expect=30)
    server.script = [(503, 9, {"Retry-After": "1"}), (500, 8, {})]
    started = time.monotonic()
    async with running(settings, server) as (runner, _):
        async with asyncio.timeout(30):
            await server.indexed.wait()
        retried = runner.metrics.registry.get_sample_value(
            "gatewatch_sink_alerts_total", {"sink": "splunk", "outcome": "retried"}
        )
    assert time.monotonic() - started >= 1.0  # the 503's Retry-After was waited out
    assert sorted(set(server.ids())) == sorted(make_alert(i).id for i in range(30))
    assert retried == 60  # the batch of 30, twice
    assert runner.totals.rejected == 0


async def test_a_bad_event_named_by_splunk_is_dead_lettered_and_the_rest_resent(
    settings: Settings,
) -> None:
    alerts = [make_alert(i) for i in range(40)]
    bad = {alerts[5].id, alerts[33].id}
    await produce(settings, [a.to_json() for a in alerts])
    server = HecServer(expect=38, poison=bad)
    async with running(settings, server) as (runner, _):
        async with asyncio.timeout(30):
            await server.indexed.wait()
            dlq = await read_topic(settings.kafka, settings.topics.dlq, expect=2)
    assert set(server.ids()) == {a.id for a in alerts} - bad
    assert {value for _, value, _ in dlq} == {a.to_json() for a in alerts if a.id in bad}
    assert {h["gatewatch.reason"] for _, _, h in dlq} == {
        b"splunk: HTTP 400 code 6: Invalid data format"
    }
    assert runner.totals.rejected == 2
    assert server.requests == 3  # one refusal per bad event, named: no splitting needed


async def test_a_bad_event_splunk_does_not_name_is_found_by_splitting(settings: Settings) -> None:
    alerts = [make_alert(i) for i in range(40)]
    bad = alerts[21].id
    await produce(settings, [a.to_json() for a in alerts])
    server = HecServer(expect=39, poison={bad}, name_invalid_event=False)
    async with running(settings, server):
        async with asyncio.timeout(30):
            await server.indexed.wait()
            dlq = await read_topic(settings.kafka, settings.topics.dlq, expect=1)
    assert set(server.ids()) == {a.id for a in alerts} - {bad}
    assert [value for _, value, _ in dlq] == [alerts[21].to_json()]
    # 40 -> 20+20 -> 10+10 -> 5+5 -> 2+3 -> 1+2 -> 1+1: a few requests, not one per alert.
    assert server.requests <= 14


async def test_indexer_ack_lost_means_the_batch_is_sent_again(settings: Settings) -> None:
    alerts = [make_alert(i) for i in range(30)]
    await produce(settings, [a.to_json() for a in alerts])
    server = HecServer(expect=30, ack=True, lose_acks=1)
    async with running(
        settings,
        server,
        sink_splunk_ack=True,
        sink_splunk_channel=CHANNEL,
        sink_splunk_ack_timeout_s=1.0,
    ) as (runner, _):
        async with asyncio.timeout(30):
            await server.indexed.wait()
    assert server.channels == {CHANNEL}
    assert sorted(set(server.ids())) == sorted(a.id for a in alerts)
    assert runner.totals.retried == 30  # the unacknowledged batch, once
    assert server.requests == 2


async def test_a_wrong_token_holds_the_cursor_until_fixed(settings: Settings) -> None:
    alerts = [make_alert(i) for i in range(20)]
    await produce(settings, [a.to_json() for a in alerts])
    server = HecServer(expect=20, token="rotated-token", refused_after=3)
    async with running(settings, server) as (runner, _):
        async with asyncio.timeout(30):
            await server.refused.wait()  # 403, code 4: invalid token
            assert await committed(settings, "gatewatch-sink-splunk") == 0
            assert runner.totals.rejected == 0  # held, not dead-lettered
            server.token = "hec-token"  # the operator fixes the token
            await server.indexed.wait()
    assert sorted(set(server.ids())) == sorted(a.id for a in alerts)
