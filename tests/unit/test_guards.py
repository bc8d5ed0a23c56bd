"""Sender authentication, per-source rate limits and retry deduplication in the collector."""

from __future__ import annotations

import asyncio
import json
import operator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from pipeline.envelopes import EventRecord
from pipeline.events import Reject
from pipeline.ingest.collector import CollectorMetrics, create_collector_app
from pipeline.ingest.guards import Deduplicator, SenderAuth, SourceRateLimiter
from pipeline.ingest.kong import KongParser
from pipeline.ingest.redaction import Redactor
from pipeline.kafka import KafkaUnavailable
from tests.unit.conftest import make_event

KONG_38 = Path(__file__).parent.parent / "fixtures" / "kong" / "kong-3.8-docs-200.json"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyDelivery:
    """Stands in for Delivery without a spool: fails while `down`, records what it accepted."""

    def __init__(self) -> None:
        self.down = False
        self.accepted: list[EventRecord] = []

    async def deliver(self, records: list[EventRecord], rejects: list[Reject], origin: str) -> None:
        assert not rejects
        if self.down:
            raise KafkaUnavailable("broker down")
        self.accepted.extend(records)


def test_bearer_token_must_match_exactly() -> None:
    auth = SenderAuth(token="secret")
    assert auth.check({"Authorization": "Bearer secret"}, b"") is None
    assert auth.check({"Authorization": "Bearer secret2"}, b"") == "bad token"
    assert auth.check({"Authorization": "bearer secret"}, b"") == "bad token"
    assert not SenderAuth().configured
    assert SenderAuth().check({"Authorization": "Bearer "}, b"") == "bad token"


def test_signature_covers_timestamp_and_body() -> None:
    clock = Clock()
    auth = SenderAuth(hmac_secret=b"k", max_skew_s=60, clock=clock)
    body = b'{"a":1}'
    sig = SenderAuth.sign(b"k", body, 1000)
    headers = {"X-Gatewatch-Timestamp": "1000", "X-Gatewatch-Signature": sig}
    assert auth.check(headers, body) is None
    assert auth.check({**headers, "X-Gatewatch-Timestamp": "1001"}, body) == "bad signature"
    fullwidth = "\uff11\uff10\uff10\uff10"  # isdigit() is True, int() would accept it
    assert auth.check({**headers, "X-Gatewatch-Timestamp": fullwidth}, body) == "bad timestamp"
    clock.now = 1061
    assert auth.check(headers, body) == "stale timestamp"
    assert SenderAuth(hmac_secret=b"other", clock=Clock()).check(headers, body) == "bad signature"


def test_rate_limiter_refills_and_forgets_the_oldest_sources() -> None:
    clock = Clock()
    limiter = SourceRateLimiter(rate=100, burst=100, max_sources=2, clock=clock)
    assert limiter.take("a", 100) == 0.0
    assert limiter.take("a", 50) == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take("a", 50) == 0.0
    limiter.take("b", 1)
    limiter.take("c", 1)  # "a" is forgotten: bounded memory under many sources
    assert limiter.take("a", 100) == 0.0
    assert SourceRateLimiter(rate=0, burst=1).take("x", 10**9) == 0.0


def test_deduplicator_window_expires() -> None:
    clock = Clock()
    dedupe = Deduplicator(window_s=10, max_ids=100, clock=clock)
    dedupe.remember(["r1"])
    assert not dedupe.is_new("r1")
    clock.now += 11
    assert dedupe.is_new("r1")
    dedupe.remember(["r2"])  # also prunes r1
    assert len(dedupe._seen) == 1


def test_deduplicator_filter_drops_retries_and_repeats_within_a_batch() -> None:
    clock = Clock()
    dedupe = Deduplicator(window_s=10, max_ids=100, clock=clock)
    dedupe.remember(["old"])
    records = [{"request_id": r} for r in ("old", "a", "a", None, "b", None)]
    fresh, dropped = dedupe.filter(records, operator.itemgetter("request_id"))
    assert [r["request_id"] for r in fresh] == ["a", None, "b", None] and dropped == 2
    clock.now += 11  # "old" is forgotten once the window has passed
    assert dedupe.filter(records[:1], operator.itemgetter("request_id")) == (records[:1], 0)
    # GatewayEvents by default.
    assert dedupe.filter([make_event(request_id="a"), make_event(request_id="a")])[1] == 1


@pytest.fixture
async def client_and_producer():
    producer = FlakyDelivery()
    app = create_collector_app(
        parser=KongParser(Redactor(b"k")),
        delivery=producer,  # type: ignore[arg-type]
        auth=SenderAuth(token="t"),
        metrics=CollectorMetrics(CollectorRegistry()),
        max_body_bytes=1 << 20,
        deduplicator=Deduplicator(window_s=300, max_ids=1000),
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, producer
    await client.close()


async def test_a_batch_refused_with_503_is_not_remembered(client_and_producer) -> None:
    client, producer = client_and_producer
    entry = json.loads(KONG_38.read_text())
    body = json.dumps([entry, entry])  # the same request id twice in one batch
    headers = {"Authorization": "Bearer t"}

    producer.down = True
    resp = await client.post("/kong", data=body, headers=headers)
    assert resp.status == 503

    producer.down = False
    resp = await client.post("/kong", data=body, headers=headers)
    assert await resp.json() == {"accepted": 1, "rejected": 0, "duplicates": 1, "reasons": []}
    resp = await client.post("/kong", data=body, headers=headers)
    assert (await resp.json())["duplicates"] == 2
    assert [r["request_id"] for r in producer.accepted] == ["2f6946328ffc4946b8c9120704a4a155"]


class GatedDelivery:
    """Holds every delivery until `gate` is set, as a broker slow to acknowledge would."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.accepted: list[EventRecord] = []

    async def deliver(self, records: list[EventRecord], rejects: list[Reject], origin: str) -> None:
        self.waiting.set()
        await self.gate.wait()
        self.accepted.extend(records)


async def test_a_collector_at_capacity_sheds_at_once_and_recovers() -> None:
    producer = GatedDelivery()
    metrics = CollectorMetrics(CollectorRegistry())
    app = create_collector_app(
        parser=KongParser(Redactor(b"k")),
        delivery=producer,  # type: ignore[arg-type]
        auth=SenderAuth(token="t"),
        metrics=metrics,
        max_body_bytes=1 << 20,
        max_inflight_bytes=100,  # less than one body: a second one at the same time is too much
    )
    headers = {"Authorization": "Bearer t"}
    body = KONG_38.read_bytes()
    async with TestClient(TestServer(app)) as client:
        # One body is always let in, even larger than the limit; it waits for the broker.
        first = asyncio.create_task(client.post("/kong", data=body, headers=headers))
        await asyncio.wait_for(producer.waiting.wait(), 5)

        shed = await asyncio.wait_for(client.post("/kong", data=body, headers=headers), 5)
        assert shed.status == 503 and shed.headers["Retry-After"] == "1"
        assert "capacity" in (await shed.json())["error"]

        producer.gate.set()
        assert (await asyncio.wait_for(first, 5)).status == 200
        # Capacity is back once the first body is answered.
        assert (await client.post("/kong", data=body, headers=headers)).status == 200
    assert len(producer.accepted) == 2
    assert metrics.shed.labels("kong")._value.get() == 1


async def chunked_upload(
    port: int,
    headers: dict[str, str],
    body: bytes,
    *,
    chunk: int = 64 * 1024,
    finish: bool = True,
    pace_s: float = 0.0,
) -> tuple[int, int]:
    """POST `body` with Transfer-Encoding: chunked over a raw socket, as a streaming sender does;
    stops sending once an answer has come. Returns (status, body bytes sent before it came)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"POST /kong HTTP/1.1\r\nHost: collector\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Type: application/json\r\n{head}\r\n".encode()
    )
    answer = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
    sent = 0
    try:
        for start in range(0, len(body), chunk):
            if answer.done():
                break
            part = body[start : start + chunk]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            sent += len(part)
            await asyncio.sleep(pace_s)
        else:
            if finish:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
    except ConnectionError:
        pass  # the collector answered and closed while we were still sending
    status = int((await asyncio.wait_for(answer, 30)).split()[1])
    writer.close()
    return status, sent


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"X-Gatewatch-Timestamp": "1", "X-Gatewatch-Signature": "v1=00"},  # stale
    ],
    ids=["none", "bad-token", "stale-signature"],
)
async def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(
    headers: dict[str, str],
) -> None:
    delivery = GatedDelivery()
    metrics = CollectorMetrics(CollectorRegistry())
    app = create_collector_app(
        parser=KongParser(Redactor(b"k")),
        delivery=delivery,  # type: ignore[arg-type]
        auth=SenderAuth(token="t", hmac_secret=b"s"),
        metrics=metrics,
        max_body_bytes=8 << 20,
    )
    async with TestServer(app) as server:
        assert server.port is not None
        # One chunk of a body that never ends: an answer now means the body was not awaited.
        status, sent = await chunked_upload(
            server.port, headers, b"[" + b" " * (4 << 20), finish=False, pace_s=0.01
        )
    assert status == 401
    assert sent < 4 << 20
    assert metrics.bytes.labels("kong")._value.get() == 0  # nothing of it was read


async def test_chunked_bodies_count_against_the_inflight_limit_as_they_stream() -> None:
    delivery = GatedDelivery()
    metrics = CollectorMetrics(CollectorRegistry())
    app = create_collector_app(
        parser=KongParser(Redactor(b"k")),
        delivery=delivery,  # type: ignore[arg-type]
        auth=SenderAuth(token="t"),
        metrics=metrics,
        max_body_bytes=8 << 20,
        max_inflight_bytes=1 << 20,
    )
    headers = {"Authorization": "Bearer t"}
    entry = KONG_38.read_bytes()
    async with TestServer(app) as server:
        assert server.port is not None
        # A chunked body in hand (its delivery held), as a slow broker would keep it ...
        first = asyncio.create_task(chunked_upload(server.port, headers, b"[" + entry + b"]"))
        await asyncio.wait_for(delivery.waiting.wait(), 10)
        # ... so a second one streaming in is refused once the two pass the limit, mid-body.
        big = b"[" + b" " * (3 << 20) + entry + b"]"
        status, sent = await chunked_upload(server.port, headers, big, pace_s=0.001)
        assert status == 503 and sent < len(big)
        assert metrics.shed.labels("kong")._value.get() == 1
        delivery.gate.set()
        assert (await first)[0] == 200
        # Alone, a body larger than the limit is let in (and answered).
        assert (await chunked_upload(server.port, headers, big))[0] == 200
    assert len(delivery.accepted) == 2
    assert metrics.registry.get_sample_value("gatewatch_ingest_inflight_bytes") == 0
