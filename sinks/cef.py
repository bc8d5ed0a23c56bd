"""Alerts as CEF over syslog: RFC 5424 messages to a syslog receiver over TCP, TLS or UDP.

One alert is one message:

    <PRI>1 2024-05-01T10:00:00.123Z HOST gatewatch - finding - CEF:0|gatewatch|gatewatch|0.1.0|
    sqli|would block ip:203.0.113.9: SQL injection probing|8| rt=1714557600123 start=... ...

- Header: Device Vendor and Product `gatewatch`, Device Version the package's, Signature ID the
  strongest reason's code (an operator action's name for operator alerts; `-` if none), Name the
  alert's title, Severity 0-10 from the alert severity (info 1, low 3, medium 5, high 8, critical
  10; CEF's bands are 0-3 low, 4-6 medium, 7-8 high, 9-10 very high). `\\` and `|` are escaped in
  header fields; a line break cannot be escaped there and becomes a space. No header field is ever
  empty (`-` instead).
- Extension, keys from the CEF dictionary: `rt` (emit time) and `start` (event time) in epoch ms,
  `externalId` (the stable alert id: deduplicate on it), `cat` (decision|finding|operator), `act`
  (the action, `would-<action>` when the mode did not enforce it), `src` (or `c6a2` for IPv6) for
  address subjects, `suser` (the consumer or user; the operator for operator actions), `request`
  (the route), `destinationServiceName`, `dvchost` (gateway node), `deviceExternalId` (gateway),
  `cnt` (requests cited as evidence), `msg` (the reasons, readable), and labelled custom fields:
  cs1 subject, cs2 mode, cs3 reason codes, cs4 MITRE ATT&CK ids, cs5 evidence request ids, cs6
  tenant, cfp1 score, cfp2/cfp3/cfp4 the strongest reason's feature value/baseline/limit (cfp2's
  label is the feature name), flexString1 detector, deviceCustomDate1 decision expiry.
  In values `\\`, `=` are escaped and line breaks written `\\n` / `\\r` (pipes need no escape
  there, and liblognorm's `%cef%` refuses `\\|` in a value). Other control characters have no CEF
  escape (rsyslog would show them as `#011`): they become U+FFFD. Fields are separated by exactly
  one space, so a value's own leading and trailing spaces survive parsing.
- Size: a message never exceeds `max_bytes`: by default 8,096 over TCP/TLS, the most rsyslog 8
  takes by default (a longer octet-counted frame is cut there and its rest parsed as a second,
  broken message), and RFC 5426's 2,048 over UDP. Fields are placed in the order above; a
  free-text value that does not fit is cut at a character boundary (never inside an escape or a
  UTF-8 sequence) and ends with `…`; a field that cannot fit at all is left out whole with its
  label; a title too long for the header is cut the same way. A parser always sees a complete
  record.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Literal

from pipeline.alerts import Alert
from pipeline.config import Settings
from sinks.base import Delivery, SinkConfigError
from sinks.registry import require
from sinks.syslog_out import Framing, SyslogDatagram, SyslogStream, SyslogTransport

__all__ = ["CefFormatter", "CefSink", "build", "escape_header", "escape_value"]

VENDOR = PRODUCT = "gatewatch"
SEVERITY = {"info": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}
# The syslog severity in PRI: critical 2 (crit), high 3 (err), medium 4 (warning), ...
SYSLOG_SEVERITY = {"info": 6, "low": 5, "medium": 4, "high": 3, "critical": 2}
RSYSLOG_MAX_BYTES = 8096
UDP_MAX_BYTES = 2048
NAME_MAX_CHARS = 512  # ArcSight's limit for the Name field
SIGNATURE_MAX_CHARS = 100
EXTENSION_RESERVE = 160  # bytes a long title leaves for rt, start, externalId, cat, act, ...
MIN_CUT_BYTES = 16  # a free-text value cut shorter than this says nothing: leave it out
ELLIPSIS = "…"
_CONTROL = "\x00-\x09\x0b\x0c\x0e-\x1f\x7f"
_HEADER = re.compile(f"[\\\\|\r\n{_CONTROL}]")
_VALUE = re.compile(f"[\\\\=\r\n{_CONTROL}]")
_HEADER_ESC = {"\\": "\\\\", "|": "\\|", "\r": " ", "\n": " "}
_VALUE_ESC = {"\\": "\\\\", "=": "\\=", "\r": "\\r", "\n": "\\n"}
_PRINTUSASCII = re.compile(r"[\x21-\x7e]{1,255}")


def _header_char(match: re.Match[str]) -> str:
    return _HEADER_ESC.get(match.group(), "\ufffd")


def _value_char(match: re.Match[str]) -> str:
    return _VALUE_ESC.get(match.group(), "\ufffd")


def escape_header(text: str) -> str:
    """A CEF header field: `\\` and `|` escaped, line breaks and control characters replaced.

    >>> escape_header("a|b\\\\c\\nd")
    'a\\\\|b\\\\\\\\c d'
    """
    return _HEADER.sub(_header_char, text) if _HEADER.search(text) else text


def escape_value(text: str) -> str:
    """A CEF extension value: `\\`, `=` escaped, line breaks as `\\n`/`\\r`, no raw controls.

    >>> escape_value("a=b\\\\c\\r\\nd|e")
    'a\\\\=b\\\\\\\\c\\\\r\\\\nd|e'
    """
    return _VALUE.sub(_value_char, text) if _VALUE.search(text) else text


def _cut(text: str, budget: int, escape: Callable[[str], str] = escape_value) -> str:
    """The longest escaped prefix of `text` plus an ellipsis within `budget` UTF-8 bytes."""
    room = budget - len(ELLIPSIS.encode())
    out: list[str] = []
    for char in text:
        piece = escape(char)
        room -= len(piece.encode())
        if room < 0:
            break
        out.append(piece)
    return "".join(out) + ELLIPSIS


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


# One unit: the (key, value) pairs that go together (a custom field and its label), and whether
# the last value is free text that may be cut to fit.
_Unit = tuple[list[tuple[str, str]], bool]


def _units(alert: Alert) -> Iterator[_Unit]:
    top = max(alert.reasons, key=lambda r: r.score, default=None)
    yield [("rt", str(alert.emit_time)), ("start", str(alert.event_time))], False
    yield [("externalId", alert.id), ("cat", alert.kind)], False
    act = alert.operator.action if alert.operator else alert.action
    yield [("act", act if alert.enforced or alert.operator else f"would-{act}")], False
    yield [("cs2Label", "mode"), ("cs2", alert.mode)], False
    yield [("cfp1Label", "score"), ("cfp1", _number(alert.score))], False
    kind, _, rest = alert.subject.partition(":")
    if alert.scope == "ip":
        if ipaddress.ip_address(rest).version == 4:
            yield [("src", rest)], False
        else:
            yield [("c6a2Label", "Source IPv6 Address"), ("c6a2", rest)], False
    if alert.operator:
        yield [("suser", alert.operator.actor)], True
    elif kind in ("consumer", "user"):
        yield [("suser", rest)], True
    yield [("cs1Label", "subject"), ("cs1", alert.subject)], True
    if alert.attack:
        yield [("cs4Label", "attack"), ("cs4", ",".join(alert.attack))], True
    if alert.route:
        yield [("request", alert.route)], True
    if alert.service:
        yield [("destinationServiceName", alert.service)], True
    if alert.gateway:
        yield [("deviceExternalId", alert.gateway)], True
    if alert.node:
        yield [("dvchost", alert.node)], True
    if alert.tenant:
        yield [("cs6Label", "tenant"), ("cs6", alert.tenant)], True
    yield [("flexString1Label", "detector"), ("flexString1", alert.detector)], True
    if alert.expires_at is not None:
        expires = str(alert.expires_at)
        yield [("deviceCustomDate1Label", "expires"), ("deviceCustomDate1", expires)], False
    if top is not None and top.feature is not None and top.value is not None:
        yield [("cfp2Label", top.feature), ("cfp2", _number(top.value))], False
        if top.baseline is not None:
            yield [("cfp3Label", "baseline"), ("cfp3", _number(top.baseline))], False
        if top.limit is not None:
            yield [("cfp4Label", "limit"), ("cfp4", _number(top.limit))], False
    if alert.reasons:
        yield [("cs3Label", "reasons"), ("cs3", ",".join(r.code for r in alert.reasons))], True
    if alert.evidence:
        yield [("cnt", str(len(alert.evidence)))], False
        yield [("cs5Label", "evidence"), ("cs5", ",".join(alert.evidence))], True
    text = "; ".join(f"{r.detector}: {r.text}" for r in alert.reasons)
    operator = alert.operator
    if operator and operator.reason and all(r.text != operator.reason for r in alert.reasons):
        text = f"{text}; {operator.reason}" if text else operator.reason
    if text:
        yield [("msg", text)], True


class CefFormatter:
    """Alert -> one RFC 5424 message carrying a CEF record, at most `max_bytes` long."""

    def __init__(
        self,
        *,
        hostname: str,
        max_bytes: int = RSYSLOG_MAX_BYTES,
        facility: int = 16,
        app_name: str = "gatewatch",
        device_version: str | None = None,
    ) -> None:
        if not _PRINTUSASCII.fullmatch(hostname):
            raise SinkConfigError(f"syslog hostname {hostname!r}: 1-255 printable ASCII, no spaces")
        if not 0 <= facility <= 23:
            raise SinkConfigError(f"syslog facility {facility}: 0-23")
        self.hostname = hostname
        self.max_bytes = max_bytes
        self.facility = facility
        self.app_name = app_name
        self.device_version = device_version or version("gatewatch")

    def cef_header(self, alert: Alert) -> tuple[str, str, str]:
        """The CEF header in three parts: before the Name, the Name (the title), after it."""
        top = max(alert.reasons, key=lambda r: r.score, default=None)
        signature = alert.operator.action if alert.operator else top.code if top else ""
        fields = (VENDOR, PRODUCT, self.device_version, signature[:SIGNATURE_MAX_CHARS] or "-")
        # An empty header field trips an assertion in liblognorm's %cef% (it can stop rsyslogd).
        text = alert.title or "-"
        name = escape_header(text)
        if len(text) > NAME_MAX_CHARS:
            name = escape_header(text[: NAME_MAX_CHARS - 1]) + ELLIPSIS
        before = "CEF:0|" + "|".join(escape_header(f) for f in fields) + "|"
        return before, name, f"|{SEVERITY[alert.severity]}|"

    def syslog_header(self, alert: Alert) -> str:
        pri = self.facility * 8 + SYSLOG_SEVERITY[alert.severity]
        stamp = datetime.fromtimestamp(alert.emit_time / 1000, UTC)
        when = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return f"<{pri}>1 {when} {self.hostname} {self.app_name} - {alert.kind} - "

    def record(self, alert: Alert) -> bytes:
        """The message; `ValueError` if even its header cannot fit in `max_bytes`."""
        before, name, after = self.cef_header(alert)
        prefix = (self.syslog_header(alert) + before).encode()
        suffix = after.encode()
        name_budget = self.max_bytes - EXTENSION_RESERVE - len(prefix) - len(suffix)
        encoded_name = name.encode()
        if len(encoded_name) > name_budget:  # a title too long for the header: cut it too
            budget = max(name_budget, len(ELLIPSIS.encode()))
            encoded_name = _cut(alert.title[:NAME_MAX_CHARS], budget, escape_header).encode()
        head = prefix + encoded_name + suffix
        room = self.max_bytes - len(head) - 1  # the space after the header's last `|`
        if room < 0:
            raise ValueError(f"the CEF header alone is over {self.max_bytes} bytes")
        parts: list[bytes] = []
        for pairs, cuttable in _units(alert):
            if not pairs[-1][1]:
                continue  # %cef% cannot parse a message ending in `key=`: empty means absent
            encoded = [f" {k}={escape_value(v)}".encode() for k, v in pairs]
            size = sum(map(len, encoded))
            if size <= room:
                parts.extend(encoded)
                room -= size
                continue
            key, value = pairs[-1]
            fixed = sum(map(len, encoded[:-1])) + len(f" {key}=".encode())
            if cuttable and room - fixed >= MIN_CUT_BYTES:
                last = f" {key}={_cut(value, room - fixed)}".encode()
                parts.extend([*encoded[:-1], last])
                room -= sum(map(len, encoded[:-1])) + len(last)
        # liblognorm's %cef% skips one character after the header's last `|`: always a space.
        return head + (b"".join(parts) if parts else b" ")


class CefSink:
    """The Sink: formats a batch and writes it on one syslog transport."""

    name = "cef"

    def __init__(self, transport: SyslogTransport, formatter: CefFormatter) -> None:
        self.transport = transport
        self.formatter = formatter

    async def start(self) -> None:
        await self.transport.open()

    async def send(self, alerts: list[Alert]) -> Delivery:
        messages: list[bytes] = []
        rejected: dict[str, str] = {}
        sent: list[Alert] = []
        for alert in alerts:
            try:
                messages.append(self.formatter.record(alert))
                sent.append(alert)
            except ValueError as exc:  # e.g. an ip: subject that is no address
                rejected[alert.id] = f"cef: {exc}"
        try:
            if messages:
                await self.transport.send(messages)
        except OSError as exc:
            delivery = Delivery.retry_all(sent, f"syslog {self.transport.peer}: {exc!r}")
            delivery.rejected = rejected
            return delivery
        return Delivery(rejected=rejected)

    async def close(self) -> None:
        await self.transport.close()


Transport = Literal["tcp", "tls", "udp"]


def client_tls(ca_file: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """Verifies the receiver against `ca_file` (the system's CAs when None); presents a client
    certificate when `cert` is given."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        context.load_cert_chain(cert, key)
    return context


def build(settings: Settings) -> CefSink:
    host = require(settings, "sink_cef_host")
    transport: Transport = settings.sink_cef_transport
    port = settings.sink_cef_port or (6514 if transport == "tls" else 514)
    if 0 < settings.sink_cef_max_bytes < 480:
        raise SinkConfigError("GATEWATCH_SINK_CEF_MAX_BYTES: at least 480 (RFC 5426's minimum)")
    default_max = UDP_MAX_BYTES if transport == "udp" else RSYSLOG_MAX_BYTES
    max_bytes = settings.sink_cef_max_bytes or default_max
    formatter = CefFormatter(
        hostname=settings.sink_cef_hostname or socket.gethostname(),
        max_bytes=max_bytes,
        facility=settings.sink_cef_facility,
    )
    timeout = settings.sink_cef_timeout_s
    if transport == "udp":
        return CefSink(SyslogDatagram(host, port), formatter)
    tls: ssl.SSLContext | None = None
    if transport == "tls":
        if bool(settings.sink_cef_tls_cert) != bool(settings.sink_cef_tls_key):
            raise SinkConfigError(
                "set both GATEWATCH_SINK_CEF_TLS_CERT and GATEWATCH_SINK_CEF_TLS_KEY, or neither"
            )
        try:
            tls = client_tls(
                settings.sink_cef_tls_ca, settings.sink_cef_tls_cert, settings.sink_cef_tls_key
            )
        except (OSError, ssl.SSLError) as exc:
            raise SinkConfigError(f"CEF sink TLS files: {exc}") from None
    framing: Framing = settings.sink_cef_framing
    stream = SyslogStream(
        host, port, framing=framing, tls=tls, server_name=settings.sink_cef_tls_server_name,
        timeout_s=timeout,
    )  # fmt: skip
    return CefSink(stream, formatter)
