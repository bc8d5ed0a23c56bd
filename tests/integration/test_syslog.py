"""The syslog receiver against a real broker, fed by real senders: util-linux `logger` (RFC 5424
and 3164, TCP newline and octet-counted framing, UDP), rsyslog forwarding what it received, the
exact bytes Apigee writes with FormatMessage=true, and TLS with client certificates."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from pipeline import envelopes
from pipeline.config import Settings
from pipeline.events import GatewayEvent
from pipeline.ingest.syslog import (
    SyslogMetrics,
    SyslogReceiver,
    syslog_receiver,
    tls_server_context,
)
from pipeline.stack import free_port, stop_process

from .conftest import FIXTURES, read_topic

OK = json.loads((FIXTURES / "apigee" / "messagelogging-200.json").read_text())
CLIENT_ID = OK["client_id"].encode()


@dataclass
class Receiving:
    receiver: SyslogReceiver
    registry: CollectorRegistry
    tcp: int
    udp: int

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(f"gatewatch_syslog_{name}_total", labels) or 0.0


@contextlib.asynccontextmanager
async def receiving(
    settings: Settings,
    *,
    allow: tuple[str, ...] = ("127.0.0.0/8",),
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Receiving]:
    """The production wiring (syslog_receiver: ApigeeParser, envelope producer, DLQ, dedupe on
    one Kafka producer, as collector_app does) listening on free TCP (or TLS) and UDP ports."""
    registry = CollectorRegistry()
    async with syslog_receiver(settings, allow=allow, metrics=SyslogMetrics(registry)) as receiver:
        tcp = await receiver.start_tcp("127.0.0.1", 0, ssl=tls)
        udp = await receiver.start_udp("127.0.0.1", 0)
        yield Receiving(receiver, registry, tcp, udp)


def record(request_id: str, **changes: str) -> str:
    return json.dumps(OK | {"messageid": request_id} | changes, separators=(",", ":"))


async def run(*argv: str | Path) -> int:
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode is not None
    if proc.returncode:
        print(f"{argv[0]} exited {proc.returncode}: {err.decode(errors='replace')}")
    return proc.returncode


async def logger(port: int, *options: str, message: str | None = None) -> int:
    """util-linux logger to 127.0.0.1:port; --size because its default cuts messages at 1 KiB."""
    tail = [message] if message is not None else []
    target = ("-n", "127.0.0.1", "-P", str(port))
    return await run("logger", *target, "-t", "Apigee", "--size", "8192", *options, *tail)


async def events_on_topic(settings: Settings, count: int) -> list[GatewayEvent]:
    """The first `count` events of the events topic (one envelope may hold several)."""
    for expect in range(1, count + 1):
        records = await read_topic(settings.kafka, settings.topics.events, expect=expect)
        events = [e for _, value, _ in records for e in envelopes.decode(value)]
        if len(events) >= count:
            for _, value, _ in records:
                assert CLIENT_ID not in value  # the consumer key never reaches Kafka in clear
            return events
    raise AssertionError(f"fewer than {count} events on {settings.topics.events}")


async def records_on(settings: Settings, topic: str) -> int:
    """How many records `topic` holds right now (its end offsets), without waiting for any."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            await consumer.topics()
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


def assert_is_the_fixture(event: GatewayEvent, request_id: str) -> None:
    assert event.request_id == request_id
    assert event.gateway == "apigee"
    assert event.consumer == "shop-web"
    assert event.credential is not None and event.credential.startswith("hmac:")
    assert (event.client_ip, event.method, event.status) == ("203.0.113.24", "GET", 200)
    assert event.route == "/gatewatch-example/v1/users/{id}/orders"
    assert event.query["contact"] == "[email]" and event.query["token"].startswith("hmac:")
    assert (event.latency_ms, event.upstream_latency_ms) == (245.0, 218.0)
    assert event.attributes["developer.email"].startswith("hmac:")


@pytest.mark.parametrize(
    "options",
    [
        ("--tcp", "--rfc5424"),
        ("--tcp", "--rfc5424", "--octet-count"),
        ("--tcp", "--rfc3164"),
        ("--udp", "--rfc5424"),
        ("--udp", "--rfc3164"),
    ],
    ids=["tcp-5424-lf", "tcp-5424-octets", "tcp-3164", "udp-5424", "udp-3164"],
)
async def test_logger_lines_reach_the_events_topic(
    settings: Settings, options: tuple[str, ...]
) -> None:
    async with receiving(settings) as r:
        port = r.udp if "--udp" in options else r.tcp
        assert await logger(port, *options, message=record("logger-1")) == 0
        [event] = await events_on_topic(settings, 1)
    assert_is_the_fixture(event, "logger-1")
    assert event.node == OK["system.uuid"]


async def test_apigee_formatmessage_bytes_with_trailing_nul(settings: Settings) -> None:
    """The exact stream Apigee writes with FormatMessage=true: header, JSON, NUL, LF."""
    async with receiving(settings) as r:
        _, writer = await asyncio.open_connection("127.0.0.1", r.tcp)
        writer.write((FIXTURES / "apigee" / "formatmessage-true.log").read_bytes())
        await writer.drain()
        events = await events_on_topic(settings, 2)
        writer.close()
    by_status = {e.status: e for e in events}
    assert_is_the_fixture(by_status[200], OK["messageid"])
    assert by_status[401].upstream_latency_ms is None and by_status[401].consumer is None
    assert await records_on(settings, settings.topics.dlq) == 0


RSYSLOG_FORWARDS = {
    "octet-counted": "RSYSLOG_SyslogProtocol23Format",  # RFC 5424, RFC 6587 octet counting
    "traditional": "RSYSLOG_TraditionalForwardFormat",  # RFC 3164, newline framing
}


@contextlib.contextmanager
def rsyslogd(
    workdir: Path, listen: int, forward_to: int, framing: str
) -> Iterator[subprocess.Popen[bytes]]:
    """rsyslogd as a child: imtcp on `listen`, omfwd over TCP to the receiver."""
    (workdir / "spool").mkdir()
    conf = workdir / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{workdir / "spool"}")\n'
        'module(load="imtcp")\n'
        f'input(type="imtcp" address="127.0.0.1" port="{listen}")\n'
        f'action(type="omfwd" target="127.0.0.1" port="{forward_to}" protocol="tcp" '
        f'TCP_Framing="{framing}" template="{RSYSLOG_FORWARDS[framing]}")\n'
    )
    log = open(workdir / "rsyslogd.log", "wb")
    proc = subprocess.Popen(
        ["rsyslogd", "-n", "-f", str(conf), "-i", str(workdir / "rsyslogd.pid")],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    try:
        yield proc
    finally:
        stop_process(proc)


async def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            assert proc.poll() is None, f"rsyslogd exited with {proc.returncode}"
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)  # polling a port that has no readiness event
                continue
            writer.close()
            return


@pytest.mark.parametrize("framing", sorted(RSYSLOG_FORWARDS))
async def test_rsyslog_forwarding(settings: Settings, tmp_path: Path, framing: str) -> None:
    listen = free_port()
    async with receiving(settings) as r:
        with rsyslogd(tmp_path, listen, r.tcp, framing) as proc:
            await wait_listening(listen, proc)
            assert await logger(listen, "--tcp", "--rfc5424", message=record("via-rsyslog")) == 0
            [event] = await events_on_topic(settings, 1)
    assert_is_the_fixture(event, "via-rsyslog")


async def send_from(source: str, port: int, data: bytes) -> None:
    """A TCP sender bound to a chosen loopback address (all of 127/8 is local on Linux)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def test_a_relay_resending_a_message_is_deduplicated(settings: Settings) -> None:
    """rsyslog and other relays deliver at least once: the same messageid twice is one event."""
    line = b"<14>1 - h Apigee - - - " + record("twice").encode() + b"\n"
    async with receiving(settings) as r:
        await send_from("127.0.0.1", r.tcp, line)
        accepted = {"transport": "tcp", "outcome": "accepted"}
        await r.receiver.wait_until(lambda: r.count("messages", **accepted) == 1, 10)
        await send_from("127.0.0.1", r.tcp, line + line)  # after it is on Kafka: both dropped
        await r.receiver.wait_until(
            lambda: r.count("messages", transport="tcp", outcome="duplicate") == 2, 10
        )
        [event] = await events_on_topic(settings, 1)
        assert event.request_id == "twice"
        assert await records_on(settings, settings.topics.events) == 1


async def test_source_outside_the_allow_list_is_refused(settings: Settings) -> None:
    async with receiving(settings, allow=("127.0.0.2/32",)) as r:
        await logger(r.tcp, "--tcp", "--rfc5424", message=record("refused-tcp"))  # from 127.0.0.1
        await logger(r.udp, "--udp", "--rfc5424", message=record("refused-udp"))
        await r.receiver.wait_until(
            lambda: (
                r.count("unauthorized", transport="tcp") == 1
                and r.count("unauthorized", transport="udp") == 1
            ),
            10,
        )
        assert r.count("bytes", transport="tcp") == 0  # refused before reading anything
        assert await records_on(settings, settings.topics.events) == 0
        await send_from(
            "127.0.0.2", r.tcp, b"<14>1 - h Apigee - - - " + record("allowed").encode() + b"\n"
        )
        [event] = await events_on_topic(settings, 1)
        assert event.request_id == "allowed"
        assert await records_on(settings, settings.topics.events) == 1
        assert await records_on(settings, settings.topics.dlq) == 0


async def test_garbage_goes_to_the_dlq_and_good_lines_go_through(
    settings: Settings, tmp_path: Path
) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text(record("good-1") + "\nthis is not json\n" + record("good-2") + "\n")
    async with receiving(settings) as r:
        # One logger connection: three messages, one of them not a JSON payload.
        assert await logger(r.tcp, "--tcp", "--rfc5424", "-f", str(lines)) == 0
        # And a line that is not syslog at all, with a secret in it.
        await send_from("127.0.0.1", r.tcp, b'garbage {"client_id":"' + CLIENT_ID + b'"}\n')
        dead = await read_topic(settings.kafka, settings.topics.dlq, expect=2)
        events = await events_on_topic(settings, 2)
    assert sorted(e.request_id or "" for e in events) == ["good-1", "good-2"]
    by_reason = {h["gatewatch.reason"].decode().split(" (")[0]: (v, h) for _, v, h in dead}
    assert set(by_reason) == {
        "payload: malformed JSON",
        "syslog.pri: missing <PRI> and not a JSON payload",
    }
    value, headers = by_reason["payload: malformed JSON"]
    assert value == b"this is not json"
    assert headers["gatewatch.source"] == b"apigee"
    assert headers["gatewatch.origin"] == b"127.0.0.1"
    value, _ = by_reason["syslog.pri: missing <PRI> and not a JSON payload"]
    assert value == b'garbage {"client_id":"[redacted]"}'
    assert r.count("rejects", transport="tcp", reason="payload") == 1
    assert r.count("rejects", transport="tcp", reason="syslog.pri") == 1


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI:
    `cryptography` is not installed in the venv)."""
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, cwd=d, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=gatewatch test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(ext)
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        )  # fmt: skip
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")


def client_context(pki: Pki, *, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if with_cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


async def test_tls_requires_a_client_certificate_from_the_ca(settings: Settings, pki: Pki) -> None:
    server = tls_server_context(
        str(pki.server_cert), str(pki.server_key), cafile=str(pki.ca), require_client_cert=True
    )
    line = b"<14>1 - h Apigee - - - %s\x00\n"
    async with receiving(settings, tls=server) as r:
        # Without a certificate: refused during the handshake, nothing read.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            r.tcp,
            ssl=client_context(pki, with_cert=False),
            server_hostname="127.0.0.1",
        )
        writer.write(line % record("no-cert").encode())
        try:
            answer = await asyncio.wait_for(reader.read(), 10)  # a timeout: it stayed open
        except (ssl.SSLError, ConnectionResetError):
            answer = b""  # TLS 1.3 reports the refused handshake on the first read
        assert answer == b""
        writer.close()

        # With the CA's client certificate: delivered.
        with_cert = client_context(pki, with_cert=True)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", r.tcp, ssl=with_cert, server_hostname="127.0.0.1"
        )
        writer.write(line % record("with-cert").encode())
        await writer.drain()
        [event] = await events_on_topic(settings, 1)
        writer.close()
        assert event.request_id == "with-cert"
        assert await records_on(settings, settings.topics.events) == 1
        assert r.count("connections", transport="tls", outcome="accepted") == 1


async def test_plain_tcp_client_cannot_talk_to_the_tls_port(settings: Settings, pki: Pki) -> None:
    server = tls_server_context(str(pki.server_cert), str(pki.server_key))
    async with receiving(settings, tls=server) as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.tcp)
        writer.write(b"<14>1 - h Apigee - - - " + record("plaintext").encode() + b"\n")
        await writer.drain()
        with contextlib.suppress(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 10)  # the server gives up on the handshake
        writer.close()
        assert await records_on(settings, settings.topics.events) == 0
        assert r.count("connections", transport="tls", outcome="accepted") == 0
