"""Apigee MessageLogging payloads -> `GatewayEvent`.

The payload is the JSON our MessageLogging template renders (`apigee-messagelogging/`): its keys are
the Apigee flow-variable names themselves (`"request.verb": "GET"`), every value is a string (the
template quotes them all, so numbers arrive as `"200"`), and a variable that is unset in the flow
renders as `""`. Keys we do not map are kept, bounded, as `attributes`.

Nothing in clear goes further than this module: `client_id` is Apigee's consumer key (a credential),
so it is only ever fingerprinted; `developer.email` is PII and is fingerprinted too; query secrets
and secret headers are fingerprinted and PII in the path, query and kept values is masked.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from typing import Any
from urllib.parse import parse_qsl

import orjson
from pydantic import ValidationError

from pipeline.events import GatewayEvent, Reject
from pipeline.ingest.kong import ParseResult
from pipeline.ingest.normalize import (
    NO_WINDOW_BOUNDS,
    ParseError,
    TimeWindow,
    as_int,
    check_status,
    check_timestamp,
    route_template,
)
from pipeline.ingest.redaction import SECRET_HEADERS, Redactor

__all__ = ["SOURCE", "ApigeeParser"]

SOURCE = "apigee"
HEADER_PREFIX = "request.header."
KEPT_HEADERS = ("accept-language", "referer", "origin", "content-type")
RESPONSE_LENGTH = "response.header.content-length"
# Header variables that became event fields (matched lower-cased: Apigee header names are not
# case-sensitive, and the template author chose the spelling).
FIELD_HEADERS = frozenset(
    [HEADER_PREFIX + h for h in (*KEPT_HEADERS, "user-agent", "content-length")] + [RESPONSE_LENGTH]
)
# Variables mapped onto GatewayEvent fields (or deliberately dropped: the raw query string and URI
# would carry secrets the parsed `query` has fingerprinted).
MAPPED = frozenset(
    {
        "client.ip",
        "proxy.client.ip",
        "request.verb",
        "request.path",
        "request.uri",
        "request.querystring",
        "request.headers.names",
        "message.status.code",
        "response.status.code",
        "developer.app.name",
        "client_id",
        "apiproxy.name",
        "messageid",
        "system.timestamp",
        "system.uuid",
        "client.received.start.timestamp",
        "client.sent.end.timestamp",
        "target.sent.start.timestamp",
        "target.received.end.timestamp",
    }
)
# Kept as attributes ahead of anything else, so the bound never pushes them out.
CONTEXT = (
    "apiproduct.name",
    "environment.name",
    "organization.name",
    "apiproxy.revision",
    "developer.email",
    "proxy.basepath",
    "proxy.pathsuffix",
    "target.url",
    "fault.name",
    "error.state",
)
# Values that identify a person or are a credential: only their keyed fingerprint is kept.
FINGERPRINTED = frozenset({"developer.email", "client.email.address"})
_SECRET_WORD = re.compile(r"secret|password|passwd|token|apikey|api[_-]key|credential|cookie")
# An HTTP method is an RFC 9110 token.
_METHOD = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$")
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_CHARS = 256
MAX_KEY_CHARS = 128
MAX_QUERY_CHARS = 4096
MAX_QUERY_PARAMS = 100
MAX_PATH_CHARS = 2048
# A DLQ record of an unparseable payload still must not leak the obvious secrets or the email.
_RAW_SECRET = re.compile(
    rb'("(?:client_id|developer\.email|request\.querystring|request\.uri|target\.url|'
    rb"request\.header\.(?:authorization|proxy-authorization|cookie|apikey|x-api-key)|"
    rb'[^"]*(?:secret|password|token)[^"]*)"\s*:\s*)"(?:[^"\\]|\\.)*"',
    re.IGNORECASE,
)


def _text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return ""
    return value if isinstance(value, str) else str(value)


def _ip(value: Any) -> str | None:
    """The address in `value` in canonical form, or None. X-Forwarded-For style lists give their
    first entry (the client as the first proxy saw it)."""
    text = _text(value).split(",", 1)[0].strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _ms(record: dict[str, Any], key: str) -> int | None:
    """An epoch-ms timestamp variable; None when unset (`""`), a ParseError when not a number."""
    value = record.get(key)
    if value is None or value == "":
        return None
    ms = as_int(value, key)
    if ms <= 0:
        raise ParseError(f"{key}: expected a positive epoch-millisecond timestamp")
    return ms


def _header_names(value: Any) -> list[str]:
    """`request.headers.names` renders as a Java collection: `[Host, Accept, User-Agent]`."""
    text = _text(value).strip().removeprefix("[").removesuffix("]")
    return sorted({n.strip().lower() for n in text.split(",") if n.strip()})


def _numeric(key: str) -> bool:
    """Timestamps and codes: a 13-digit epoch-ms timestamp can pass the Luhn check, and must not
    be masked as a card number."""
    return key.endswith((".timestamp", ".code", ".revision"))


def _url_like(text: str) -> bool:
    return "?" in text and ("://" in text or text.startswith("/"))


def _secretish(key: str) -> bool:
    last = key.rsplit(".", 1)[-1].lower()
    return (
        key in FINGERPRINTED
        or last in SECRET_HEADERS
        or Redactor.is_secret_param(last)
        or _SECRET_WORD.search(key.lower()) is not None
    )


class ApigeeParser:
    """Parses one MessageLogging payload (a JSON object, or an array of them) into events.

    Parameters
    ----------
    redactor
        Fingerprints secrets and masks PII (the same key as the Kong side, so one API key has one
        fingerprint whichever gateway saw it).

    Examples
    --------
    >>> parser = ApigeeParser(Redactor(b"k"))
    >>> result = parser.parse_payload(
    ...     b'{"client.ip":"198.51.100.7","request.verb":"GET","request.path":"/v1/orders/42",'
    ...     b'"message.status.code":"200","developer.app.name":"shop-app","client_id":"secret-key",'
    ...     b'"client.received.start.timestamp":"1700000000000"}'
    ... )
    >>> event = result.events[0]
    >>> (event.consumer, event.route, event.status, event.credential.startswith("hmac:"))
    ('shop-app', '/v1/orders/{id}', 200, True)
    >>> parser.parse_payload(b'{"request.verb":"GET"}').rejects[0].reason
    'client.ip: missing'
    """

    source = SOURCE

    def __init__(self, redactor: Redactor, *, window: TimeWindow | None = None) -> None:
        self.redactor = redactor
        # How far an entry's timestamp may be from now (live ingest; none for old logs).
        self.window = window

    def parse_payload(
        self, payload: bytes, *, host: str | None = None, ts_ms: int | None = None
    ) -> ParseResult:
        """`host` and `ts_ms` come from the syslog header, when there was one: the node that
        logged, and a timestamp to fall back on when the payload has none."""
        result = ParseResult()
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            reason = "payload: empty" if not payload.strip() else f"payload: malformed JSON ({exc})"
            result.rejects.append(self._reject(reason, self.scrub_raw(payload)))
            return result
        bounds = self.window.bounds() if self.window is not None else NO_WINDOW_BOUNDS
        for record in doc if isinstance(doc, list) else [doc]:
            self._parse_into(record, result, host, ts_ms, bounds)
        return result

    # The HTTP collector calls every parser's body entry point by this name.
    def parse_body(self, body: bytes) -> ParseResult:
        return self.parse_payload(body)

    def _parse_into(
        self,
        record: Any,
        result: ParseResult,
        host: str | None,
        ts_ms: int | None,
        bounds: tuple[int, int],
    ) -> None:
        try:
            if not isinstance(record, dict):
                raise ParseError(f"payload: expected an object, got {type(record).__name__}")
            result.events.append(self.parse_record(record, host=host, ts_ms=ts_ms, bounds=bounds))
        except ParseError as exc:
            result.rejects.append(self._reject(str(exc), self._redacted_raw(record)))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            result.rejects.append(
                self._reject(f"{where}: {err['msg']}", self._redacted_raw(record))
            )

    def parse_record(
        self,
        record: dict[str, Any],
        *,
        host: str | None = None,
        ts_ms: int | None = None,
        bounds: tuple[int, int] | None = None,
    ) -> GatewayEvent:
        for key in ("client.ip", "request.verb", "request.path", "message.status.code"):
            value = record.get(key)
            if value is not None and not isinstance(value, str | int | float):
                raise ParseError(f"{key}: expected a string, got {type(value).__name__}")
        client_ip = _ip(record.get("client.ip")) or _ip(record.get("proxy.client.ip"))
        if client_ip is None:
            raw_ip = _text(record.get("client.ip"))
            raise ParseError("client.ip: " + ("not an IP address" if raw_ip else "missing"))
        method = _text(record.get("request.verb")).strip()
        if not method:
            raise ParseError("request.verb: missing")
        if not _METHOD.match(method):
            raise ParseError("request.verb: not an HTTP method")

        uri = _text(record.get("request.uri"))
        raw_path = _text(record.get("request.path")) or uri.partition("?")[0] or "/"
        path, pii = self.redactor.mask_pii(raw_path.partition("?")[0][:MAX_PATH_CHARS])
        querystring = _text(record.get("request.querystring")) or uri.partition("?")[2]
        headers = {
            key[len(HEADER_PREFIX) :].lower(): _text(value)
            for key, value in record.items()
            if key[: len(HEADER_PREFIX)].lower() == HEADER_PREFIX
        }
        query, query_pii, query_secret = self._query(querystring)
        pii.extend(k for k in query_pii if k not in pii)

        status = self._status(record)
        started = _ms(record, "client.received.start.timestamp")
        logged = _ms(record, "system.timestamp")
        ended = _ms(record, "client.sent.end.timestamp") or logged
        target_sent = _ms(record, "target.sent.start.timestamp")
        target_received = _ms(record, "target.received.end.timestamp")
        if started and ended and ended < started:
            raise ParseError("client.sent.end.timestamp: before client.received.start.timestamp")
        if target_sent and target_received and target_received < target_sent:
            raise ParseError("target.received.end.timestamp: before target.sent.start.timestamp")
        latency = ended - started if started and ended else 0
        # No target timestamps: Apigee answered itself (RaiseFault, cache hit, quota).
        upstream = float(target_received - target_sent) if target_sent and target_received else None
        if bounds is None:
            bounds = self.window.bounds() if self.window is not None else NO_WINDOW_BOUNDS
        timestamp = started or logged or ts_ms
        when = (
            "client.received.start.timestamp"
            if started
            else ("system.timestamp" if logged else "syslog.timestamp")
        )
        names = _header_names(record.get("request.headers.names"))

        return GatewayEvent(
            request_id=_text(record.get("messageid"))[:128] or None,
            ts_ms=check_timestamp(timestamp, when, self.window, bounds)
            if timestamp
            else int(time.time() * 1000),
            gateway=SOURCE,
            node=(_text(record.get("system.uuid")) or host or "")[:255] or None,
            service=_text(record.get("apiproxy.name"))[:255] or None,
            consumer=self._consumer(record),
            credential=self._credential(record, headers, query_secret),
            client_ip=client_ip,
            method=method.upper(),
            path=path,
            route=route_template(path),
            query=query,
            status=status,
            request_size=self._size(headers.get("content-length")),
            response_size=self._size(
                next((v for k, v in record.items() if k.lower() == RESPONSE_LENGTH), None)
            ),
            latency_ms=float(latency),
            upstream_latency_ms=upstream,
            gateway_latency_ms=float(max(0.0, latency - (upstream or 0.0))),
            user_agent=headers.get("user-agent", "")[:512],
            headers=self._kept_headers(headers),
            header_fingerprint=hashlib.blake2b(",".join(names).encode(), digest_size=6).hexdigest()
            if names
            else "",
            pii=pii,
            attributes=self._attributes(record),
        )

    @staticmethod
    def _status(record: dict[str, Any]) -> int:
        # message.status.code is what the client got, also after a fault; response.status.code is
        # unset when the error flow answered before any response existed.
        for key in ("message.status.code", "response.status.code"):
            if record.get(key) not in (None, ""):
                return check_status(as_int(record[key], key), key)
        raise ParseError("message.status.code: missing")

    @staticmethod
    def _size(value: Any) -> int:
        """A Content-Length header: client-controlled, so a bogus one is 0, never a reject (an
        attacker must not be able to hide a request from the detectors with a bad header)."""
        try:
            return max(0, as_int(value, "content-length", default=0))
        except ParseError:
            return 0

    def _consumer(self, record: dict[str, Any]) -> str | None:
        app = _text(record.get("developer.app.name")).strip()
        if app:
            return app[:255]
        # Without an app name the consumer key is the only identity, and it is a credential.
        client_id = _text(record.get("client_id")).strip()
        return self.redactor.fingerprint(client_id) if client_id else None

    def _credential(
        self, record: dict[str, Any], headers: dict[str, str], query_secret: str | None
    ) -> str | None:
        # Apigee sets client_id once VerifyAPIKey/OAuthV2 succeeded: the verified key comes first.
        for value in (
            _text(record.get("client_id")).strip(),
            headers.get("x-api-key", "").strip(),
            headers.get("apikey", "").strip(),
            query_secret,
            headers.get("authorization", "").strip(),
        ):
            if value:
                return self.redactor.fingerprint(value)
        return None

    def _query(self, raw: str) -> tuple[dict[str, str], list[str], str | None]:
        """Query args with secret values fingerprinted and PII masked; also the first secret."""
        query: dict[str, str] = {}
        pii: list[str] = []
        secret = None
        pairs = parse_qsl(raw[:MAX_QUERY_CHARS], keep_blank_values=True, errors="replace")
        for name, value in pairs:
            # Repeated args: the first one stands for them, as on the Kong side.
            if name in query or len(query) >= MAX_QUERY_PARAMS:
                continue
            if self.redactor.is_secret_param(name):
                if value and secret is None:
                    secret = value
                query[name[:128]] = self.redactor.fingerprint(value) if value else ""
                continue
            masked_name, found_in_name = self.redactor.mask_pii(name[:128])
            masked, found = self.redactor.mask_pii(value[:1024])
            pii.extend(found_in_name + found)
            query[masked_name] = masked
        return query, pii, secret

    def _kept_headers(self, headers: dict[str, str]) -> dict[str, str]:
        kept = {h: headers[h][:256] for h in KEPT_HEADERS if headers.get(h)}
        if "referer" in kept:
            # A referer repeats another page's URL: its query may hold tokens, its path PII.
            kept["referer"] = self.redactor.mask_pii(kept["referer"].partition("?")[0])[0]
        return kept

    def _attributes(self, record: dict[str, Any]) -> dict[str, Any]:
        keys = [k for k in CONTEXT if k in record]
        keys += [k for k in record if k not in MAPPED and k not in CONTEXT]
        out: dict[str, Any] = {}
        for key in keys:
            if len(out) >= MAX_ATTRIBUTES:
                break
            lowered = key.lower()
            if lowered in FIELD_HEADERS:
                continue  # already an event field
            value = record[key]
            if value == "" or value is None:
                continue  # an unset flow variable says nothing
            name = self.redactor.mask_pii(key[:MAX_KEY_CHARS])[0]
            if isinstance(value, bool | int | float):
                out[name] = value
                continue
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            if _secretish(key):
                out[name] = self.redactor.fingerprint(text)
            elif _numeric(key):
                out[name] = text[:MAX_ATTRIBUTE_CHARS]
            else:
                # A URL's query string may hold tokens (dropped here); PII anywhere is masked.
                text = text.partition("?")[0] if _url_like(text) else text
                out[name] = self.redactor.mask_pii(text[: MAX_ATTRIBUTE_CHARS * 4])[0][
                    :MAX_ATTRIBUTE_CHARS
                ]
        return out

    def _redacted_raw(self, record: Any) -> bytes:
        """The record as JSON with secrets and PII removed, for the DLQ."""
        if isinstance(record, dict):
            clean: dict[str, Any] = {}
            for key, value in record.items():
                name = self.redactor.mask_pii(str(key))[0]
                if key == "request.querystring":
                    clean[name] = self._redacted_query(_text(value))
                elif _secretish(key) or key == "client_id":
                    clean[name] = "[redacted]"
                elif isinstance(value, str) and not _numeric(key):
                    clean[name] = self._redacted_text(value)
                elif isinstance(value, dict | list):
                    # Nested values are not what the template writes: keep them as scrubbed text.
                    nested = self.scrub_raw(orjson.dumps(value))
                    clean[name] = nested.decode("utf-8", "replace")
                else:
                    clean[name] = value
            record = clean
        try:
            return orjson.dumps(record)
        except TypeError:
            return self.scrub_raw(repr(record).encode())

    def _redacted_text(self, text: str) -> str:
        """PII masked; a URL keeps its query names, with secret values redacted."""
        if _url_like(text):
            path, _, query = text.partition("?")
            return self.redactor.mask_pii(path)[0] + "?" + self._redacted_query(query)
        return self.redactor.mask_pii(text)[0]

    def _redacted_query(self, raw: str) -> str:
        pairs = parse_qsl(raw[:MAX_QUERY_CHARS], keep_blank_values=True, errors="replace")
        text = "&".join(
            f"{name}={'[redacted]' if self.redactor.is_secret_param(name) else value}"
            for name, value in pairs
        )
        return self.redactor.mask_pii(text)[0]

    def scrub_raw(self, raw: bytes) -> bytes:
        """Best-effort removal of secrets and PII from bytes that could not be parsed.

        >>> ApigeeParser(Redactor(b"k")).scrub_raw(b'{"client_id":"abc","x":"bob@example.com"}')
        b'{"client_id":"[redacted]","x":"[email]"}'
        """
        scrubbed = self.redactor.scrub_raw(_RAW_SECRET.sub(rb'\1"[redacted]"', raw))
        # latin-1 maps every byte to one code point and back: bytes PII masking leaves alone stay
        # exactly as they were, whatever the encoding.
        return self.redactor.mask_pii(scrubbed.decode("latin-1"))[0].encode("latin-1")

    def _reject(self, reason: str, raw: bytes) -> Reject:
        return Reject(source=SOURCE, reason=reason, raw=raw)
