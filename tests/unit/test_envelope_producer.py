"""EnvelopeProducer against a fake aiokafka producer: batching per partition, durability, errors."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from aiokafka.errors import KafkaError, KafkaTimeoutError

from pipeline import envelopes
from pipeline.events import GatewayEvent
from pipeline.kafka import EnvelopeProducer, KafkaUnavailable
from tests.unit.conftest import make_event

TOPIC = "gatewatch.events"


@dataclass
class Sent:
    topic: str
    partition: int
    key: bytes
    events: list[GatewayEvent]


@dataclass
class FakeProducer:
    """Records what aiokafka would have written. `release`, when given, holds every send until it
    is set; `error`, when given, is raised instead of writing."""

    release: asyncio.Event | None = None
    error: BaseException | None = None
    sent: list[Sent] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def send_and_wait(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> None:
        self.started.set()
        if self.release is not None:
            await self.release.wait()
        if self.error is not None:
            raise self.error
        assert key is not None and partition is not None
        self.sent.append(Sent(topic, partition, key, envelopes.decode(value)))


def producer_for(fake: FakeProducer, partitions: int = 4, **kwargs: object) -> EnvelopeProducer:
    # linger 0: the partial envelopes go out on the next loop iteration, not after a real delay.
    return EnvelopeProducer(fake, TOPIC, partitions, max_events=500, linger_ms=0, **kwargs)  # type: ignore[arg-type]


def events_for(subjects: int, total: int) -> list[GatewayEvent]:
    return [
        make_event(
            ts_ms=1_700_000_000_000 + i,
            request_id=f"r{i}",
            client_ip=f"10.0.{(i % subjects) // 256}.{(i % subjects) % 256}",
        )
        for i in range(total)
    ]


async def test_events_are_grouped_by_partition_in_bounded_envelopes() -> None:
    fake = FakeProducer()
    events = events_for(subjects=300, total=1200)
    # Two partitions so that each gets more than one envelope's worth (~600 events).
    producer = producer_for(fake, partitions=2)
    await producer.submit(events)

    assert all(s.topic == TOPIC for s in fake.sent)
    assert all(0 < len(s.events) <= 500 for s in fake.sent)
    for s in fake.sent:
        assert s.key == f"p{s.partition}".encode()
        assert {envelopes.partition_for(e.partition_subject(), 2) for e in s.events} == {
            s.partition
        }
    assert sorted(e.request_id for s in fake.sent for e in s.events) == sorted(
        e.request_id for e in events
    )
    per_partition = {p: sum(len(s.events) for s in fake.sent if s.partition == p) for p in (0, 1)}
    assert min(per_partition.values()) > 500  # so the 500 cap was really exercised
    assert len(fake.sent) == 4


async def test_many_subjects_over_four_partitions() -> None:
    fake = FakeProducer()
    events = events_for(subjects=1000, total=1200)
    await producer_for(fake).submit(events)
    assert {s.partition for s in fake.sent} == {0, 1, 2, 3}
    assert len(fake.sent) == 4  # ~300 per partition: one envelope each
    assert sum(len(s.events) for s in fake.sent) == 1200
    for s in fake.sent:
        assert all(
            envelopes.partition_for(e.partition_subject(), 4) == s.partition for e in s.events
        )


async def test_event_order_is_kept_within_a_partition() -> None:
    fake = FakeProducer()
    events = events_for(subjects=1, total=1200)  # one subject: one partition, three envelopes
    await producer_for(fake).submit(events)
    assert [len(s.events) for s in fake.sent] == [500, 500, 200]
    assert [e.request_id for s in fake.sent for e in s.events] == [e.request_id for e in events]


async def test_consumer_events_follow_the_consumer_not_the_ip() -> None:
    fake = FakeProducer()
    events = [make_event(consumer="acme", client_ip=f"10.1.0.{i}") for i in range(50)]
    await producer_for(fake).submit(events)
    assert [s.partition for s in fake.sent] == [envelopes.partition_for("consumer:acme", 4)]


async def test_submit_waits_for_the_broker() -> None:
    release = asyncio.Event()
    fake = FakeProducer(release=release)
    submit = asyncio.create_task(producer_for(fake).submit(events_for(subjects=3, total=10)))

    await asyncio.wait_for(fake.started.wait(), 5)  # the envelope reached the broker...
    for _ in range(5):
        await asyncio.sleep(0)
    assert not submit.done()  # ...but is not acknowledged, so neither is the caller
    assert fake.sent == []

    release.set()
    await asyncio.wait_for(submit, 5)
    assert sum(len(s.events) for s in fake.sent) == 10


async def test_submit_of_nothing_returns_at_once() -> None:
    fake = FakeProducer()
    await producer_for(fake).submit([])
    assert fake.sent == [] and not fake.started.is_set()


@pytest.mark.parametrize("error", [KafkaError("broker down"), KafkaTimeoutError()])
async def test_kafka_error_becomes_kafka_unavailable(error: KafkaError) -> None:
    fake = FakeProducer(error=error)
    with pytest.raises(KafkaUnavailable) as caught:
        await producer_for(fake).submit([make_event()])
    assert isinstance(caught.value.__cause__, KafkaError)


async def test_any_send_failure_becomes_kafka_unavailable() -> None:
    fake = FakeProducer(error=RuntimeError("connection reset"))
    with pytest.raises(KafkaUnavailable, match="connection reset"):
        await producer_for(fake).submit([make_event()])


async def test_timeout_becomes_kafka_unavailable() -> None:
    release = asyncio.Event()
    fake = FakeProducer(release=release)
    producer = producer_for(fake, timeout_s=0.0)  # no time at all: any wait times out
    with pytest.raises(KafkaUnavailable):
        await producer.submit([make_event()])
    release.set()
    await producer.close()  # the send itself still completes
    assert len(fake.sent) == 1


async def test_close_flushes_pending_envelopes() -> None:
    fake = FakeProducer()
    producer = EnvelopeProducer(fake, TOPIC, 4, max_events=500, linger_ms=60_000)  # type: ignore[arg-type]
    submit = asyncio.create_task(producer.submit([make_event()]))
    for _ in range(3):
        await asyncio.sleep(0)
    assert fake.sent == [] and not submit.done()  # waiting on the (long) linger
    await producer.close()
    await asyncio.wait_for(submit, 5)
    assert len(fake.sent) == 1


async def test_a_full_enough_envelope_does_not_wait_for_the_linger() -> None:
    fake = FakeProducer()
    producer = EnvelopeProducer(fake, TOPIC, 4, max_events=500, linger_ms=60_000, min_events=100)  # type: ignore[arg-type]
    # One subject, so all 150 events go to one partition: over min_events, under max_events.
    await asyncio.wait_for(producer.submit(events_for(subjects=1, total=150)), 5)
    assert [len(s.events) for s in fake.sent] == [150]


async def test_senders_ready_together_share_the_early_envelope() -> None:
    fake = FakeProducer()
    producer = EnvelopeProducer(fake, TOPIC, 1, max_events=500, linger_ms=60_000, min_events=100)  # type: ignore[arg-type]
    batches = [events_for(subjects=1, total=n) for n in (120, 30, 10)]
    await asyncio.wait_for(asyncio.gather(*(producer.submit(b) for b in batches)), 5)
    assert [len(s.events) for s in fake.sent] == [160]


async def test_a_small_envelope_still_waits_for_the_linger() -> None:
    fake = FakeProducer()
    producer = EnvelopeProducer(fake, TOPIC, 1, max_events=500, linger_ms=60_000, min_events=100)  # type: ignore[arg-type]
    submit = asyncio.create_task(producer.submit(events_for(subjects=1, total=99)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert fake.sent == [] and not submit.done()
    await producer.close()
    await asyncio.wait_for(submit, 5)
    assert [len(s.events) for s in fake.sent] == [99]
