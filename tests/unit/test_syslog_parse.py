"""Syslog header parsing: RFC 5424, RFC 3164, Apigee's FormatMessage shapes, bare payloads.

The literal lines below are what real senders wrote on the wire (util-linux `logger` 2.38 and
rsyslog 8.2302 on Debian 12, captured once with a socket), plus the FormatMessage=true shape from
Apigee's documentation.
"""

from __future__ import annotations

import pytest

from pipeline.ingest.syslog_wire import SyslogError, SyslogMessage, parse_line

JSON = b'{"client.ip":"192.0.2.1"}'


def parsed(line: bytes) -> SyslogMessage:
    message = parse_line(line)
    assert message is not None
    return message


def test_apigee_formatmessage_true() -> None:
    m = parsed(
        b"<14>1 2016-02-23T09:24:39.039+0000 e49cd3a9-4b5c-4f6a-9d7e-0123456789ab Apigee - - - "
        + JSON
        + b"\x00"
    )
    assert m == SyslogMessage(
        payload=JSON,
        shape="rfc5424",
        facility=1,
        severity=6,
        host="e49cd3a9-4b5c-4f6a-9d7e-0123456789ab",
        app="Apigee",
        ts_ms=1_456_219_479_039,
    )


@pytest.mark.parametrize(("pri", "severity"), [(14, 6), (12, 4), (11, 3), (9, 1)])
def test_apigee_log_levels(pri: int, severity: int) -> None:
    line = b"<%d>1 2023-11-14T22:13:20.000+0000 mp Apigee-Edge - - - " % pri + JSON
    m = parsed(line)
    assert (m.facility, m.severity, m.app) == (1, severity, "Apigee-Edge")


def test_logger_rfc5424_with_structured_data() -> None:
    m = parsed(
        b'<13>1 2026-11-22T04:00:42.082199+00:00 vm Apigee - - [timeQuality tzKnown="1" '
        b'isSynced="0"] {"a": "b c"}\n'
    )
    assert (m.shape, m.host, m.app, m.payload) == ("rfc5424", "vm", "Apigee", b'{"a": "b c"}')
    assert m.ts_ms == 1_795_320_042_082


def test_structured_data_with_escapes_and_several_elements() -> None:
    m = parsed(b'<165>1 - host app 12 ID47 [a x="q\\"]\\\\" y="]"][b@1 z=""] ' + JSON)
    assert (m.facility, m.severity, m.ts_ms, m.payload) == (20, 5, None, JSON)


def test_rfc5424_nil_values_and_no_message() -> None:
    m = parsed(b"<0>1 - - - - - -")
    assert (m.host, m.app, m.ts_ms, m.payload) == (None, None, None, b"")


def test_rfc5424_bom_is_not_part_of_the_payload() -> None:
    assert parsed(b"<14>1 - h a - - - \xef\xbb\xbf" + JSON).payload == JSON


def test_rfc5424_unparseable_timestamp_is_no_timestamp() -> None:
    assert parsed(b"<14>1 yesterday h a - - - " + JSON).ts_ms is None


@pytest.mark.parametrize(
    ("line", "host", "app"),
    [
        # logger --rfc3164
        (b"<13>Nov 22 04:00:42 vm Apigee: " + JSON + b"\n", "vm", "Apigee"),
        # rsyslog RSYSLOG_TraditionalForwardFormat, with a pid
        (b"<14>Nov  2 04:00:42 mp-1 apigee[4242]: " + JSON, "mp-1", "apigee"),
        # no hostname (what some local senders write)
        (b"<14>Nov 22 04:00:42 apigee: " + JSON, None, "apigee"),
        # rsyslog forwarding an RFC 5424 message in its traditional format: no ":" after the tag
        (b'<13>Nov 22 04:10:21 vm Apigee {"client.ip":"192.0.2.1"}\n', "vm", "Apigee"),
        # nothing but the timestamp before the JSON
        (b"<14>Nov 22 04:00:42 " + JSON, None, None),
    ],
)
def test_rfc3164(line: bytes, host: str | None, app: str | None) -> None:
    m = parsed(line)
    assert (m.shape, m.host, m.app, m.payload) == ("rfc3164", host, app, JSON)


def test_rfc3164_host_or_tag_without_colon_still_leaves_the_payload() -> None:
    # "host MSG" and "tag MSG" cannot be told apart; either way the JSON is the payload.
    assert parsed(b"<14>Nov 22 04:00:42 mp-1 " + JSON).payload == JSON
    assert parsed(b"<14>Nov 22 04:00:42 mp-1 apigee[7] " + JSON).payload == JSON


def test_pri_without_header() -> None:
    m = parsed(b"<14>" + JSON)
    assert (m.shape, m.facility, m.severity, m.payload) == ("rfc3164", 1, 6, JSON)


@pytest.mark.parametrize("line", [JSON, b"  " + JSON, b"[" + JSON + b"]", JSON + b"\r\n\x00"])
def test_payload_only_is_a_bare_json_line(line: bytes) -> None:
    m = parsed(line)
    assert m.shape == "bare"
    assert m.payload == line.strip(b"\r\n\x00")


@pytest.mark.parametrize("line", [b"", b"\n", b"\x00", b"\r\n", b"   ", b"\x00\x00\r\n"])
def test_blank_lines_are_nothing(line: bytes) -> None:
    assert parse_line(line) is None


def test_trailing_nul_and_cr_are_stripped_everywhere() -> None:
    for tail in (b"\x00", b"\r", b"\r\n", b"\x00\n", b"\n\x00", b"\r\x00\x00"):
        assert parsed(b"<14>1 - h a - - - " + JSON + tail).payload == JSON


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"hello world", "syslog.pri: missing <PRI> and not a JSON payload"),
        (b"<>1 - - - - - -", "syslog.pri: missing <PRI> and not a JSON payload"),
        (b"<192>1 - - - - - - x", "syslog.pri: 192 is out of range (0-191)"),
        (b"<999>" + JSON, "syslog.pri: 999 is out of range (0-191)"),
        (b"<14>1 - h a - -", "syslog.header: malformed RFC 5424 header"),
        (b"<14>1  h a - - - x", "syslog.header: malformed RFC 5424 header"),
        (b'<14>1 - h a - - [x y="1"', "syslog.structured_data: unterminated element"),
        (b"<14>1 - h a - - [x]junk", "syslog.structured_data: malformed"),
        (b"<14>1 - h a - - x " + JSON, "syslog.structured_data: malformed"),
    ],
)
def test_malformed_lines_name_the_part(line: bytes, reason: str) -> None:
    with pytest.raises(SyslogError) as err:
        parse_line(line)
    assert str(err.value) == reason
