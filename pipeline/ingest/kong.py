"""Kong's log serializer (http-log, kafka-log, file-log, tcp-log) -> `GatewayEvent`.

Handles every shape Kong 1.x-3.10 produces: one object or an array per body, absent `route`,
`service`, `consumer`, `tries`, `request.id`, `upstream_status`, `source`; `upstream_status` as a
(possibly empty or multi-valued) string; `latencies.proxy == -1` when Kong answered itself; sizes as
strings. Secrets are fingerprinted and PII masked here, so nothing in clear goes further.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from pipeline.events import GatewayEvent, Reject
from pipeline.ingest.normalize import ParseError, as_int, ascii_ints, route_template
from pipeline.ingest.redaction import SECRET_HEADERS, Redactor

__all__ = ["KongParser", "ParseResult"]

SOURCE = "kong"
KEPT_HEADERS = ("accept-language", "referer", "origin", "content-type")
# Top-level serializer keys we map or knowingly drop; anything else came from custom_fields_by_lua.
KNOWN_KEYS = frozenset(
    {
        "request",
        "response",
        "latencies",
        "tries",
        "client_ip",
        "started_at",
        "route",
        "service",
        "consumer",
        "authenticated_entity",
        "upstream_uri",
        "upstream_status",
        "source",
        "workspace",
        "workspace_name",
        "api",
    }
)
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_CHARS = 256


@dataclass
class ParseResult:
    events: list[GatewayEvent] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


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


def _obj(entry: dict[str, Any], key: str, *, required: bool = False) -> dict[str, Any]:
    value = entry.get(key)
    if value is None:
        if required:
            raise ParseError(f"{key}: missing")
        return {}
    if not isinstance(value, dict):
        raise ParseError(f"{key}: expected an object, got {type(value).__name__}")
    return value


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

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._fingerprints: dict[tuple[str, ...], str] = {}

    def parse_body(self, body: bytes) -> ParseResult:
        result = ParseResult()
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            result.rejects.append(self._reject(f"malformed JSON: {exc}", body))
            return result
        entries = doc if isinstance(doc, list) else [doc]
        for entry in entries:
            self._parse_into(entry, result)
        return result

    def parse_payload(
        self, payload: bytes, *, host: str | None = None, ts_ms: int | None = None
    ) -> ParseResult:
        """One tcp-log line, as the line receiver hands it over (Kong puts no envelope around
        it, so `host` and `ts_ms` have nothing to add)."""
        return self.parse_body(payload)

    def scrub_raw(self, raw: bytes) -> bytes:
        return self.redactor.scrub_raw(raw)

    def _parse_into(self, entry: Any, result: ParseResult) -> None:
        try:
            if not isinstance(entry, dict):
                raise ParseError(f"entry: expected an object, got {type(entry).__name__}")
            result.events.append(self.parse_entry(entry))
        except ParseError as exc:
            result.rejects.append(self._reject(str(exc), self._redacted_raw(entry)))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            result.rejects.append(self._reject(f"{where}: {err['msg']}", self._redacted_raw(entry)))

    def parse_entry(self, entry: dict[str, Any]) -> GatewayEvent:
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
        if "://" in uri:
            uri = "/" + uri.split("://", 1)[1].partition("/")[2]
        raw_path = uri.partition("?")[0] or "/"
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
            ts_ms=as_int(started_at, "started_at") if started_at is not None else _now_ms(),
            gateway=SOURCE,
            node=_text(entry.get("node")) or None,
            service=_text(service.get("name") or service.get("id")) or None,
            consumer=_text(consumer.get("id") or entity.get("consumer_id")) or None,
            credential=self._credential(headers, query_secret, entity, entry.get("credential_id")),
            client_ip=client_ip,
            method=method.upper(),
            path=path,
            route=route_template(path),
            query=query,
            status=as_int(response.get("status"), "response.status"),
            upstream_status=_upstream_status(entry.get("upstream_status")),
            request_size=as_int(request.get("size"), "request.size", default=0),
            response_size=as_int(response.get("size"), "response.size", default=0),
            latency_ms=float(as_int(latencies.get("request"), "latencies.request", default=0)),
            upstream_latency_ms=None
            if proxy_latency in (None, -1, "-1")
            else float(as_int(proxy_latency, "latencies.proxy")),
            gateway_latency_ms=float(as_int(latencies.get("kong"), "latencies.kong", default=0)),
            user_agent=_text(headers.get("user-agent"))[:512],
            headers=self._kept_headers(headers),
            header_fingerprint=self._header_fingerprint(headers),
            tls_version=_text(tls.get("version")) or None,
            pii=pii,
            attributes=self._attributes(entry),
        )

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

    def _kept_headers(self, headers: dict[str, Any]) -> dict[str, str]:
        kept = {h: _text(headers[h])[:256] for h in KEPT_HEADERS if h in headers}
        if "referer" in kept:
            # A referer repeats another page's URL: its query may hold tokens, its path PII.
            kept["referer"] = self.redactor.mask_pii(kept["referer"].partition("?")[0])[0]
        return kept

    def _query(self, raw: Any) -> tuple[dict[str, str], list[str], str | None]:
        """Query args with secret values fingerprinted and PII masked; also the first secret."""
        if raw is None:
            return {}, [], None
        if not isinstance(raw, dict):
            raise ParseError("request.querystring: expected an object")
        query: dict[str, str] = {}
        pii: list[str] = []
        secret = None
        for name, value in raw.items():
            text = _text(value)
            if self.redactor.is_secret_param(name):
                if text and secret is None:
                    secret = text
                query[name] = self.redactor.fingerprint(text) if text else ""
                continue
            text, found = self.redactor.mask_pii(text[:1024])
            pii.extend(found)
            query[name] = text
        return query, pii, secret

    def _credential(
        self,
        headers: dict[str, Any],
        query_secret: str | None,
        entity: dict[str, Any],
        custom_credential_id: Any,
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
        # Kong's authenticated_entity is the credential row itself: stable per credential.
        # Kong's authenticated_entity is the credential row itself (our example config also adds
        # it as the custom field credential_id): stable per credential, whatever Kong redacted.
        credential_id = _text(entity.get("id") or custom_credential_id)
        return (
            self.redactor.fingerprint("kong-credential:" + credential_id) if credential_id else None
        )

    @staticmethod
    def _attributes(entry: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in entry.keys() - KNOWN_KEYS:
            if len(out) >= MAX_ATTRIBUTES:
                break
            value = entry[key]
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

    def _reject(self, reason: str, raw: bytes) -> Reject:
        return Reject(source=SOURCE, reason=reason, raw=self.redactor.scrub_raw(raw))


def _now_ms() -> int:
    return int(time.time() * 1000)
