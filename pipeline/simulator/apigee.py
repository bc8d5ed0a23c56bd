"""Apigee MessageLogging lines for simulated requests.

`syslog_line(entry)` renders one Kong entry as the line Apigee's MessageLogging policy sends to
the gatewatch syslog receiver with our template (`apigee-messagelogging/gatewatch-logging/.../
ML-gatewatch-syslog.xml`) and `FormatMessage=true`: an RFC 5424 header (`<14>1 <time+0000>
<message processor> Apigee - - - `) then the template's JSON, whose keys are flow-variable names
and whose values are all strings (`""` when the variable is unset).

The mapping follows Apigee's semantics: VerifyAPIKey sets `client_id` (the key) and the developer
app only when the key was valid; a request Apigee answered itself (bad key, quota, no such
resource) has no target timestamps and no `response.status.code`, only `message.status.code`.
Requests no API proxy matches are logged by a catch-all proxy on `/` (an Apigee organisation
needs one to see them at all).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

__all__ = ["syslog_line"]

# Message processors (the syslog HOSTNAME and `system.uuid`).
PROCESSORS = (
    "e49cd3a9-4b5c-4f6a-9d7e-0123456789ab",
    "0c7d2b61-93e4-4a0b-b1f2-5e6d7c8b9a01",
    "5a1f9e3c-2d4b-4c6a-8e7f-9a0b1c2d3e4f",
    "b8e2c4d6-1f3a-4b5c-9d8e-7f6a5b4c3d2e",
)
_FAULTS = {
    ("401", "No API key found in request"): ("FailedToResolveAPIKey", "PROXY_REQ_FLOW"),
    ("401", "Unauthorized"): ("InvalidApiKey", "PROXY_REQ_FLOW"),
    ("403", ""): ("InvalidApiKeyForGivenResource", "PROXY_REQ_FLOW"),
    ("429", ""): ("QuotaViolation", "PROXY_REQ_FLOW"),
    ("404", ""): ("RaiseFault", "PROXY_REQ_FLOW"),
    ("504", ""): ("GatewayTimeout", "TARGET_REQ_FLOW"),
}
_SECOND_CACHE: dict[int, str] = {}
_NAMES_CACHE: dict[tuple[str, ...], str] = {}


def _header_name(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def _header_names(headers: dict[str, Any]) -> str:
    """`request.headers.names` as Apigee renders the Java collection: `[Host, User-Agent]`.
    Clients send the same few header sets over and over: cached (bounded)."""
    key = tuple(headers)
    text = _NAMES_CACHE.get(key)
    if text is None:
        if len(_NAMES_CACHE) > 10_000:
            _NAMES_CACHE.clear()
        text = _NAMES_CACHE[key] = "[" + ", ".join(_header_name(n) for n in key) + "]"
    return text


def _stamp(ms: int) -> str:
    """RFC 3339 with Apigee's `+0000` offset; the second is cached (lines come in time order)."""
    sec, milli = divmod(ms, 1000)
    text = _SECOND_CACHE.get(sec)
    if text is None:
        if len(_SECOND_CACHE) > 4096:
            _SECOND_CACHE.clear()
        text = _SECOND_CACHE[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{text}.{milli:03d}+0000"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return value if isinstance(value, str) else str(value)


def record(entry: dict[str, Any]) -> dict[str, str]:
    """The MessageLogging JSON object (flow variable -> string) for one Kong entry."""
    request = entry["request"]
    response = entry["response"]
    headers = request.get("headers") or {}
    latencies = entry.get("latencies") or {}
    rid: str = request.get("id") or "0" * 32
    uri: str = request.get("uri") or "/"
    path, _, query = uri.partition("?")
    started = int(entry["started_at"])
    total = int(latencies.get("request") or 0)
    kong_ms = int(latencies.get("kong") or 0)
    proxy = latencies.get("proxy")
    proxy_ms = -1 if proxy is None else int(proxy)
    ended = started + total
    status = str(response["status"])
    proxied = entry.get("source") == "upstream"
    reached_target = bool(entry.get("tries"))
    consumer = entry.get("consumer") or {}
    service = (entry.get("service") or {}).get("name") or "catch-all"
    app = consumer.get("username") or ""
    fault, state = "", ""
    if not proxied:
        message = ""
        if status == "401":
            message = "Unauthorized" if headers.get("apikey") else "No API key found in request"
        fault, state = _FAULTS.get((status, message), ("", ""))
    processor = PROCESSORS[int(rid[0], 16) % len(PROCESSORS)]
    names = _header_names(headers)
    return {
        "messageid": f"rrt-{rid[:17]}-b-ea-{int(rid[17:21], 16)}-{int(rid[21:29], 16) % 10**8}-1",
        "system.timestamp": str(ended + 1),
        "system.uuid": processor,
        "client.ip": entry["client_ip"],
        "proxy.client.ip": entry["client_ip"],
        "request.verb": request["method"],
        "request.path": path,
        "request.querystring": query,
        "request.header.User-Agent": _text(headers.get("user-agent")),
        "request.header.Accept-Language": _text(headers.get("accept-language")),
        "request.header.Referer": _text(headers.get("referer")),
        "request.header.Origin": _text(headers.get("origin")),
        "request.header.Content-Type": _text(headers.get("content-type")),
        "request.header.Content-Length": _text(headers.get("content-length")),
        "request.header.X-Forwarded-For": _text(headers.get("x-forwarded-for")),
        "request.headers.names": names,
        "message.status.code": status,
        "response.status.code": status if proxied else "",
        "response.header.Content-Length": _text(response.get("headers", {}).get("content-length")),
        "developer.app.name": app,
        "client_id": _text(headers.get("apikey")) if app else "",
        "developer.email": f"api@{app}.example" if app else "",
        "apiproduct.name": f"{service}-partner" if app else "",
        "apiproxy.name": service,
        "apiproxy.revision": "7",
        "environment.name": "prod",
        "organization.name": "shop-example",
        "proxy.basepath": "/",
        "proxy.pathsuffix": path,
        "fault.name": fault,
        "error.state": state,
        "client.received.start.timestamp": str(started),
        "client.sent.end.timestamp": str(ended),
        "target.sent.start.timestamp": str(started + kong_ms) if reached_target else "",
        "target.received.end.timestamp": (
            str(started + kong_ms + proxy_ms) if reached_target and proxy_ms >= 0 else ""
        ),
    }


def syslog_line(entry: dict[str, Any]) -> bytes:
    """The syslog line (no trailing newline) Apigee sends for this request.

    >>> from pipeline.simulator import Simulation
    >>> entry = next(Simulation(seed=1, minutes=1, consumers=50).kong_entries())
    >>> line = syslog_line(entry)
    >>> line.split(b" ")[0] in (b"<14>1", b"<11>1"), b" Apigee - - - {" in line
    (True, True)
    """
    rec = record(entry)
    pri = b"<14>1 " if int(rec["message.status.code"]) < 400 else b"<11>1 "
    header = f"{_stamp(int(rec['system.timestamp']))} {rec['system.uuid']} Apigee - - - "
    return pri + header.encode() + orjson.dumps(rec)
