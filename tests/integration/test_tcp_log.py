"""Kong tcp-log: serializer JSON lines ("...}\r\n") over TCP or TLS into the line receiver with
the Kong parser, on to Kafka; a bad line goes to the DLQ while its neighbours go through."""

from __future__ import annotations

import asyncio
import ssl

import orjson
from prometheus_client import CollectorRegistry

from pipeline import envelopes
from pipeline.config import Settings
from pipeline.ingest.kong import KongParser
from pipeline.ingest.syslog import SyslogMetrics, syslog_receiver, tls_server_context

from .conftest import FIXTURES, read_topic
from .test_syslog import Pki, client_context, pki  # noqa: F401 - pki is a fixture

KONG = FIXTURES / "kong"
SECRET = b"my-secret-key-not-redacted"


def line(name: str) -> bytes:
    return orjson.dumps(orjson.loads((KONG / name).read_bytes())) + b"\r\n"


async def send(port: int, chunks: list[bytes], tls: ssl.SSLContext | None = None) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def test_tcp_log_lines_reach_kafka(settings: Settings) -> None:
    registry = CollectorRegistry()
    async with syslog_receiver(
        settings,
        allow=["127.0.0.0/8"],
        metrics=SyslogMetrics(registry),
        parser_factory=KongParser,
    ) as receiver:
        port = await receiver.start_tcp("127.0.0.1", 0)
        constructed = line("kong-3.9-serializer-constructed-429.json")
        # One entry split across writes, as TCP may deliver it.
        await send(
            port,
            [
                line("kong-3.8-docs-200.json"),
                b'{"request": 42}\r\n',
                constructed[:100],
                constructed[100:],
            ],
        )
        events = await read_topic(settings.kafka, settings.topics.events, expect=1)
        dead = await read_topic(settings.kafka, settings.topics.dlq, expect=1)

    decoded = [e for _, value, _ in events for e in envelopes.decode(value)]
    assert sorted(e.status for e in decoded) == [200, 429]
    assert all(SECRET not in value for _, value, _ in events)
    assert dead[0][2]["gatewatch.reason"].startswith(b"request: expected an object")


async def test_tcp_log_over_tls(settings: Settings, pki: Pki) -> None:  # noqa: F811
    server = tls_server_context(str(pki.server_cert), str(pki.server_key))
    async with syslog_receiver(
        settings,
        allow=["127.0.0.0/8"],
        metrics=SyslogMetrics(CollectorRegistry()),
        parser_factory=KongParser,
    ) as receiver:
        port = await receiver.start_tcp("127.0.0.1", 0, ssl=server)
        await send(
            port, [line("kong-2.2.1-ee-docs-consumer.json")], client_context(pki, with_cert=False)
        )
        events = await read_topic(settings.kafka, settings.topics.events, expect=1)
    (event,) = [e for _, value, _ in events for e in envelopes.decode(value)]
    assert event.consumer == "ae974d6c-0f8a-4dc5-b701-fa0aa38592bd"
