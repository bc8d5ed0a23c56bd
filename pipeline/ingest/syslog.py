"""Syslog in, envelopes out: the receiver for Apigee's MessageLogging policy.

Wire formats accepted on every line (one message):
- RFC 5424: `<14>1 2016-02-23T09:24:39.039+0000 host app procid msgid [sd] MSG`. Apigee's
  `FormatMessage=true` is this shape with app-name `Apigee` (hybrid: `Apigee-Edge`) and `- - -`.
- RFC 3164: `<13>Nov 14 22:13:20 host tag[pid]: MSG` (rsyslog's forwarding default), and the
  degenerate `<14>MSG` with no header at all.
- A bare JSON payload, no PRI (`FormatMessage=false` / `PayloadOnly=true`).
A trailing NUL (Apigee sends one) and CR are stripped.

TCP framing is detected per frame: a frame that starts with digits and a space is RFC 6587 octet
counted (`12 <14>1 - ...`), anything else runs to the next LF (or NUL: some senders end frames with
it). UDP carries one message per datagram. TLS is TCP with an `ssl.SSLContext` from the caller.

Delivery: a TCP connection is read one chunk at a time; all complete frames of a chunk become one
batch, and the next chunk is read only once the batch's events are acknowledged by Kafka and its
rejects are on the dead-letter topic. While Kafka is down the batch is retried with backoff and the
connection is not read, so TCP flow control pushes back on the sender: nothing read is dropped.
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
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import prometheus_client
import structlog
from prometheus_client import CollectorRegistry, Counter

from pipeline.config import Settings
from pipeline.events import GatewayEvent, Reject
from pipeline.ingest.apigee import ApigeeParser
from pipeline.ingest.guards import Deduplicator
from pipeline.ingest.kong import ParseResult
from pipeline.ingest.outputs import ingest_outputs
from pipeline.ingest.redaction import Redactor
from pipeline.kafka import DeadLetters, EnvelopeProducer, KafkaUnavailable
from pipeline.retry import until_done

__all__ = [
    "FrameError",
    "Framer",
    "SyslogError",
    "SyslogMessage",
    "SyslogMetrics",
    "SyslogReceiver",
    "parse_line",
    "serve_syslog",
    "syslog_receiver",
    "tls_server_context",
]

log = structlog.get_logger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_OCTET_DIGITS = 10
RAW_PREFIX_BYTES = 512  # how much of an oversized or truncated frame the DLQ gets
_PRI = re.compile(rb"<([0-9]{1,3})>")
_OCTET = re.compile(rb"([0-9]{1,%d}) " % MAX_OCTET_DIGITS)
_DIGITS_ONLY = re.compile(rb"[0-9]{1,%d}" % MAX_OCTET_DIGITS)
_DELIMITER = re.compile(rb"[\n\x00]")
# VERSION is "1"; then TIMESTAMP HOSTNAME APP-NAME PROCID MSGID, each NILVALUE or printable ASCII.
_HEADER_5424 = re.compile(
    rb"1 ([!-~]{1,64}) ([!-~]{1,255}) ([!-~]{1,48}) ([!-~]{1,128}) ([!-~]{1,32}) "
)
_TIMESTAMP_3164 = re.compile(rb"[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} ")
# A tag ends with ":" (logger) or just a space (rsyslog forwarding an RFC 5424 message's APP-NAME).
_HOST_TAG = re.compile(rb"([!-~]{1,255}) ([A-Za-z0-9_./@-]{1,48})(?:\[[!-Z^-~]{0,128}\])?(?:: ?| )")
_TAG = re.compile(rb"([A-Za-z0-9_./@-]{1,48})(?:\[[!-Z^-~]{0,128}\])?(?:: ?| )")
_JSON_START = (b"{", b"[")
_BOM = b"\xef\xbb\xbf"


class SyslogError(ValueError):
    """A line is not syslog nor a bare payload; the message names the part and is the reason."""


@dataclass(frozen=True, slots=True)
class SyslogMessage:
    """One syslog message. `payload` is the MSG part: what the gateway's template rendered."""

    payload: bytes
    shape: str  # "rfc5424" | "rfc3164" | "bare"
    facility: int | None = None
    severity: int | None = None
    host: str | None = None
    app: str | None = None
    ts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame the framer could not deliver (too large, cut short); `raw` is its first bytes."""

    reason: str
    raw: bytes


def _nil(value: bytes) -> str | None:
    return None if value == b"-" else value.decode("ascii")


def _rfc3339_ms(value: bytes) -> int | None:
    """Apigee writes `+0000` where RFC 5424 wants `+00:00`; both (and `Z`) are fine here."""
    try:
        return int(datetime.fromisoformat(value.decode("ascii")).timestamp() * 1000)
    except (ValueError, OverflowError):
        return None


def _structured_data_end(line: bytes, pos: int) -> int:
    """Index just past the STRUCTURED-DATA starting at `pos` (`-` or `[id k="v"]...`)."""
    if line[pos : pos + 1] == b"-":
        return pos + 1
    n = len(line)
    while pos < n and line[pos] == 0x5B:  # "["
        pos += 1
        quoted = False
        while pos < n:
            c = line[pos]
            if quoted and c == 0x5C:  # backslash escapes `"`, `\` and `]` inside a value
                pos += 2
                continue
            if c == 0x22:
                quoted = not quoted
            elif c == 0x5D and not quoted:  # "]"
                break
            pos += 1
        else:
            raise SyslogError("syslog.structured_data: unterminated element")
        pos += 1
    if pos == n or line[pos] == 0x20:
        return pos
    raise SyslogError("syslog.structured_data: malformed")


def parse_line(line: bytes) -> SyslogMessage | None:
    """Parse one syslog line (framing already removed); None for a blank line.

    >>> m = parse_line(b'<14>1 2016-02-23T09:24:39.039+0000 e49cd3a9 Apigee - - - {"a":1}\\x00')
    >>> (m.shape, m.facility, m.severity, m.host, m.app, m.ts_ms, m.payload)
    ('rfc5424', 1, 6, 'e49cd3a9', 'Apigee', 1456219479039, b'{"a":1}')
    >>> parse_line(b'<13>Nov 14 22:13:20 mp-1 apigee[42]: {"a":1}\\r').payload
    b'{"a":1}'
    >>> parse_line(b'{"a":1}').shape
    'bare'
    >>> parse_line(b"hello")
    Traceback (most recent call last):
    ...
    pipeline.ingest.syslog.SyslogError: syslog.pri: missing <PRI> and not a JSON payload
    """
    line = line.strip(b"\r\n\x00")
    if not line.strip():
        return None
    pri = _PRI.match(line)
    if pri is None:
        if line.lstrip()[:1] in (b"{", b"["):
            return SyslogMessage(payload=line, shape="bare")
        raise SyslogError("syslog.pri: missing <PRI> and not a JSON payload")
    value = int(pri.group(1))
    if value > 191:
        raise SyslogError(f"syslog.pri: {value} is out of range (0-191)")
    facility, severity = divmod(value, 8)
    pos = pri.end()

    if line.startswith(b"1 ", pos):
        header = _HEADER_5424.match(line, pos)
        if header is None:
            raise SyslogError("syslog.header: malformed RFC 5424 header")
        end = _structured_data_end(line, header.end())
        return SyslogMessage(
            payload=line[end + 1 :].removeprefix(_BOM),
            shape="rfc5424",
            facility=facility,
            severity=severity,
            host=_nil(header.group(2)),
            app=_nil(header.group(3)),
            ts_ms=None if header.group(1) == b"-" else _rfc3339_ms(header.group(1)),
        )

    # RFC 3164 is a convention more than a format: take what is there, keep the rest as MSG.
    host = app = None
    stamp = _TIMESTAMP_3164.match(line, pos)
    if stamp is not None:
        pos = stamp.end()
        # "host tag: MSG", "tag: MSG", "host tag MSG", "host MSG" look alike: prefer the reading
        # that leaves a JSON payload, which is what a gateway sends.
        candidates = [m for m in (_HOST_TAG.match(line, pos), _TAG.match(line, pos)) if m]
        json_first = [m for m in candidates if line[m.end() :].lstrip(b" ")[:1] in _JSON_START]
        tagged: re.Match[bytes] | None = None
        if line[pos : pos + 1] not in _JSON_START and candidates:
            tagged = (json_first or candidates)[0]
        if tagged is not None:
            if tagged.re is _HOST_TAG:
                host = tagged.group(1).decode("ascii")
                app = tagged.group(2).decode("ascii")
            else:
                app = tagged.group(1).decode("ascii")
            pos = tagged.end()
    return SyslogMessage(
        payload=line[pos:].lstrip(b" "),
        shape="rfc3164",
        facility=facility,
        severity=severity,
        host=host,
        app=app,
    )


class Framer:
    """Splits a TCP byte stream into frames, never holding more than one frame plus one read.

    >>> f = Framer(max_frame_bytes=64)
    >>> f.feed(b"5 hello<14>x\\n7 wor")
    [b'hello', b'<14>x']
    >>> f.feed(b"ld!!")
    [b'world!!']
    >>> f.feed(b"99 " + b"x" * 99)[0].reason
    'frame: 99 bytes (octet count) exceed the 64-byte limit'
    """

    def __init__(self, max_frame_bytes: int) -> None:
        if max_frame_bytes <= 0:
            raise ValueError("max_frame_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes
        # The DLQ gets the first bytes of a rejected frame: the same number whatever the reads.
        self._prefix_bytes = min(RAW_PREFIX_BYTES, max_frame_bytes)
        self._buf = bytearray()
        self._skip = 0  # bytes of a rejected octet-counted frame still to discard
        self._skip_line = False  # discarding a rejected LF-framed frame up to its delimiter
        self._oversize: FrameError | None = None  # reported once its prefix has arrived

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        buf = self._buf
        buf += data
        out: list[bytes | FrameError] = []
        pos = 0
        limit = self.max_frame_bytes
        while pos < len(buf):
            if self._skip:
                taken = min(self._skip, len(buf) - pos)
                if self._oversize is not None:
                    self._collect_prefix(out, buf[pos : pos + taken])
                pos += taken
                self._skip -= taken
                continue
            if self._skip_line:
                found = _DELIMITER.search(buf, pos)
                if found is None:
                    pos = len(buf)
                    break
                pos = found.end()
                self._skip_line = False
                continue
            octets = _OCTET.match(buf, pos)
            if octets is not None:
                size, start = int(octets.group(1)), octets.end()
                if size > limit:
                    reason = f"frame: {size} bytes (octet count) exceed the {limit}-byte limit"
                    self._oversize = FrameError(reason, b"")
                    self._skip = size
                    pos = start
                    continue
                if len(buf) - start < size:
                    break  # the rest of this frame is in a later read
                out.append(bytes(buf[start : start + size]))
                pos = start + size
                continue
            if _DIGITS_ONLY.fullmatch(buf, pos):
                break  # digits so far: an octet count whose space has not arrived yet
            found = _DELIMITER.search(buf, pos)
            if found is None:
                if len(buf) - pos > limit:
                    reason = f"frame: line longer than the {limit}-byte limit"
                    out.append(FrameError(reason, bytes(buf[pos : pos + self._prefix_bytes])))
                    self._skip_line = True
                    pos = len(buf)
                break
            frame = bytes(buf[pos : found.start()])
            pos = found.end()
            if len(frame) > limit:
                reason = f"frame: line longer than the {limit}-byte limit"
                out.append(FrameError(reason, frame[: self._prefix_bytes]))
            elif frame.strip(b"\r\x00 "):
                out.append(frame)
        del buf[:pos]
        return out

    def _collect_prefix(self, out: list[bytes | FrameError], data: bytes | bytearray) -> None:
        assert self._oversize is not None
        raw = self._oversize.raw + bytes(data[: self._prefix_bytes - len(self._oversize.raw)])
        self._oversize = FrameError(self._oversize.reason, raw)
        if len(raw) >= self._prefix_bytes:
            out.append(self._oversize)
            self._oversize = None

    def close(self) -> list[bytes | FrameError]:
        """The end of the stream: what is left is a last unterminated line, or a cut frame."""
        rest, self._buf = bytes(self._buf), bytearray()
        if self._skip:
            self._skip = 0
            pending, self._oversize = self._oversize, None
            return [pending] if pending is not None else []  # its prefix never fully arrived
        if self._skip_line or not rest.strip(b"\r\n\x00 "):
            return []
        octets = _OCTET.match(rest)
        if octets is not None:
            size = int(octets.group(1))
            got = len(rest) - octets.end()
            return [
                FrameError(
                    f"frame: connection closed after {got} of {size} octet-counted bytes",
                    rest[octets.end() : octets.end() + self._prefix_bytes],
                )
            ]
        return [rest]  # many senders do not terminate their last line


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
            "Batches retried because Kafka did not confirm in time",
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
    producer, dead_letters
        Where events and rejects go; a batch counts as delivered once both acknowledged it.
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
        producer: EnvelopeProducer,
        dead_letters: DeadLetters,
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
        self.producer = producer
        self.dead_letters = dead_letters
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
        await self._until_stored(lambda: self.producer.submit(events), transport, len(events))
        if self.deduplicator is not None:
            self.deduplicator.remember(e.request_id for e in events if e.request_id)
        per_origin: dict[str, list[Reject]] = {}
        for origin, reject in rejects:
            per_origin.setdefault(origin, []).append(reject)
        for origin, group in per_origin.items():
            send = functools.partial(self.dead_letters.send, group, origin=origin)
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
        """Retry `store` until Kafka confirms: what was read from a sender is never dropped
        (and the sender waits meanwhile)."""
        await until_done(
            store,
            retry_on=KafkaUnavailable,
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
    parser_factory: Callable[[Redactor], PayloadParser] = ApigeeParser,
) -> AsyncIterator[SyslogReceiver]:
    """A receiver (Apigee syslog by default; `KongParser` for Kong tcp-log's JSON lines) wired
    to Kafka per `settings`, not listening yet; closed (in-flight batches finished) before the
    producer is."""
    async with ingest_outputs(settings) as out:
        receiver = SyslogReceiver(
            parser_factory(out.redactor),
            out.producer,
            out.dead_letters,
            allow=allow,
            max_frame_bytes=max_frame_bytes,
            max_connections=max_connections,
            metrics=metrics if metrics is not None else SyslogMetrics(CollectorRegistry()),
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
    parser_factory: Callable[[Redactor], PayloadParser] = ApigeeParser,
) -> None:
    """Run the receiver on the given ports until cancelled; /metrics on `metrics_port`."""
    if tls_port is not None and tls is None:
        raise ValueError("a TLS port needs an SSL context (tls_server_context)")
    if tcp_port is None and udp_port is None and tls_port is None:
        raise ValueError("no port to listen on")
    registry = CollectorRegistry()
    async with syslog_receiver(
        settings,
        allow=allow,
        max_frame_bytes=max_frame_bytes,
        max_connections=max_connections,
        metrics=SyslogMetrics(registry),
        parser_factory=parser_factory,
    ) as receiver:
        if tcp_port is not None:
            await receiver.start_tcp(host, tcp_port)
        if udp_port is not None:
            await receiver.start_udp(host, udp_port)
        if tls_port is not None:
            await receiver.start_tcp(host, tls_port, ssl=tls)
        if metrics_port is not None:
            prometheus_client.start_http_server(metrics_port, addr=host, registry=registry)
        await asyncio.Event().wait()
