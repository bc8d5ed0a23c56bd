"""SyslogReceiver over real loopback sockets, with a producer and DLQ that the test controls:
batching, backpressure while Kafka is down, retries without loss or duplicates, limits."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from pipeline.events import GatewayEvent, Reject
from pipeline.ingest.apigee import ApigeeParser
from pipeline.ingest.redaction import Redactor
from pipeline.ingest.syslog import SyslogMetrics, SyslogReceiver, tls_server_context
from pipeline.kafka import KafkaUnavailable
from tests.unit.conftest import REDACTION_KEY

PEER = "127.0.0.1"


class FakeProducer:
    """EnvelopeProducer.submit's contract: returns once stored, raises KafkaUnavailable."""

    def __init__(self) -> None:
        self.batches: list[list[GatewayEvent]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.failures = 0
        self.active = 0
        self.max_active = 0

    async def submit(self, events: Iterable[GatewayEvent]) -> None:
        events = list(events)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.entered.set()
        try:
            await self.gate.wait()
            if self.failures:
                self.failures -= 1
                raise KafkaUnavailable("broker down")
            if events:
                self.batches.append(events)
        finally:
            self.active -= 1

    @property
    def events(self) -> list[GatewayEvent]:
        return [e for batch in self.batches for e in batch]


class FakeDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Reject]] = []
        self.failures = 0

    async def send(self, rejects: list[Reject], *, origin: str = "") -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaUnavailable("broker down")
        self.sent.extend((origin, r) for r in rejects)


class FakeDelivery:
    """Delivery's contract without a spool: events to the producer, rejects to the DLQ."""

    def __init__(self, producer: FakeProducer, dlq: FakeDeadLetters) -> None:
        self.producer = producer
        self.dlq = dlq

    async def deliver(
        self, records: list[dict[str, Any]], rejects: list[Reject], origin: str
    ) -> None:
        if records:
            await self.producer.submit(GatewayEvent(**r) for r in records)
        if rejects:
            await self.dlq.send(rejects, origin=origin)


class Harness:
    def __init__(self, **options: Any) -> None:
        self.producer = FakeProducer()
        self.dlq = FakeDeadLetters()
        self.registry = CollectorRegistry()
        options.setdefault("allow", ["127.0.0.0/8"])
        options.setdefault("retry_max_s", 0.01)
        self.receiver = SyslogReceiver(
            ApigeeParser(Redactor(REDACTION_KEY)),
            FakeDelivery(self.producer, self.dlq),  # type: ignore[arg-type]
            metrics=SyslogMetrics(self.registry),
            **options,
        )

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(f"gatewatch_syslog_{name}_total", labels) or 0.0

    async def until(self, predicate: Any, timeout_s: float = 10.0) -> None:
        await self.receiver.wait_until(predicate, timeout_s)


@pytest.fixture
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    h = Harness(**getattr(request, "param", {}))
    yield h
    h.producer.gate.set()
    await h.receiver.close()


def options(**kwargs: Any) -> pytest.MarkDecorator:
    """Receiver constructor options for one test (through the `harness` fixture)."""
    return pytest.mark.parametrize("harness", [kwargs], indirect=True, ids=[""])


def line(n: int, **extra: Any) -> bytes:
    doc = {
        "messageid": f"m-{n}",
        "client.ip": "192.0.2.1",
        "request.verb": "GET",
        "request.path": f"/v1/items/{n}",
        "message.status.code": "200",
        **extra,
    }
    return b"<14>1 2023-11-14T22:13:20.000+0000 mp Apigee - - - " + orjson.dumps(doc) + b"\x00\n"


def ids(events: list[GatewayEvent]) -> list[str | None]:
    return [e.request_id for e in events]


async def test_all_complete_lines_of_a_read_are_one_batch(harness: Harness) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(line(1) + line(2) + b"garbage\n" + line(3) + b'{"half":')
    reader.feed_eof()
    task = asyncio.current_task()
    assert task is not None
    await harness.receiver._read_loop(reader, PEER, "tcp", task)  # type: ignore[arg-type]
    # One read: one submit with the three good lines; the garbage went to the DLQ alongside.
    assert [ids(b) for b in harness.producer.batches] == [["m-1", "m-2", "m-3"]]
    reasons = [(origin, r.reason) for origin, r in harness.dlq.sent]
    assert reasons[0] == (PEER, "syslog.pri: missing <PRI> and not a JSON payload")
    # The unterminated last line is parsed at EOF (and is malformed JSON).
    assert reasons[1][1].startswith("payload: malformed JSON")
    assert harness.count("messages", transport="tcp", outcome="accepted") == 3
    assert harness.count("rejects", transport="tcp", reason="syslog.pri") == 1
    assert harness.count("rejects", transport="tcp", reason="payload") == 1


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """The receiver hung up: EOF, or a reset when it closed with our bytes unread."""
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        return True


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_tcp_stops_reading_while_kafka_does_not_confirm(harness: Harness) -> None:
    port = await harness.receiver.start_tcp("127.0.0.1", 0)
    harness.producer.gate.clear()  # Kafka "down": submit never returns for now
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.setblocking(False)
    _, writer = await asyncio.open_connection(sock=sock)
    chunk = b"".join(line(n) for n in range(200))
    written = 0
    blocked = False
    for _ in range(2000):  # at most ~33 MB: far more than every buffer on the way
        writer.write(chunk)
        written += 200
        try:
            await asyncio.wait_for(writer.drain(), 1.0)
        except TimeoutError:
            blocked = True  # the receiver stopped reading: the sender is pushed back
            break
    assert blocked
    received = harness.count("bytes", transport="tcp")
    assert 0 < received < written * len(line(0)) / 2
    assert harness.producer.max_active == 1  # one batch in flight per connection, no more

    harness.producer.gate.set()  # Kafka is back
    writer.close()
    await harness.until(lambda: len(harness.producer.events) == written, timeout_s=60)
    assert ids(harness.producer.events) == [f"m-{n % 200}" for n in range(written)]
    assert harness.producer.max_active == 1
    assert harness.dlq.sent == []


@options(retry_max_s=0.01)
async def test_kafka_outage_is_retried_without_loss_or_duplicates(harness: Harness) -> None:
    harness.producer.failures = 3
    harness.dlq.failures = 2
    port = await harness.receiver.start_tcp("127.0.0.1", 0)
    _, writer = await connect(port)
    writer.write(line(1) + b"not syslog\n")
    await writer.drain()
    await harness.until(lambda: len(harness.dlq.sent) == 1)
    # Events are stored once (the DLQ failures do not resubmit them), the reject once.
    assert ids(harness.producer.events) == ["m-1"]
    assert [r.reason for _, r in harness.dlq.sent] == [
        "syslog.pri: missing <PRI> and not a JSON payload"
    ]
    assert harness.count("kafka_retries", transport="tcp") == 5
    writer.close()


@options(max_frame_bytes=300)
async def test_oversize_frame_is_rejected_and_the_connection_goes_on(harness: Harness) -> None:
    port = await harness.receiver.start_tcp("127.0.0.1", 0)
    _, writer = await connect(port)
    writer.write(line(1) + b"<14>" + b"x" * 1000 + b"\n" + line(2))
    await writer.drain()
    await harness.until(lambda: len(harness.producer.events) == 2 and harness.dlq.sent)
    [(origin, reject)] = harness.dlq.sent
    assert (origin, reject.reason) == (PEER, "frame: line longer than the 300-byte limit")
    assert reject.raw == b"<14>" + b"x" * 296  # the first bytes, enough to see what it was
    writer.write(line(3))  # same connection: still open and read
    await writer.drain()
    await harness.until(lambda: len(harness.producer.events) == 3)
    assert ids(harness.producer.events) == ["m-1", "m-2", "m-3"]
    assert harness.count("rejects", transport="tcp", reason="frame") == 1
    writer.close()


@options(allow=["10.0.0.0/8"])
async def test_source_outside_the_allow_list_is_refused(harness: Harness) -> None:
    port = await harness.receiver.start_tcp("127.0.0.1", 0)
    reader, writer = await connect(port)
    writer.write(line(1))
    assert await closed_by_peer(reader)  # closed by the receiver without reading
    await harness.until(lambda: harness.count("unauthorized", transport="tcp") == 1)
    assert harness.producer.batches == [] and harness.dlq.sent == []
    assert harness.count("bytes", transport="tcp") == 0  # not even read
    writer.close()


@options(max_connections=1)
async def test_connection_limit(harness: Harness) -> None:
    port = await harness.receiver.start_tcp("127.0.0.1", 0)
    _, first = await connect(port)
    first.write(line(1))
    await first.drain()
    await harness.until(lambda: len(harness.producer.events) == 1)
    reader, second = await connect(port)
    assert await closed_by_peer(reader)
    assert harness.count("connections", transport="tcp", outcome="over_limit") == 1
    first.close()
    second.close()


@options(max_frame_bytes=400, udp_queue=2)
async def test_udp(harness: Harness) -> None:
    port = await harness.receiver.start_udp("127.0.0.1", 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(line(1), ("127.0.0.1", port))
        await harness.until(lambda: len(harness.producer.events) == 1)
        udp.sendto(b"<14>" + b"y" * 500, ("127.0.0.1", port))
        await harness.until(lambda: len(harness.dlq.sent) == 1)
        assert harness.dlq.sent[0][1].reason == "frame: datagram longer than the 400-byte limit"

        # Kafka stalls: one batch waits in submit, two datagrams queue, the rest are dropped.
        harness.producer.gate.clear()
        harness.producer.entered.clear()
        udp.sendto(line(2), ("127.0.0.1", port))
        await asyncio.wait_for(harness.producer.entered.wait(), 10)
        for n in range(3, 8):
            udp.sendto(line(n), ("127.0.0.1", port))
        await harness.until(
            lambda: harness.count("messages", transport="udp", outcome="dropped") == 3
        )
        harness.producer.gate.set()
        await harness.until(lambda: len(harness.producer.events) == 4)
    assert ids(harness.producer.events) == ["m-1", "m-2", "m-3", "m-4"]


@options(udp_queue_bytes=2 * len(line(10)) + 10)
async def test_udp_queue_is_bounded_in_bytes(harness: Harness) -> None:
    port = await harness.receiver.start_udp("127.0.0.1", 0)
    harness.producer.gate.clear()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(line(1), ("127.0.0.1", port))
        await asyncio.wait_for(harness.producer.entered.wait(), 10)
        for n in range(10, 13):  # room for two of them
            udp.sendto(line(n), ("127.0.0.1", port))
        dropped = {"transport": "udp", "outcome": "dropped"}
        await harness.until(lambda: harness.count("messages", **dropped) == 1)
    harness.producer.gate.set()
    await harness.until(lambda: len(harness.producer.events) == 3)
    assert ids(harness.producer.events) == ["m-1", "m-10", "m-11"]


@options(allow=["10.0.0.0/8"])
async def test_udp_source_outside_the_allow_list_is_dropped(harness: Harness) -> None:
    port = await harness.receiver.start_udp("127.0.0.1", 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(line(1), ("127.0.0.1", port))
        await harness.until(lambda: harness.count("unauthorized", transport="udp") == 1)
    assert harness.producer.batches == []


@options(close_grace_s=30)
async def test_close_finishes_the_batch_in_flight(harness: Harness) -> None:
    port = await harness.receiver.start_tcp("127.0.0.1", 0)
    idle_reader, idle = await connect(port)
    busy_reader, busy = await connect(port)
    harness.producer.gate.clear()
    busy.write(line(1))
    await busy.drain()
    await asyncio.wait_for(harness.producer.entered.wait(), 10)
    closing = asyncio.create_task(harness.receiver.close())
    assert await asyncio.wait_for(idle_reader.read(), 10) == b""  # idle: closed at once
    assert not closing.done()  # the busy one is still storing its batch
    harness.producer.gate.set()
    await asyncio.wait_for(closing, 10)
    assert ids(harness.producer.events) == ["m-1"]  # finished, not dropped
    assert await asyncio.wait_for(busy_reader.read(), 10) == b""
    idle.close()
    busy.close()


def test_allow_list_matching() -> None:
    h = Harness(allow=["127.0.0.0/8", "2001:db8::/32"])
    assert h.receiver._allowed("127.0.0.2")
    assert h.receiver._allowed("::ffff:127.0.0.1")  # IPv4 peer on a dual-stack listener
    assert h.receiver._allowed("2001:db8::5%eth0")
    assert not h.receiver._allowed("10.0.0.1")
    assert not h.receiver._allowed("not-an-address")
    assert not Harness(allow=[]).receiver._allowed("127.0.0.1")  # empty: nobody


def test_client_certificates_need_a_ca() -> None:
    with pytest.raises(ValueError, match="needs the CA"):
        tls_server_context("cert.pem", "key.pem", require_client_cert=True)
