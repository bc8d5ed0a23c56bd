"""Syslog transports for outgoing messages: TCP or TLS streams and UDP datagrams.

Stream framing (RFC 6587): octet counting (`<length> <message>`) by default. rsyslog's imtcp
parses it out of the box (`SupportOctetCountedFraming` is on by default, and it still takes
newline-framed lines on the same port), RFC 5425 makes it the only framing for syslog over TLS, and
it survives any byte in a message. `newline` framing (message + LF) is there for receivers that know
nothing else; CEF records carry no raw line break, so it is safe for them too.

What counts as written on a stream: a batch whose bytes the kernel took (`drain` returned) on a
connection the receiver had not closed. A connection the receiver closed since the last batch
(restart, idle timeout) is noticed before writing and replaced; a write that fails is retried once
on a new connection, then the caller is told (`OSError`) and the whole batch is sent again later:
at least once, never silently lost. Plain TCP syslog has no application-level acknowledgement, so
bytes in flight when a receiver dies can still be lost (RFC 6587 section 4); receivers that must
not lose them use RELP or a durable queue in front.

UDP has no delivery confirmation at all: a datagram handed to the kernel counts as delivered. An
ICMP "port unreachable" reported for an earlier datagram fails the next batch, which is retried.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Literal, Protocol

import structlog

__all__ = ["Framing", "SyslogDatagram", "SyslogStream", "SyslogTransport", "frame"]

log = structlog.get_logger(__name__)
Framing = Literal["octet", "newline"]


def frame(message: bytes, framing: Framing) -> bytes:
    """One message framed for a stream.

    >>> frame(b"<14>1 - - - - - - hi", "octet")
    b'20 <14>1 - - - - - - hi'
    """
    if framing == "octet":
        return b"%d %s" % (len(message), message)
    return message + b"\n"


class SyslogTransport(Protocol):
    peer: str

    async def open(self) -> None: ...

    async def send(self, messages: list[bytes]) -> None:
        """Every message written, or `OSError`."""
        ...

    async def close(self) -> None: ...


class SyslogStream:
    """One TCP (or TLS, when `tls` is given) connection, reopened when it breaks."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        framing: Framing = "octet",
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.framing = framing
        self.tls = tls
        self.server_name = server_name
        self.timeout_s = timeout_s
        self.peer = f"{'tls' if tls else 'tcp'}://{host}:{port}"
        self.connects = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Connect now, so a wrong address or certificate shows at start (not fatal: `send`
        connects again)."""
        async with self._lock:
            try:
                await self._connected()
            except OSError as exc:
                log.warning("syslog_out.connect_failed", peer=self.peer, error=repr(exc))
                await self._drop()

    async def send(self, messages: list[bytes]) -> None:
        data = b"".join(frame(m, self.framing) for m in messages)
        async with self._lock:
            for attempt in (1, 2):
                try:
                    writer = await self._connected()
                    writer.write(data)
                    async with asyncio.timeout(self.timeout_s):
                        await writer.drain()
                    return
                except OSError:  # TimeoutError and ssl.SSLError are OSErrors too
                    await self._drop()
                    if attempt == 2:
                        raise

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _connected(self) -> asyncio.StreamWriter:
        reader, writer = self._reader, self._writer
        # The receiver closing its end (restart, idle timeout) arrives as EOF: writing there would
        # "succeed" into a dead socket, so reconnect first. A FIN that came in since the loop last
        # polled is only seen once the loop has run the socket's read callback: two passes (the
        # first polls and queues it behind this task, the second runs it).
        if reader is not None and writer is not None:
            for _ in range(2):
                await asyncio.sleep(0)
            reader, writer = self._reader, self._writer
        if reader is not None and writer is not None:
            if not (reader.at_eof() or reader.exception() or writer.is_closing()):
                return writer
            await self._drop()
        async with asyncio.timeout(self.timeout_s):
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self.tls,
                server_hostname=(self.server_name or self.host) if self.tls else None,
            )
        self._reader, self._writer = reader, writer
        self.connects += 1
        return writer

    async def _drop(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is None:
            return
        writer.close()
        try:
            async with asyncio.timeout(self.timeout_s):
                await writer.wait_closed()
        except OSError:
            pass  # already broken: nothing more to close


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.error: OSError | None = None

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.error = exc


class SyslogDatagram:
    """UDP: one datagram per message (the formatter keeps each under the size limit)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.peer = f"udp://{host}:{port}"
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol = _Datagrams()

    async def open(self) -> None:
        if self._transport is None or self._transport.is_closing():
            loop = asyncio.get_running_loop()
            self._protocol = _Datagrams()
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: self._protocol, remote_addr=(self.host, self.port)
            )

    async def send(self, messages: list[bytes]) -> None:
        await self.open()
        assert self._transport is not None
        error, self._protocol.error = self._protocol.error, None
        if error is not None:
            raise error
        for message in messages:
            self._transport.sendto(message)

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
