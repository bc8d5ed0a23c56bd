"""`gatewatch parse`: the operator's check of a mapping — raw gateway logs in, the normalized,
redacted events out as JSON lines (rejects with their reasons on the error stream)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

import orjson

from pipeline.events import GatewayEvent, Reject
from pipeline.ingest.apigee import ApigeeParser
from pipeline.ingest.kong import KongParser
from pipeline.ingest.redaction import Redactor
from pipeline.ingest.syslog_wire import SyslogError, parse_line

__all__ = ["PARSERS", "parse_stream"]

Parse = Callable[[Redactor, bytes], tuple[list[GatewayEvent], list[Reject]]]


def _kong(redactor: Redactor, data: bytes) -> tuple[list[GatewayEvent], list[Reject]]:
    """One http-log body, or JSON lines when the whole is not one JSON document."""
    parser = KongParser(redactor)
    whole = parser.parse_body(data)
    if whole.events or not whole.rejects or not whole.rejects[0].reason.startswith("malformed"):
        return whole.events, whole.rejects
    events: list[GatewayEvent] = []
    rejects: list[Reject] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        result = parser.parse_body(line)
        events.extend(result.events)
        for reject in result.rejects:
            reject.reason = f"line {number}: {reject.reason}"
        rejects.extend(result.rejects)
    return events, rejects


def _apigee_json(redactor: Redactor, data: bytes) -> tuple[list[GatewayEvent], list[Reject]]:
    """MessageLogging JSON as the HTTP endpoint gets it: one object or an array."""
    result = ApigeeParser(redactor).parse_payload(data)
    return result.events, result.rejects


def _apigee_syslog(redactor: Redactor, data: bytes) -> tuple[list[GatewayEvent], list[Reject]]:
    """Syslog lines as the receiver gets them (RFC 5424/3164, FormatMessage or bare JSON)."""
    parser = ApigeeParser(redactor)
    events: list[GatewayEvent] = []
    rejects: list[Reject] = []
    for number, line in enumerate(data.split(b"\n"), 1):
        try:
            message = parse_line(line)
        except SyslogError as exc:
            line_rejects = [Reject(source="apigee", reason=str(exc), raw=parser.scrub_raw(line))]
        else:
            if message is None:
                continue
            result = parser.parse_payload(message.payload, host=message.host, ts_ms=message.ts_ms)
            events.extend(result.events)
            line_rejects = result.rejects
        for reject in line_rejects:
            reject.reason = f"line {number}: {reject.reason}"
        rejects.extend(line_rejects)
    return events, rejects


PARSERS: dict[str, Parse] = {
    "kong": _kong,
    "apigee-json": _apigee_json,
    "apigee-syslog": _apigee_syslog,
}


def parse_stream(source: str, data: bytes, key: bytes, out: TextIO, err: TextIO) -> tuple[int, int]:
    events, rejects = PARSERS[source](Redactor(key), data)
    for event in events:
        out.write(event.model_dump_json() + "\n")
    for reject in rejects:
        err.write(orjson.dumps({"reason": reject.reason, "source": reject.source}).decode() + "\n")
    return len(events), len(rejects)
