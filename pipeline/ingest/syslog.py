"""Syslog in, envelopes out: the line receivers (TCP, TLS, UDP) for Apigee's MessageLogging and
Kong's tcp-log. Message and frame formats are in `pipeline.ingest.syslog_wire`.

Delivery: a TCP connection is read one chunk at a time; all complete frames of a chunk become one
batch, and the next chunk is read only once the batch's events are acknowledged by Kafka and its
rejects are on the dead-letter topic, or, when Kafka is slow, fsync'd in the disk spool (replayed
in order once Kafka is back: `pipeline.ingest.delivery`). A line sender cannot be told "503", so
the spool is what keeps it sending through a broker outage. When neither Kafka nor the spool can
take a batch (the spool full, or off) it is retried with backoff and the connection is not read,
so TCP flow control pushes back on the sender: nothing read is dropped.
An oversized frame is rejected (its first bytes go to the DLQ with the reason) and skipped; the
connection stays open, because closing it would also lose the good lines queued behind it.
UDP has no flow control: datagrams wait in a bounded queue and are counted as dropped when it is
full. Use TCP (or TLS) when loss matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Protocol

import prometheus_client
import structlog
from prometheus_client import CollectorRegistry, Counter

from pipeline.config import Settings
from pipeline.events import GatewayEvent, Reject
from pipeline.ingest.apigee import ApigeeParser
from pipeline.ingest.delivery import Delivery
from pipeline.ingest.guards import Deduplicator
from pipeline.ingest.kong import ParseResult
from pipeline.ingest.outputs import ingest_outputs
from pipeline.ingest.spool import SpoolError
from pipeline.ingest.syslog_wire import (
    RAW_PREFIX_BYTES,
    FrameError,
    Framer,
    SyslogError,
    parse_line,
)
from pipeline.kafka import KafkaUnavailable
from pipeline.retry import until_done

__all__ = [
    "SyslogMetrics",
    "SyslogReceiver",
    "serve_syslog",
    "syslog_receiver",
    "tls_server_context",
]

log = structlog.get_logger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PayloadParser(Protocol):
    """What the receiver needs from a gateway parser (ApigeeParser is one)."""

    source: str

    def parse_payload(
        self, payload: bytes, *, host: str | None = None, ts_ms: int | None = None
    ) -> ParseResult: ...

    def scrub_raw(self, raw: bytes) -> bytes: ...


class SyslogMetrics:
    """Counters of the syslog receiver, in the caller's registry (names do not clash with the
    HTTP collector's, so both can share one registry and one /metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages = Counter(
            "gatewatch_syslog_messages_total",
            "Syslog messages by outcome (accepted, rejected, duplicate, dropped)",
            ["transport", "outcome"],
            registry=registry,
        )
        self.rejects = Counter(
            "gatewatch_syslog_rejects_total",
            "Rejected syslog messages by reason (the field named first in the reason)",
            ["transport", "reason"],
            registry=registry,
        )
        self.unauthorized = Counter(
            "gatewatch_syslog_unauthorized_total",
            "Connections or datagrams from a source outside the allow-list",
            ["transport"],
            registry=registry,
        )
        self.connections = Counter(
            "gatewatch_syslog_connections_total",
            "TCP/TLS connections by outcome (accepted, over_limit)",
            ["transport", "outcome"],
            registry=registry,
        )
        self.kafka_retries = Counter(
            "gatewatch_syslog_kafka_retries_total",
            "Batches retried because neither Kafka nor the spool could take them",
            ["transport"],
            registry=registry,
        )
        self.bytes = Counter(
            "gatewatch_syslog_bytes_total", "Bytes received", ["transport"], registry=registry
        )


def _reason_label(reason: str) -> str:
    # "client.ip: not an IP address" -> "client.ip": a bounded label; the rest is in the DLQ.
    return reason.split(":", 1)[0][:64]


def tls_server_context(
    certfile: str, keyfile: str, *, cafile: str | None = None, require_client_cert: bool = False
) -> ssl.SSLContext:
    """A server context for `start_tcp(ssl=...)`: TLS 1.2+, and with `require_client_cert` only
    senders presenting a certificate signed by `cafile` (Apigee's `SSLInfo/ClientAuthEnabled`)."""
    if require_client_cert and not cafile:
        raise ValueError("require_client_cert needs the CA that signs the client certificates")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    context.verify_mode = (
        ssl.CERT_REQUIRED
        if require_client_cert
        else (ssl.CERT_OPTIONAL if cafile else ssl.CERT_NONE)
    )
    return context


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, receiver: SyslogReceiver) -> None:
        self.receiver = receiver

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.receiver._on_datagram(data, str(addr[0]))


class SyslogReceiver:
    """TCP, TLS and UDP syslog servers feeding one parser, one producer and one DLQ.

    Parameters
    ----------
    parser
        Turns a message's payload into events and rejects (`ApigeeParser`).
    delivery
        Where events and rejects go (Kafka, or the spool when Kafka is slow); a batch counts as
        delivered once it returned.
    allow
        Source networks allowed to send (`"10.0.0.0/8"` or ip_network objects). Empty refuses
        every sender.
    max_frame_bytes
        Largest message accepted; larger frames are rejected to the DLQ (truncated) and skipped.
    metrics
        Counters (`SyslogMetrics` in the caller's registry).
    max_connections, read_bytes, udp_queue, udp_queue_bytes, retry_max_s
        Memory bounds: at most `max_connections` x (`max_frame_bytes` + `read_bytes`) buffered for
        TCP, `udp_queue` datagrams and `udp_queue_bytes` bytes for UDP; Kafka retries back off up
        to `retry_max_s`.
    deduplicator
        Drops events whose request id (Apigee's `messageid`) is already on Kafka: a relay such as
        rsyslog may resend what it was not sure it delivered.
    """

    def __init__(
        self,
        parser: PayloadParser,
        delivery: Delivery,
        *,
        allow: Iterable[str | Network],
        max_frame_bytes: int = 64 * 1024,
        metrics: SyslogMetrics,
        max_connections: int = 512,
        read_bytes: int = 64 * 1024,
        udp_queue: int = 10_000,
        udp_queue_bytes: int = 32 * 1024 * 1024,
        retry_max_s: float = 5.0,
        close_grace_s: float = 5.0,
        deduplicator: Deduplicator | None = None,
    ) -> None:
        self.parser = parser
        self.delivery = delivery
        self.allow: list[Network] = [ipaddress.ip_network(n, strict=False) for n in allow]
        self.max_frame_bytes = max_frame_bytes
        self.metrics = metrics
        self.max_connections = max_connections
        self.read_bytes = read_bytes
        self.retry_max_s = retry_max_s
        self.close_grace_s = close_grace_s
        self.deduplicator = deduplicator
        self._servers: list[asyncio.Server] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._connections: dict[asyncio.Task[None], bool] = {}  # task -> busy delivering
        self._queue: deque[tuple[bytes, str]] = deque()
        self._udp_queue = udp_queue
        self._udp_queue_bytes = udp_queue_bytes
        self._queued_bytes = 0
        self._queued = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._closing = False
        self._changed = asyncio.Event()
        if not self.allow:
            log.warning("syslog.no_allow_list", detail="every sender will be refused")

    # -- servers -----------------------------------------------------------------------------

    async def start_tcp(self, host: str, port: int, ssl: ssl.SSLContext | None = None) -> int:
        """Listen for TCP (TLS when `ssl` is given); returns the bound port (useful with 0)."""
        server = await asyncio.start_server(
            self._serve_connection, host, port, ssl=ssl, limit=self.read_bytes
        )
        self._servers.append(server)
        bound = int(server.sockets[0].getsockname()[1])
        log.info("syslog.listening", transport="tls" if ssl else "tcp", host=host, port=bound)
        return bound

    async def start_udp(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(host, port)
        )
        self._udp.append(transport)
        if self._pump is None:
            self._pump = asyncio.create_task(self._pump_datagrams())
        bound = int(transport.get_extra_info("sockname")[1])
        log.info("syslog.listening", transport="udp", host=host, port=bound)
        return bound

    async def close(self) -> None:
        """Stop listening; let batches being delivered finish (up to `close_grace_s`)."""
        self._closing = True
        for server in self._servers:
            server.close()
        for transport in self._udp:
            transport.close()
        idle = [task for task, busy in self._connections.items() if not busy]
        for task in idle:
            task.cancel()  # blocked in a read: nothing of theirs is in flight
        if self._pump is not None:
            self._queued.set()  # the pump drains what is queued, then stops
            pending = [*self._connections, self._pump]
        else:
            pending = list(self._connections)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.close_grace_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("syslog.closed_with_batches_in_flight", tasks=len(late))
                await asyncio.wait(late)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._udp.clear()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Wait until `predicate()` holds; it is re-checked whenever the receiver made progress
        (a batch delivered, a connection or datagram refused or finished)."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await self._changed.wait()

    def _progress(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _allowed(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d
        return any(ip in net for net in self.allow)

    # -- TCP / TLS ---------------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = str((writer.get_extra_info("peername") or ("?",))[0])
        transport = "tls" if writer.get_extra_info("sslcontext") is not None else "tcp"
        task = asyncio.current_task()
        try:
            if not self._allowed(peer):
                self.metrics.unauthorized.labels(transport).inc()
                log.warning("syslog.unauthorized", peer=peer, transport=transport)
                return
            if task is None or self._closing or len(self._connections) >= self.max_connections:
                self.metrics.connections.labels(transport, "over_limit").inc()
                log.warning("syslog.connection_refused", peer=peer, reason="connection limit")
                return
            self.metrics.connections.labels(transport, "accepted").inc()
            self._connections[task] = False
            await self._read_loop(reader, peer, transport, task)
        except (OSError, asyncio.IncompleteReadError) as exc:  # resets, TLS errors mid-stream
            log.info("syslog.connection_lost", peer=peer, transport=transport, error=repr(exc))
        finally:
            if task is not None:
                self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._progress()

    async def _read_loop(
        self, reader: asyncio.StreamReader, peer: str, transport: str, task: asyncio.Task[None]
    ) -> None:
        framer = Framer(self.max_frame_bytes)
        while not self._closing:
            chunk = await reader.read(self.read_bytes)
            self.metrics.bytes.labels(transport).inc(len(chunk))
            frames = framer.feed(chunk) if chunk else framer.close()
            if frames:
                self._connections[task] = True
                # Awaited before the next read: this is the backpressure.
                await self._deliver(((f, peer) for f in frames), transport, peer)
                self._connections[task] = False
                self._progress()
            if not chunk:
                return

    # -- UDP ---------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, peer: str) -> None:
        self.metrics.bytes.labels("udp").inc(len(data))
        if not self._allowed(peer):
            self.metrics.unauthorized.labels("udp").inc()
            log.warning("syslog.unauthorized", peer=peer, transport="udp")
            self._progress()
            return
        # An oversize datagram is rejected later; its first bytes are all it needs until then.
        data = data[: self.max_frame_bytes + 1]
        full = (
            len(self._queue) >= self._udp_queue
            or self._queued_bytes + len(data) > self._udp_queue_bytes
        )
        if full or self._closing:
            self.metrics.messages.labels("udp", "dropped").inc()
            log.warning("syslog.udp_dropped", peer=peer, reason="queue full")
            self._progress()
            return
        self._queue.append((data, peer))
        self._queued_bytes += len(data)
        self._queued.set()

    async def _pump_datagrams(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), 1000))]
                self._queued_bytes -= sum(len(data) for data, _ in batch)
                frames = [(self._datagram_frame(data), peer) for data, peer in batch]
                await self._deliver(frames, "udp", batch[0][1])
                self._progress()
            if self._closing:
                return

    def _datagram_frame(self, data: bytes) -> bytes | FrameError:
        if len(data) > self.max_frame_bytes:
            return FrameError(
                f"frame: datagram longer than the {self.max_frame_bytes}-byte limit",
                data[:RAW_PREFIX_BYTES],
            )
        return data

    # -- parsing and delivery ----------------------------------------------------------------

    def _parse(
        self, frames: Iterable[tuple[bytes | FrameError, str]]
    ) -> tuple[list[GatewayEvent], list[tuple[str, Reject]]]:
        """Events of a batch, and its rejects each with the peer that sent it."""
        events: list[GatewayEvent] = []
        rejects: list[tuple[str, Reject]] = []
        source = self.parser.source
        for frame, peer in frames:
            if isinstance(frame, FrameError):
                raw = self.parser.scrub_raw(frame.raw)
                rejects.append((peer, Reject(source=source, reason=frame.reason, raw=raw)))
                continue
            try:
                message = parse_line(frame)
            except SyslogError as exc:
                raw = self.parser.scrub_raw(frame)
                rejects.append((peer, Reject(source=source, reason=str(exc), raw=raw)))
                continue
            if message is None:
                continue
            result = self.parser.parse_payload(
                message.payload, host=message.host, ts_ms=message.ts_ms
            )
            events.extend(result.events)
            rejects.extend((peer, reject) for reject in result.rejects)
        return events, rejects

    async def _deliver(
        self, frames: Iterable[tuple[bytes | FrameError, str]], transport: str, peer: str
    ) -> None:
        events, rejects = self._parse(frames)
        duplicates = 0
        if self.deduplicator is not None:
            events, duplicates = self.deduplicator.filter(events)
        if events:
            records = [vars(e) for e in events]
            await self._until_stored(
                lambda: self.delivery.deliver(records, [], peer), transport, len(events)
            )
        if self.deduplicator is not None:
            self.deduplicator.remember(e.request_id for e in events if e.request_id)
        per_origin: dict[str, list[Reject]] = {}
        for origin, reject in rejects:
            per_origin.setdefault(origin, []).append(reject)
        for origin, group in per_origin.items():
            send = functools.partial(self.delivery.deliver, [], group, origin)
            await self._until_stored(send, transport, len(group))

        self.metrics.messages.labels(transport, "accepted").inc(len(events))
        if duplicates:
            self.metrics.messages.labels(transport, "duplicate").inc(duplicates)
        if rejects:
            self.metrics.messages.labels(transport, "rejected").inc(len(rejects))
            for _, reject in rejects:
                self.metrics.rejects.labels(transport, _reason_label(reject.reason)).inc()
            log.info(
                "syslog.rejected",
                peer=peer,
                transport=transport,
                rejected=len(rejects),
                accepted=len(events),
                reason=rejects[0][1].reason,
            )

    async def _until_stored(
        self, store: Callable[[], Awaitable[None]], transport: str, count: int
    ) -> None:
        """Retry `store` until Kafka or the spool took it: what was read from a sender is never
        dropped (and the sender waits meanwhile)."""
        await until_done(
            store,
            retry_on=(KafkaUnavailable, SpoolError),
            event="syslog.kafka_unavailable",
            max_backoff_s=self.retry_max_s,
            on_retry=lambda _: self.metrics.kafka_retries.labels(transport).inc(),
        )


@contextlib.asynccontextmanager
async def syslog_receiver(
    settings: Settings,
    *,
    allow: Iterable[str | Network],
    max_frame_bytes: int = 64 * 1024,
    max_connections: int = 512,
    metrics: SyslogMetrics | None = None,
    parser_factory: Callable[..., PayloadParser] = ApigeeParser,
    spool: str | None = "syslog",
) -> AsyncIterator[SyslogReceiver]:
    """A receiver (Apigee syslog by default; `KongParser` for Kong tcp-log's JSON lines) wired
    to Kafka per `settings`, not listening yet; closed (in-flight batches finished) before the
    producer is. `spool` names its spool directory under `settings.spool_dir` (None: none)."""
    metrics = metrics if metrics is not None else SyslogMetrics(CollectorRegistry())
    async with ingest_outputs(settings, spool=spool, registry=metrics.registry) as out:
        receiver = SyslogReceiver(
            parser_factory(out.redactor, window=out.window),
            out.delivery,
            allow=allow,
            max_frame_bytes=max_frame_bytes,
            max_connections=max_connections,
            metrics=metrics,
            deduplicator=out.deduplicator,
        )
        try:
            yield receiver
        finally:
            await receiver.close()


async def serve_syslog(
    settings: Settings,
    *,
    host: str,
    allow: Iterable[str | Network],
    tcp_port: int | None = None,
    udp_port: int | None = None,
    tls_port: int | None = None,
    tls: ssl.SSLContext | None = None,
    max_frame_bytes: int = 64 * 1024,
    max_connections: int = 512,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    parser_factory: Callable[..., PayloadParser] = ApigeeParser,
    name: str = "syslog",
) -> None:
    """Run the receiver on the given ports until cancelled; /metrics on `metrics_port` (on
    `metrics_host`: loopback unless configured, whatever address the receiver listens on).
    Its spool is `<spool_dir>/<name>-<first port>`."""
    if tls_port is not None and tls is None:
        raise ValueError("a TLS port needs an SSL context (tls_server_context)")
    first = next((p for p in (tcp_port, tls_port, udp_port) if p is not None), None)
    if first is None:
        raise ValueError("no port to listen on")
    registry = CollectorRegistry()
    async with syslog_receiver(
        settings,
        allow=allow,
        max_frame_bytes=max_frame_bytes,
        max_connections=max_connections,
        metrics=SyslogMetrics(registry),
        parser_factory=parser_factory,
        spool=f"{name}-{first}",
    ) as receiver:
        if tcp_port is not None:
            await receiver.start_tcp(host, tcp_port)
        if udp_port is not None:
            await receiver.start_udp(host, udp_port)
        if tls_port is not None:
            await receiver.start_tcp(host, tls_port, ssl=tls)
        if metrics_port is not None:
            prometheus_client.start_http_server(metrics_port, addr=metrics_host, registry=registry)
            log.info("syslog.metrics", host=metrics_host, port=metrics_port)
        await asyncio.Event().wait()
