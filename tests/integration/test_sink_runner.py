"""The sink runner on the real broker: only the ids a sink names are resent (after at least the
receiver's Retry-After), refused alerts and malformed records reach the dead-letter topic with
their reason, a down receiver holds the cursor, and a new runner in the same group resumes exactly
where the last commit left off."""

from __future__ import annotations

import asyncio
import itertools
import time

from aiokafka import AIOKafkaProducer

from pipeline.alerts import Alert
from pipeline.config import Settings
from sinks.base import Delivery
from tests.sinklib import (
    ScriptedSink,
    committed,
    make_alert,
    produce,
    runner_for,
    wait_until,
    with_settings,
)

from .conftest import read_topic


def fast(settings: Settings) -> Settings:
    return with_settings(settings, sink_backoff_initial_s=0.01, sink_backoff_max_s=0.05)


async def drain(runner: object, until: int) -> None:
    """Run batches until `until` records were handled."""
    handled = 0
    async with asyncio.timeout(30):
        while handled < until:
            handled += await runner.step(idle_s=0.2)  # type: ignore[attr-defined]


async def test_only_failed_ids_are_resent_and_refusals_are_dead_lettered(
    settings: Settings,
) -> None:
    settings = fast(settings)
    alerts = [make_alert(i) for i in range(20)]
    flaky, flakier, bad = alerts[3].id, alerts[7].id, alerts[12].id
    failures = {flaky: 1, flakier: 2}
    sent_at: dict[str, list[float]] = {}

    def answer(_: int, batch: list[Alert]) -> Delivery:
        delivery = Delivery(retry_reason="HTTP 503", retry_after=0.05)
        for alert in batch:
            sent_at.setdefault(alert.id, []).append(time.monotonic())
            if failures.get(alert.id, 0) > 0:
                failures[alert.id] -= 1
                delivery.retry.append(alert.id)
            elif alert.id == bad:
                delivery.rejected[alert.id] = "HTTP 400: invalid data format"
        return delivery

    values = [a.to_json() for a in alerts[:10]]
    values += [b"{not json", b'{"id": "gw-1", "kind": "decision"}', b""]
    values += [a.to_json() for a in alerts[10:]]
    await produce(settings, values)
    sink = ScriptedSink(answer)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    runner = runner_for(settings, sink, producer)
    await runner.consumer.start()
    try:
        await drain(runner, len(values))
        dlq = await read_topic(settings.kafka, settings.topics.dlq, expect=4)
    finally:
        await runner.consumer.stop()
        await producer.stop()

    assert sorted(sink.delivered) == sorted(a.id for a in alerts if a.id != bad)
    # Resends carried only the failed ids, each at least the receiver's Retry-After later.
    resends = [call for call in sink.calls[1:]]
    assert sorted(i for call in resends for i in call) == sorted([flaky, flakier, flakier])
    for alert_id in (flaky, flakier):
        times = sent_at[alert_id]
        assert all(b - a >= 0.05 for a, b in itertools.pairwise(times))
    reasons = sorted(headers["gatewatch.reason"].decode() for _, _, headers in dlq)
    assert any(r == "HTTP 400: invalid data format" for r in reasons)
    assert sum("not an alert" in r for r in reasons) == 2
    assert sum("empty record" in r for r in reasons) == 1
    assert {h["gatewatch.origin"] for _, _, h in dlq} == {b"sink:scripted"}
    assert alerts[12].to_json() in {value for _, value, _ in dlq}  # the document itself
    assert await committed(settings, "gatewatch-sink-scripted") == len(values)
    sample = runner.metrics.registry.get_sample_value
    assert sample("gatewatch_sink_alerts_total", {"sink": "scripted", "outcome": "delivered"}) == 19
    assert sample("gatewatch_sink_alerts_total", {"sink": "scripted", "outcome": "rejected"}) == 1
    assert sample("gatewatch_sink_alerts_total", {"sink": "scripted", "outcome": "retried"}) == 3
    assert sample("gatewatch_sink_dead_letters_total", {"sink": "scripted"}) == 4
    assert sample("gatewatch_sink_lag", {"sink": "scripted"}) == 0
    assert runner.totals.malformed == 3


async def test_a_down_receiver_holds_the_cursor_and_the_backlog_grows(settings: Settings) -> None:
    settings = fast(settings)
    down = asyncio.Event()
    backed_up = asyncio.Event()
    up = asyncio.Event()

    def answer(call: int, batch: list[Alert]) -> Delivery:
        if not up.is_set():
            if call >= 3:
                down.set()
            # The gauge is refreshed before each retry; Tansu's end offset is the last record
            # batch's base offset (79 here, one record per batch; a real Kafka says 80).
            if (lag("gatewatch_sink_lag", {"sink": "down"}) or 0) >= 79:
                backed_up.set()
            raise ConnectionRefusedError(111, "Connection refused")
        return Delivery()

    await produce(settings, [make_alert(i).to_json() for i in range(50)])
    sink = ScriptedSink(answer, name="down")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    runner = runner_for(settings, sink, producer)
    lag = runner.metrics.registry.get_sample_value
    await runner.consumer.start()
    task = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(30):
            await down.wait()
            # More alerts arrive while the receiver is down: nothing is committed, lag grows.
            more = [make_alert(i).to_json() for i in range(50, 80)]
            await produce(settings, more, one_by_one=True)
            assert await committed(settings, "gatewatch-sink-down") == 0
            await backed_up.wait()
            assert await committed(settings, "gatewatch-sink-down") == 0
            up.set()
        await wait_until(lambda: _committed_is(settings, "gatewatch-sink-down", 80))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.consumer.stop()
        await producer.stop()
    assert sorted(set(sink.delivered)) == sorted(make_alert(i).id for i in range(80))
    assert runner.totals.rejected == 0


async def test_a_new_runner_resumes_after_the_last_commit(settings: Settings) -> None:
    settings = fast(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    seen: list[list[str]] = []
    try:
        for start in (0, 30):
            await produce(settings, [make_alert(i).to_json() for i in range(start, start + 30)])
            sink = ScriptedSink(lambda _c, _b: Delivery(), name="resume")
            runner = runner_for(settings, sink, producer)
            await runner.consumer.start()
            try:
                await drain(runner, 30)
            finally:
                await runner.consumer.stop()
            seen.append(sink.delivered)
    finally:
        await producer.stop()
    assert seen[0] == [make_alert(i).id for i in range(30)]
    assert seen[1] == [make_alert(i).id for i in range(30, 60)]  # no skip, no replay
    assert await committed(settings, "gatewatch-sink-resume") == 60


async def _committed_is(settings: Settings, group: str, offset: int) -> bool:
    return await committed(settings, group) >= offset


class GatedSink:
    """Holds the first batch until released; later batches are delivered at once."""

    name = "gated"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.later = asyncio.Event()
        self.delivered: list[str] = []
        self.calls = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, alerts: list[Alert]) -> Delivery:
        self.calls += 1
        if self.calls == 1:
            await self.release.wait()
        elif self.calls == 3:
            self.later.set()
        self.delivered += [a.id for a in alerts]
        return Delivery()


async def test_batches_in_flight_commit_in_order(settings: Settings) -> None:
    settings = with_settings(settings, sink_max_in_flight=4, sink_batch_max_alerts=10)
    await produce(settings, [make_alert(i).to_json() for i in range(40)])
    sink = GatedSink()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    runner = runner_for(settings, sink, producer)
    await runner.consumer.start()
    task = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(30):
            await sink.later.wait()  # batches 2 and 3 went out while batch 1 is held
        assert await committed(settings, "gatewatch-sink-gated") == 0
        sink.release.set()
        await wait_until(lambda: _committed_is(settings, "gatewatch-sink-gated", 40))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.consumer.stop()
        await producer.stop()
    assert sorted(sink.delivered) == sorted(make_alert(i).id for i in range(40))
