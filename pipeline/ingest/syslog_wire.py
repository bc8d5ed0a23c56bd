"""Syslog on the wire: message headers and TCP framing, no I/O (the receivers are in
`pipeline.ingest.syslog`).

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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

__all__ = ["RAW_PREFIX_BYTES", "FrameError", "Framer", "SyslogError", "SyslogMessage", "parse_line"]

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
    pipeline.ingest.syslog_wire.SyslogError: syslog.pri: missing <PRI> and not a JSON payload
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
