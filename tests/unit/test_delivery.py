"""Delivery against a fake Kafka client the test controls: direct while Kafka answers (no disk
touched), the spool when it does not, replay in order, no resend of what landed after all,
dead letters kept with their origin, a full spool refused, a leftover spool replayed at start."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from pipeline import envelopes
from pipeline.envelopes import EventRecord
from pipeline.events import Reject
from pipeline.ingest.delivery import Delivery, SpoolMetrics
from pipeline.ingest.spool import Spool, SpoolFull
from pipeline.kafka import DeadLetters, EnvelopeProducer, KafkaUnavailable
from tests.unit.conftest import make_event

PARTITIONS = 3


@dataclass
class FakeKafka:
    """aiokafka's producer as Delivery uses it. While `up` is clear every write waits; writes
    made while it was clear fail once `fail_waiting` is set (a request timeout), or land when it
    is set again (a slow broker that took them after all)."""

    up: asyncio.Event = field(default_factory=asyncio.Event)
    fail_waiting: bool = False
    events: list[tuple[int, list[str]]] = field(default_factory=list)  # (partition, request ids)
    dead: list[tuple[bytes, dict[str, bytes]]] = field(default_factory=list)
    tasks: set[asyncio.Future[None]] = field(default_factory=set)
    # An answer's way back: a network delay, then loop iterations (socket, protocol, futures).
    delay_s: float = 0.0
    hops: int = 0

    def __post_init__(self) -> None:
        self.up.set()

    async def _wait(self) -> None:
        if not self.up.is_set():
            await self.up.wait()
            if self.fail_waiting:
                raise KafkaTimeoutError()

    async def send_and_wait(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> None:
        await self._wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        for _ in range(self.hops):
            await asyncio.sleep(0)
        assert partition is not None
        self.events.append((partition, [e.request_id or "" for e in envelopes.decode(value)]))

    async def send(self, topic: str, value: bytes, headers: Any = None) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def land() -> None:
            try:
                await self._wait()
            except KafkaTimeoutError as exc:
                future.set_exception(exc)
                return
            self.dead.append((value, dict(headers or [])))
            future.set_result(None)

        task = asyncio.ensure_future(land())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return future

    def ids(self) -> list[str]:
        return [rid for _, ids in self.events for rid in ids]

    def per_partition(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for p, ids in self.events:
            out.setdefault(p, []).extend(ids)
        return out


def records(prefix: str, n: int) -> list[EventRecord]:
    return [
        vars(make_event(request_id=f"{prefix}-{i:03d}", client_ip=f"10.0.0.{i % 7}"))
        for i in range(n)
    ]


@pytest.fixture
async def kafka() -> FakeKafka:
    return FakeKafka()


def delivery_for(kafka: FakeKafka, directory: Path | None, **options: Any) -> Delivery:
    producer = EnvelopeProducer(kafka, "events", PARTITIONS, max_events=50, linger_ms=0)  # type: ignore[arg-type]
    options.setdefault("spool_after_s", 0.05)
    options.setdefault("settle_s", 5.0)
    options.setdefault("retry_max_s", 0.05)
    max_bytes = options.pop("max_bytes", 1 << 20)
    return Delivery(
        producer,
        DeadLetters(kafka, "dlq"),  # type: ignore[arg-type]
        spool=Spool(directory, max_bytes=max_bytes) if directory else None,
        metrics=SpoolMetrics(CollectorRegistry()),
        kafka_timeout_s=5.0,
        **options,
    )


def counter(delivery: Delivery, name: str) -> float:
    value = delivery.metrics.__dict__[name]._value.get()
    return float(value)


async def test_while_kafka_answers_the_disk_is_never_touched(
    kafka: FakeKafka, tmp_path: Path
) -> None:
    delivery = delivery_for(kafka, tmp_path / "spool")
    await delivery.start()
    for n in range(20):
        await delivery.deliver(records(f"b{n}", 30), [], "10.1.1.1")
    assert not delivery.spooling
    assert list((tmp_path / "spool").glob("*.seg")) == []
    await delivery.close()
    assert not (tmp_path / "spool").exists()  # an empty spool leaves nothing behind
    assert len(kafka.ids()) == 600 and counter(delivery, "spooled") == 0


async def test_an_outage_is_spooled_and_replayed_in_order(kafka: FakeKafka, tmp_path: Path) -> None:
    delivery = delivery_for(kafka, tmp_path / "spool")
    await delivery.start()
    await delivery.deliver(records("a", 10), [], "x")
    kafka.up.clear()
    kafka.fail_waiting = True
    # Handed over together: all wait for Kafka, then all go to the spool, in order.
    await asyncio.gather(*(delivery.deliver(records(f"b{n}", 10), [], "x") for n in range(3)))
    assert delivery.spooling
    for n in range(3, 6):  # later batches go straight to the spool
        await delivery.deliver(records(f"b{n}", 10), [], "x")
    assert counter(delivery, "spooled") == 60
    kafka.up.set()
    await delivery.drained(10)
    await delivery.deliver(records("c", 10), [], "x")  # direct again
    await delivery.close()

    ids = kafka.ids()
    assert len(ids) == len(set(ids)) == 80
    for p, got in kafka.per_partition().items():
        assert got == sorted(got), f"partition {p} out of order"
    assert counter(delivery, "replayed") == 60
    assert delivery.metrics.records._value.get() == 0


async def test_writes_that_land_after_all_are_not_sent_twice(
    kafka: FakeKafka, tmp_path: Path
) -> None:
    delivery = delivery_for(kafka, tmp_path / "spool")
    await delivery.start()
    kafka.up.clear()  # slow, not failing: the first writes will land
    await delivery.deliver(records("slow", 20), [], "x")
    assert delivery.spooling and counter(delivery, "spooled") == 20
    await delivery.deliver(records("next", 20), [], "x")
    kafka.up.set()
    await delivery.drained(10)
    await delivery.close()
    expected = [f"{name}-{i:03d}" for name in ("next", "slow") for i in range(20)]
    assert sorted(kafka.ids()) == expected  # each once
    assert counter(delivery, "settled") == 20 and counter(delivery, "replayed") == 20


async def test_dead_letters_are_spooled_with_their_origin_and_arrival(
    kafka: FakeKafka, tmp_path: Path
) -> None:
    delivery = delivery_for(kafka, tmp_path / "spool", clock=lambda: 1_700_000_000.0)
    await delivery.start()
    kafka.up.clear()
    kafka.fail_waiting = True
    reject = Reject(source="kong", reason="response.status: 99999 is not an HTTP status", raw=b"{}")
    await delivery.deliver(records("r", 2), [reject], "192.0.2.9")
    kafka.up.set()
    await delivery.drained(10)
    await delivery.close()
    [(value, headers)] = kafka.dead
    assert value == b"{}"
    assert headers["gatewatch.origin"] == b"192.0.2.9"
    assert headers["gatewatch.received_at"] == b"1700000000000"
    assert headers["gatewatch.reason"].startswith(b"response.status")


async def test_a_full_spool_refuses_and_recovers(kafka: FakeKafka, tmp_path: Path) -> None:
    delivery = delivery_for(kafka, tmp_path / "spool", max_bytes=12_000)
    await delivery.start()
    kafka.up.clear()
    kafka.fail_waiting = True
    await delivery.deliver(records("a", 10), [], "x")
    with pytest.raises(SpoolFull):
        for n in range(50):
            await delivery.deliver(records(f"b{n}", 10), [], "x")
    assert counter(delivery, "full") >= 1
    kafka.up.set()
    await delivery.drained(10)
    await delivery.deliver(records("after", 10), [], "x")
    await delivery.close()
    assert len(kafka.ids()) == len(set(kafka.ids()))  # what was refused was never sent


async def test_without_a_spool_a_slow_kafka_is_kafka_unavailable(kafka: FakeKafka) -> None:
    delivery = delivery_for(kafka, None, spool_after_s=0.05)
    delivery.kafka_timeout_s = 0.05
    await delivery.start()
    kafka.up.clear()
    with pytest.raises(KafkaUnavailable):
        await delivery.deliver(records("a", 5), [], "x")
    kafka.up.set()
    await delivery.close()


async def test_a_spool_left_by_an_earlier_run_is_replayed_first(
    kafka: FakeKafka, tmp_path: Path
) -> None:
    first = delivery_for(kafka, tmp_path / "spool")
    await first.start()
    kafka.up.clear()
    kafka.fail_waiting = True
    await first.deliver(records("old", 15), [], "x")
    await first.close()  # stopped during the outage: the spool stays
    assert list((tmp_path / "spool").glob("*.seg"))

    # A new process, a new client: the first one's writes died with it.
    old, kafka = kafka, FakeKafka()
    old.up.set()  # (they fail: fail_waiting)
    second = delivery_for(kafka, tmp_path / "spool")
    await second.start()
    assert second.spooling
    new = second.deliver(records("new", 15), [], "x")  # queued behind the old ones
    await new
    await second.drained(10)
    await second.close()
    for p, got in kafka.per_partition().items():
        old = [i for i in got if i.startswith("old")]
        assert got[: len(old)] == old, f"partition {p}: new traffic overtook the spool"
    assert sorted(i for i in kafka.ids() if i.startswith("old")) == [
        f"old-{i:03d}" for i in range(15)
    ]


async def test_a_busy_process_is_not_taken_for_a_slow_broker(
    kafka: FakeKafka, tmp_path: Path
) -> None:
    """The wait's timeout fires late because this process was busy (a burst being parsed): the
    broker's answer is already there to be read, so the batch is not spooled."""
    kafka.delay_s, kafka.hops = 0.01, 5
    delivery = delivery_for(kafka, tmp_path / "spool", spool_after_s=0.05)
    await delivery.start()
    sending = asyncio.create_task(delivery.deliver(records("a", 10), [], "x"))
    await asyncio.sleep(0)  # the batch is handed over and waits for Kafka ...
    time.sleep(0.4)  # noqa: ASYNC251 - ... while the loop is blocked for 8x the spool delay
    await sending
    assert not delivery.spooling and counter(delivery, "spooled") == 0
    await delivery.close()
    assert len(kafka.ids()) == 10
