"""Kong's log serializer (http-log, kafka-log, file-log, tcp-log) -> `GatewayEvent`.

Handles every shape Kong 1.x-3.10 produces: one object or an array per body, absent `route`,
`service`, `consumer`, `tries`, `request.id`, `upstream_status`, `source`; `upstream_status` as a
(possibly empty or multi-valued) string; `latencies.proxy == -1` when Kong answered itself; sizes as
strings. Secrets are fingerprinted and PII masked here, so nothing in clear goes further.

Two ways in, one answer:
- `parse_body` is the reference: orjson, then one `GatewayEvent` per entry, validated by pydantic.
- `parse_records` is what the collector calls: bodies of the common shape are decoded by msgspec
  (`kong_wire`) and turned straight into event field dicts, without a model per entry; any other
  body (a reject, an unusual type, an unknown key) gets the reference's answer. Both give the same
  events and the same rejects for every input (`tests/unit/test_kong_fast_path.py`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from pipeline.envelopes import EventRecord
from pipeline.events import GatewayEvent, Reject
from pipeline.ingest import kong_wire
from pipeline.ingest.kong_wire import KNOWN_KEYS, KongEntry
from pipeline.ingest.normalize import (
    MAX_STATUS,
    MIN_STATUS,
    NO_WINDOW_BOUNDS,
    ParseError,
    TimeWindow,
    as_int,
    ascii_ints,
    check_status,
    check_timestamp,
    route_template,
)
from pipeline.ingest.redaction import SECRET_HEADERS, Redactor

__all__ = ["KongParser", "ParseResult", "RecordResult"]

SOURCE = "kong"
# `sec-fetch-mode` (navigate, cors, ...): every current browser sends it, so a "browser" without
# it is a script wearing a browser's user agent (detectors/bots.py); a few bytes, nothing secret.
KEPT_HEADERS = ("accept-language", "referer", "origin", "content-type", "sec-fetch-mode")
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_CHARS = 256
# Paths and path segments whose masked form and template are remembered (short, PII-free ones).
PATH_CACHE = 20_000
MAX_CACHED_PATH = 256
MAX_CACHED_SEGMENT = 64
# The PII kinds in the order `Redactor.mask_pii` reports them.
PII_ORDER = ("email", "card", "ssn")
_MAX_INT = 2**63 - 1  # as_int's range


@dataclass
class ParseResult:
    events: list[GatewayEvent] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    def records(self) -> RecordResult:
        """The same result as event field dicts (what an envelope carries)."""
        return RecordResult([vars(e) for e in self.events], self.rejects)


@dataclass
class RecordResult:
    """Events as their field dicts, each one what `vars(GatewayEvent(...))` would hold; `fast`
    when the body took the fast path."""

    records: list[EventRecord] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    fast: bool = False


Mask = Callable[[str], tuple[str, list[str]]]


class _Miss(Exception):
    """An entry the fast path does not build: the reference parser answers for its body."""


def _first(value: Any) -> Any:
    """Repeated headers and query args arrive as arrays; the first one stands for them."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _text(value: Any) -> str:
    value = _first(value)
    if value is None or value is True:
        return ""
    return value if isinstance(value, str) else str(value)


def _clean_text(value: Any) -> str:
    """`_text` for the values whose text cannot depend on the JSON decoder; _Miss for the others
    (orjson reads an integer beyond 64 bits as a float, msgspec as an int: their text differs)."""
    if type(value) is str:
        return value
    if value is None or value is True:
        return ""
    if type(value) is list:
        first = value[0] if value else None
        if first is None or first is True:
            return ""
        if type(first) is str:
            return first
    raise _Miss


def _int(value: Any, field: str, default: int | None = None) -> int:
    """`as_int`, with the common case (an int in range) first."""
    if type(value) is int and -_MAX_INT <= value <= _MAX_INT:
        return value
    return as_int(value, field, default=default)


def _amount(value: Any, field: str, default: int | None = 0) -> int:
    """A size or a latency: an integer (absent meaning `default`), never negative."""
    n = as_int(value, field, default=default)
    if n < 0:
        raise ParseError(f"{field}: {n} is negative")
    return n


def _obj(entry: dict[str, Any], key: str, *, required: bool = False) -> dict[str, Any]:
    value = entry.get(key)
    if value is None:
        if required:
            raise ParseError(f"{key}: missing")
        return {}
    if not isinstance(value, dict):
        raise ParseError(f"{key}: expected an object, got {type(value).__name__}")
    return value


def _path_of(uri: str) -> str:
    """The path of a request URI, absolute (`http://host/p?q`) or not. A URL inside the query
    string (`/search?next=http://x/y`) is a value, not the request's address.

    >>> _path_of("https://api.example/v1/a?b=1"), _path_of("/search?next=http://evil/shell")
    ('/v1/a', '/search')
    """
    head = uri.partition("?")[0]
    if "://" in head:
        head = "/" + head.split("://", 1)[1].partition("/")[2]
    return head or "/"


def _upstream_status(value: Any) -> int | None:
    """`"502, 200 : 200"` lists every try; the last one is what the client got."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1000:
        return value
    if not isinstance(value, str):
        return None
    if len(value) == 3 and value.isascii() and value.isdigit():
        return int(value)  # the common case: one try
    codes = [n for n in ascii_ints(value[:256]) if n < 1000]
    return codes[-1] if codes else None


class KongParser:
    """Parses one http-log body (or one kafka-log / tcp-log message) into events and rejects."""

    source = SOURCE

    def __init__(
        self,
        redactor: Redactor,
        *,
        clock: Callable[[], float] = time.time,
        window: TimeWindow | None = None,
    ) -> None:
        self.redactor = redactor
        self.clock = clock  # the timestamp of entries without `started_at`
        # How far `started_at` may be from now (live ingest); without one (replaying old logs),
        # only a positive timestamp is required.
        self.window = window
        self._fingerprints: dict[tuple[str, ...], str] = {}
        self._paths: dict[str, tuple[str, tuple[str, ...], str]] = {}
        self._segments: dict[str, tuple[str, tuple[str, ...], str]] = {}

    def parse_body(self, body: bytes) -> ParseResult:
        result = ParseResult()
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            result.rejects.append(self._reject(f"malformed JSON: {exc}", body))
            return result
        entries = doc if isinstance(doc, list) else [doc]
        bounds = self._bounds()
        for entry in entries:
            self._parse_into(entry, result, bounds)
        return result

    def parse_payload(
        self, payload: bytes, *, host: str | None = None, ts_ms: int | None = None
    ) -> ParseResult:
        """One tcp-log line, as the line receiver hands it over (Kong puts no envelope around
        it, so `host` and `ts_ms` have nothing to add)."""
        return self.parse_body(payload)

    def scrub_raw(self, raw: bytes) -> bytes:
        return self.redactor.scrub_raw(raw)

    def parse_records(self, body: bytes) -> RecordResult:
        """`parse_body`'s answer as event field dicts, built without a model per entry when the
        body has the common shape."""
        decoded = kong_wire.decode(body)
        if decoded is not None:
            low, high = self._bounds()
            try:
                return RecordResult(
                    [self._record(e, x, low, high) for e, x in zip(*decoded, strict=True)],
                    fast=True,
                )
            except (_Miss, ParseError):
                pass
        return self.parse_body(body).records()

    def _parse_into(self, entry: Any, result: ParseResult, bounds: tuple[int, int]) -> None:
        try:
            if not isinstance(entry, dict):
                raise ParseError(f"entry: expected an object, got {type(entry).__name__}")
            result.events.append(self.parse_entry(entry, bounds))
        except ParseError as exc:
            result.rejects.append(self._reject(str(exc), self._redacted_raw(entry)))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            result.rejects.append(self._reject(f"{where}: {err['msg']}", self._redacted_raw(entry)))

    def parse_entry(
        self, entry: dict[str, Any], bounds: tuple[int, int] | None = None
    ) -> GatewayEvent:
        """One serializer entry; ParseError (or pydantic's ValidationError) says why not.
        `bounds` are the window's (`_bounds()`), computed once per body by the callers."""
        bounds = bounds or self._bounds()
        request = _obj(entry, "request", required=True)
        response = _obj(entry, "response", required=True)
        latencies = _obj(entry, "latencies")
        headers = request.get("headers") or {}
        if not isinstance(headers, dict):
            raise ParseError("request.headers: expected an object")
        method = request.get("method")
        if not isinstance(method, str) or not method:
            raise ParseError("request.method: expected a string")
        client_ip = entry.get("client_ip")
        if not isinstance(client_ip, str) or not client_ip:
            raise ParseError("client_ip: expected a string")
        uri = request.get("uri") or request.get("url")
        if not isinstance(uri, str):
            raise ParseError("request.uri: expected a string")
        raw_path = _path_of(uri)
        path, pii = self.redactor.mask_pii(raw_path)
        query, query_pii, query_secret = self._query(request.get("querystring"))
        pii.extend(k for k in query_pii if k not in pii)

        response_headers = response.get("headers")
        if not isinstance(response_headers, dict):
            response_headers = {}
        consumer = _obj(entry, "consumer")
        entity = _obj(entry, "authenticated_entity")
        service = _obj(entry, "service")
        tls = request.get("tls") if isinstance(request.get("tls"), dict) else {}
        proxy_latency = latencies.get("proxy")
        started_at = entry.get("started_at")

        return GatewayEvent(
            request_id=_text(request.get("id"))
            or _text(response_headers.get("x-kong-request-id"))
            or None,
            ts_ms=check_timestamp(
                as_int(started_at, "started_at"), "started_at", self.window, bounds
            )
            if started_at is not None
            else self._now_ms(),
            gateway=SOURCE,
            node=_text(entry.get("node")) or None,
            service=_text(service.get("name") or service.get("id")) or None,
            consumer=_text(consumer.get("id") or entity.get("consumer_id")) or None,
            # Kong's authenticated_entity is the credential row itself (our example config also
            # adds it as the custom field credential_id): stable per credential.
            credential=self._credential(
                headers, query_secret, _text(entity.get("id") or entry.get("credential_id"))
            ),
            client_ip=client_ip,
            method=method.upper(),
            path=path,
            route=route_template(path),
            query=query,
            status=check_status(
                as_int(response.get("status"), "response.status"), "response.status"
            ),
            upstream_status=_upstream_status(entry.get("upstream_status")),
            request_size=_amount(request.get("size"), "request.size"),
            response_size=_amount(response.get("size"), "response.size"),
            latency_ms=float(_amount(latencies.get("request"), "latencies.request")),
            # -1: Kong answered itself (no upstream).
            upstream_latency_ms=None
            if proxy_latency in (None, -1, "-1")
            else float(_amount(proxy_latency, "latencies.proxy", default=None)),
            gateway_latency_ms=float(_amount(latencies.get("kong"), "latencies.kong")),
            user_agent=_text(headers.get("user-agent"))[:512],
            headers=self._kept_headers(headers),
            header_fingerprint=self._header_fingerprint(headers),
            tls_version=_text(tls.get("version")) or None,
            pii=pii,
            attributes=self._attributes((k, entry[k]) for k in entry.keys() - KNOWN_KEYS),
        )

    def _record(self, e: KongEntry, extras: dict[str, Any], low: int, high: int) -> EventRecord:
        """`parse_entry` on a decoded struct, as a field dict; _Miss (or ParseError) whenever
        the reference might answer otherwise. Kept step for step beside `parse_entry`, with the
        common cases of its helpers inlined (this runs for every entry the collector takes)."""
        request = e.request
        response = e.response
        latencies = e.latencies or {}
        headers = request.headers or {}
        method = request.method
        client_ip = e.client_ip
        uri = request.uri or request.url
        if not method or not client_ip or uri is None or len(extras) > MAX_ATTRIBUTES:
            raise _Miss
        raw_path = _path_of(uri)
        path, path_pii, route = self._paths.get(raw_path) or self._path(raw_path)
        pii = list(path_pii)
        querystring = request.querystring
        if querystring:
            query, query_pii, query_secret = self._query(querystring, _clean_text, self._mask)
            pii.extend(k for k in query_pii if k not in pii)
        else:
            query, query_secret = {}, None

        response_headers = response.headers or {}
        consumer = e.consumer or {}
        entity = e.authenticated_entity or {}
        service = e.service or {}
        tls = request.tls or {}
        proxy_latency = latencies.get("proxy")
        started_at = e.started_at
        node = e.node if isinstance(e.node, str) else None
        custom_credential_id = e.credential_id if isinstance(e.credential_id, str) else None
        upstream_status = e.upstream_status
        # The plausibility checks of `parse_entry`: anything outside them is the reference's
        # to reject (with its reason).
        ts_ms = _int(started_at, "started_at") if started_at is not None else None
        status = _int(response.status, "response.status")
        request_size = _int(request.size, "request.size", 0)
        response_size = _int(response.size, "response.size", 0)
        latency = _int(latencies.get("request"), "latencies.request", 0)
        kong_latency = _int(latencies.get("kong"), "latencies.kong", 0)
        upstream_latency = (
            None if proxy_latency in (None, -1, "-1") else _int(proxy_latency, "latencies.proxy")
        )
        if (
            not MIN_STATUS <= status <= MAX_STATUS
            or (ts_ms is not None and not low <= ts_ms <= high)
            or request_size < 0
            or response_size < 0
            or latency < 0
            or kong_latency < 0
            or (upstream_latency is not None and upstream_latency < 0)
        ):
            raise _Miss

        kept: dict[str, str] = {}
        for name in KEPT_HEADERS:
            value = headers.get(name)
            if value is not None:  # the struct's header values are strings or lists of them
                kept[name] = (value if type(value) is str else _text(value))[:256]
        if "referer" in kept:
            kept["referer"] = self._mask(kept["referer"].partition("?")[0])[0]
        names = tuple(headers)
        fingerprint = self._fingerprints.get(names) or self._header_fingerprint(headers)
        for name in ("apikey", "x-api-key"):  # `_credential`'s first and commonest answer
            value = headers.get(name)
            key = value if type(value) is str else _text(value)
            if key:
                credential = self.redactor.fingerprint(key)
                break
        else:
            credential = self._credential(
                headers, query_secret, _clean_text(entity.get("id") or custom_credential_id)
            )

        # In GatewayEvent's field order, so an envelope is byte for byte what the model gives.
        return {
            "request_id": request.id  # a str or None in the struct
            or _clean_text(response_headers.get("x-kong-request-id"))
            or None,
            "ts_ms": ts_ms if ts_ms is not None else self._now_ms(),
            "gateway": SOURCE,
            "node": node or None,
            "service": _clean_text(service.get("name") or service.get("id")) or None,
            "consumer": _clean_text(consumer.get("id") or entity.get("consumer_id")) or None,
            "credential": credential,
            "client_ip": client_ip,
            "method": method.upper(),
            "path": path,
            "route": route,
            "query": query,
            "status": status,
            "upstream_status": int(upstream_status)
            if type(upstream_status) is str
            and len(upstream_status) == 3
            and upstream_status.isdigit()
            and upstream_status.isascii()
            else _upstream_status(upstream_status),
            "request_size": request_size,
            "response_size": response_size,
            "latency_ms": float(latency),
            "upstream_latency_ms": None if upstream_latency is None else float(upstream_latency),
            "gateway_latency_ms": float(kong_latency),
            "user_agent": _clean_text(headers.get("user-agent"))[:512],
            "headers": kept,
            "header_fingerprint": fingerprint,
            "tls_version": _clean_text(tls.get("version")) or None,
            "pii": pii,
            "attributes": self._attributes(extras.items()) if extras else {},
        }

    def _path(self, raw_path: str) -> tuple[str, tuple[str, ...], str]:
        """`mask_pii(raw_path)` and the route template of the masked path, one segment at a time.

        No PII pattern spans a "/" and a route template is made segment by segment, so the
        answer for a path is its segments' answers joined. Busy endpoints repeat the same paths
        and the same words between the ids, so short PII-free paths and segments are remembered
        (bounded; nothing holding PII is kept), and an ASCII number too short to be a card is
        neither PII nor anything but `{id}`.
        """
        known = self._paths.get(raw_path)
        if known is not None:
            return known
        segments = self._segments
        templates: list[str] = []
        for seg in raw_path.split("/"):
            answer = segments.get(seg)
            if answer is None:
                if len(seg) < 13 and seg.isdigit() and seg.isascii():
                    templates.append("{id}")  # ids are many: not worth remembering
                    continue
                answer = self._segment(seg)
            if answer[1]:
                return self._path_with_pii(raw_path)
            templates.append(answer[2])
        # Without PII every segment is unchanged: the masked path is the raw one.
        known = (raw_path, (), "/".join(templates))
        if len(raw_path) <= MAX_CACHED_PATH:
            if len(self._paths) >= PATH_CACHE:
                self._paths.clear()
            self._paths[raw_path] = known
        return known

    def _path_with_pii(self, raw_path: str) -> tuple[str, tuple[str, ...], str]:
        parts = [self._segment(seg) for seg in raw_path.split("/")]
        found = {kind for _, kinds, _ in parts for kind in kinds}
        return (
            "/".join(masked for masked, _, _ in parts),
            tuple(kind for kind in PII_ORDER if kind in found),
            "/".join(template for _, _, template in parts),
        )

    def _segment(self, seg: str) -> tuple[str, tuple[str, ...], str]:
        known = self._segments.get(seg)
        if known is not None:
            return known
        if len(seg) < 13 and seg.isdigit() and seg.isascii():
            return seg, (), "{id}"
        masked, kinds = self.redactor.mask_pii(seg)
        known = (masked, tuple(kinds), route_template(masked))
        if not kinds and len(seg) <= MAX_CACHED_SEGMENT:
            if len(self._segments) >= PATH_CACHE:
                self._segments.clear()
            self._segments[seg] = known
        return known

    def _mask(self, text: str) -> tuple[str, list[str]]:
        """`Redactor.mask_pii` through the segment cache (for referers and query values)."""
        masked, kinds, _ = self._path(text)
        return masked, list(kinds)

    def _header_fingerprint(self, headers: dict[str, Any]) -> str:
        """Which headers a client sends (not their values) tells browsers, SDKs and bots apart;
        the same few name sets repeat, so their hashes are cached (bounded)."""
        names = tuple(headers)
        known = self._fingerprints.get(names)
        if known is None:
            known = hashlib.blake2b(",".join(sorted(names)).encode(), digest_size=6).hexdigest()
            if len(self._fingerprints) >= 10_000:
                self._fingerprints.clear()
            self._fingerprints[names] = known
        return known

    def _kept_headers(self, headers: dict[str, Any], mask: Mask | None = None) -> dict[str, str]:
        kept = {h: _text(headers[h])[:256] for h in KEPT_HEADERS if h in headers}
        if "referer" in kept:
            # A referer repeats another page's URL: its query may hold tokens, its path PII.
            mask = mask or self.redactor.mask_pii
            kept["referer"] = mask(kept["referer"].partition("?")[0])[0]
        return kept

    def _query(
        self, raw: Any, text_of: Callable[[Any], str] = _text, mask: Mask | None = None
    ) -> tuple[dict[str, str], list[str], str | None]:
        """Query args with secret values fingerprinted and PII masked; also the first secret."""
        if raw is None:
            return {}, [], None
        if not isinstance(raw, dict):
            raise ParseError("request.querystring: expected an object")
        query: dict[str, str] = {}
        pii: list[str] = []
        secret = None
        for name, value in raw.items():
            text = text_of(value)
            if self.redactor.is_secret_param(name):
                if text and secret is None:
                    secret = text
                query[name] = self.redactor.fingerprint(text) if text else ""
                continue
            text, found = (mask or self.redactor.mask_pii)(text[:1024])
            pii.extend(found)
            query[name] = text
        return query, pii, secret

    def _credential(
        self, headers: dict[str, Any], query_secret: str | None, credential_id: str
    ) -> str | None:
        for name in ("apikey", "x-api-key"):
            value = _text(headers.get(name))
            if value:
                return self.redactor.fingerprint(value)
        if query_secret:
            return self.redactor.fingerprint(query_secret)
        auth = _text(headers.get("authorization"))
        if auth and auth != "REDACTED":
            return self.redactor.fingerprint(auth)
        return (
            self.redactor.fingerprint("kong-credential:" + credential_id) if credential_id else None
        )

    @staticmethod
    def _attributes(fields: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        """Custom (`custom_fields_by_lua`) top-level fields, bounded."""
        out: dict[str, Any] = {}
        for key, value in fields:
            if len(out) >= MAX_ATTRIBUTES:
                break
            if isinstance(value, str):
                out[key] = value[:MAX_ATTRIBUTE_CHARS]
            elif isinstance(value, int | float | bool) or value is None:
                out[key] = value
            else:
                out[key] = orjson.dumps(value).decode()[:MAX_ATTRIBUTE_CHARS]
        return out

    def _redacted_raw(self, entry: Any) -> bytes:
        """The entry as JSON with secret headers and query values removed, for the DLQ."""
        if isinstance(entry, dict):
            entry = dict(entry)
            request = entry.get("request")
            if isinstance(request, dict):
                request = dict(request)
                headers = request.get("headers")
                if isinstance(headers, dict):
                    request["headers"] = {
                        k: ("[redacted]" if k in SECRET_HEADERS else v) for k, v in headers.items()
                    }
                query = request.get("querystring")
                if isinstance(query, dict):
                    request["querystring"] = {
                        k: ("[redacted]" if self.redactor.is_secret_param(k) else v)
                        for k, v in query.items()
                    }
                for key in ("uri", "url"):
                    if isinstance(request.get(key), str):
                        # The query string may hold secrets; the path may hold PII.
                        request[key] = self.redactor.mask_pii(request[key].partition("?")[0])[0]
                entry["request"] = request
            if isinstance(entry.get("upstream_uri"), str):
                entry["upstream_uri"] = entry["upstream_uri"].partition("?")[0]
        try:
            return orjson.dumps(entry)
        except TypeError:
            return repr(entry).encode()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _bounds(self) -> tuple[int, int]:
        return self.window.bounds() if self.window is not None else NO_WINDOW_BOUNDS

    def _reject(self, reason: str, raw: bytes) -> Reject:
        return Reject(source=SOURCE, reason=reason, raw=self.redactor.scrub_raw(raw))
