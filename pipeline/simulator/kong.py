"""The simulated Kong gateway: what Kong decides for a request and the log entry it writes.

Kong's part comes first, as in a real proxy: route matching (no route: Kong's own 404), key-auth
(no or unknown key: 401), ACL (403), rate limiting per consumer and minute (429). Those answers
have `source: kong`, `latencies.proxy: -1`, no tries and no upstream status. Everything else reaches
the upstream, whose status is what the caller decided (a login that failed) or drawn from the
endpoint's background error rates; an incident window can turn a service's answers into 503s
and gateway timeouts.

Entries have the shape of Kong 3.9's log serializer (`kong.log.serialize`), as http-log POSTs it.
The route, service and consumer objects of an entry are shared between entries: copy an entry
before changing anything nested in it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from pipeline.simulator.catalogue import HOST, WORKSPACE_ID, Catalogue, Endpoint, Route

__all__ = ["Consumer", "Incident", "KongGateway", "Query"]

# (name, value) pairs in order; a value of None is a bare flag (`?preview`). Or a raw query
# string exactly as the client sent it (attack payloads keep their own encoding).
Query = list[tuple[str, str | None]] | str | None

KONG_VERSION = "3.9.1"
PORT = 8443
_UPSTREAM_HEADERS_BYTES = 260
_KONG_HEADERS_BYTES = 230
_ENCODED_CACHE_MAX = 100_000
_HEADER_CACHE_MAX = 100_000
_HOST_BYTES = len("host") + len(HOST) + 4
_TABLE = 2048


def _lognormal_table(sigma: float) -> tuple[float, ...]:
    """Quantiles of a lognormal(0, sigma): drawing one by index is ~10x cheaper than
    `random.lognormvariate`, and 2048 levels are plenty for latencies and sizes."""
    nd = NormalDist(0.0, sigma)
    return tuple(math.exp(nd.inv_cdf((i + 0.5) / _TABLE)) for i in range(_TABLE))


LATENCY_SPREAD = _lognormal_table(0.45)
SIZE_SPREAD = _lognormal_table(0.5)


@dataclass(eq=False)
class Consumer:
    """A Kong consumer with one key-auth credential. `groups` feed the ACL plugin."""

    id: str
    username: str
    key: str
    credential_id: str
    groups: frozenset[str] = frozenset()
    limit_per_min: int = 1200
    email: str = ""
    kong: dict[str, Any] = field(init=False, repr=False)
    window: int = field(default=-1, repr=False)
    count: int = field(default=0, repr=False)
    limit_text: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.limit_text = str(self.limit_per_min)
        self.kong = {
            "id": self.id,
            "username": self.username,
            "custom_id": None,
            "created_at": 1_690_000_000,
            "updated_at": 1_690_000_000,
            "tags": None,
            "ws_id": WORKSPACE_ID,
        }


@dataclass(frozen=True, slots=True)
class Incident:
    """An upstream outage: `share` of a service's requests fail between start and end."""

    service: str
    start_ms: int
    end_ms: int
    share: float = 0.35


def _kong_body(message: str) -> int:
    return len(message) + 68  # {"message":"...","request_id":"<32 hex>"}


NO_ROUTE = "no Route matched with those values"
NO_KEY = "No API key found in request"
BAD_KEY = "Unauthorized"
ACL_DENIED = "You cannot consume this service"
RATE_LIMITED = "API rate limit exceeded"


class KongGateway:
    """Turns a client's request into the Kong log entry, deciding what Kong and the upstream
    answer.

    Parameters
    ----------
    catalogue
        Routes and endpoints.
    incidents
        Upstream outages to play.

    Examples
    --------
    >>> from pipeline.simulator.catalogue import CATALOGUE
    >>> gw = KongGateway(CATALOGUE)
    >>> rng = random.Random(1)
    >>> ua = {"user-agent": "x"}
    >>> e = gw.handle(rng, 1_700_000_000_000, "203.0.113.7", "GET", "/.env", None, ua)
    >>> (e["response"]["status"], e["source"], e["latencies"]["proxy"], "route" in e)
    (404, 'kong', -1, False)
    >>> e = gw.handle(rng, 1_700_000_000_001, "203.0.113.7", "GET", "/v1/search",
    ...               [("q", "red shoes"), ("page", "2")], ua)
    >>> (e["request"]["uri"], e["request"]["querystring"], e["source"])
    ('/v1/search?q=red+shoes&page=2', {'q': 'red shoes', 'page': '2'}, 'upstream')
    """

    def __init__(self, catalogue: Catalogue, incidents: tuple[Incident, ...] = ()) -> None:
        self.catalogue = catalogue
        self.incidents = incidents
        self.keys: dict[str, Consumer] = {}
        self._encoded: dict[str, str] = {}
        self._header_bytes: dict[int, tuple[dict[str, str], int]] = {}

    def register(self, consumer: Consumer) -> None:
        if consumer.key in self.keys:
            raise ValueError(f"duplicate API key for {consumer.username}")
        self.keys[consumer.key] = consumer

    # --- query strings -------------------------------------------------------------------
    def _enc(self, text: str) -> str:
        known = self._encoded.get(text)
        if known is None:
            known = quote_plus(text, safe="")
            if len(self._encoded) >= _ENCODED_CACHE_MAX:
                self._encoded.clear()
            self._encoded[text] = known
        return known

    def _query(self, query: Query) -> tuple[str, dict[str, Any]]:
        """The raw query string and Kong's `querystring` table: repeated names become arrays
        and a bare name `true`, as `ngx.req.get_uri_args` gives them."""
        if not query:
            return "", {}
        table: dict[str, Any] = {}
        raw: str
        if isinstance(query, str):
            raw = query
            pairs: list[tuple[str, str | None]] = []
            for part in raw.split("&"):
                if not part:
                    continue
                key, eq, text = part.partition("=")
                pairs.append((unquote_plus(key), unquote_plus(text) if eq else None))
        else:
            pairs = query
            raw = "&".join(
                self._enc(n) if v is None else f"{self._enc(n)}={self._enc(v)}" for n, v in pairs
            )
        for name, value in pairs:
            item: Any = True if value is None else value
            if name in table:
                prev = table[name]
                if isinstance(prev, list):
                    prev.append(item)
                else:
                    table[name] = [prev, item]
            else:
                table[name] = item
        return raw, table

    def _client_bytes(self, client: dict[str, str]) -> int:
        """Header bytes of a client's long-lived header dict, counted once per dict (the cache
        holds the dict itself, so its id cannot be reused while cached)."""
        known = self._header_bytes.get(id(client))
        if known is None or known[0] is not client:
            if len(self._header_bytes) >= _HEADER_CACHE_MAX:
                self._header_bytes.clear()
            known = self._header_bytes[id(client)] = (client, _headers_size(client))
        return known[1]

    # --- the request ---------------------------------------------------------------------
    def handle(
        self,
        rng: random.Random,
        ts_ms: int,
        ip: str,
        method: str,
        path: str,
        query: Query,
        headers: dict[str, Any],
        *,
        extra: dict[str, Any] | None = None,
        endpoint: Endpoint | None = None,
        status: int | None = None,
        body: int = 0,
        tls: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One request's log entry. `status` is the upstream's answer when the caller knows it
        (a failed login); Kong's own checks still come first."""
        raw_query, table = self._query(query)
        uri = f"{path}?{raw_query}" if raw_query else path
        # The headers Kong saw: the client's, a few per request, the load balancer's. Their size
        # is the client's (counted once per client) plus what is added, unless something added
        # replaced a header of the client's.
        req_headers = {"host": HOST, **headers}
        added = _HOST_BYTES
        exact = "host" not in headers
        if extra:
            req_headers.update(extra)
            for name, value in extra.items():
                added += len(name) + len(value) + 4
                if name in headers:
                    exact = False
        if body:
            length = str(body)
            req_headers["content-length"] = length
            added += 18 + len(length)
            if "content-type" not in req_headers:
                req_headers["content-type"] = "application/json"
                added += 32
            exact = exact and "content-length" not in headers
        req_headers["x-forwarded-for"] = ip
        req_headers["x-forwarded-proto"] = "https"
        added += 45 + len(ip)
        if exact and "x-forwarded-for" not in headers and "x-forwarded-proto" not in headers:
            request_size = len(method) + len(uri) + 14 + self._client_bytes(headers) + added + body
        else:
            request_size = _request_size(method, uri, req_headers) + body
        request_id = f"{rng.getrandbits(128):032x}"

        route = endpoint.route if endpoint is not None else self.catalogue.route_for(path)
        consumer = None
        kong_status = 0
        message = ""
        if route is None:
            kong_status, message = 404, NO_ROUTE
        elif route.key_auth:
            key = req_headers.get("apikey")
            consumer = self.keys.get(key) if key else None
            if consumer is None:
                kong_status, message = 401, (BAD_KEY if key else NO_KEY)
            elif route.acl_group and route.acl_group not in consumer.groups:
                kong_status, message = 403, ACL_DENIED
            elif route.rate_limited:
                minute = ts_ms // 60_000
                if consumer.window != minute:
                    consumer.window, consumer.count = minute, 0
                consumer.count += 1
                if consumer.count > consumer.limit_per_min:
                    kong_status, message = 429, RATE_LIMITED

        random_ = rng.random
        kong_ms = int(random_() * 3)
        entry: dict[str, Any]
        if kong_status:
            size = _kong_body(message)
            resp_headers = {
                "content-type": "application/json; charset=utf-8",
                "content-length": str(size),
                "x-kong-response-latency": str(kong_ms),
                "server": f"kong/{KONG_VERSION}",
                "x-kong-request-id": request_id,
            }
            if kong_status == 401:
                resp_headers["www-authenticate"] = 'Key realm="kong"'
            elif kong_status == 429:
                reset = 60 - (ts_ms // 1000) % 60
                resp_headers |= {
                    "retry-after": str(reset),
                    "ratelimit-limit": consumer.limit_text if consumer else "0",
                    "ratelimit-remaining": "0",
                    "ratelimit-reset": str(reset),
                }
            entry = {
                "source": "kong",
                "upstream_status": "",
                "upstream_uri": "",
                "tries": [],
                "latencies": {"kong": kong_ms, "proxy": -1, "request": kong_ms, "receive": 0},
                "response": {
                    "status": kong_status,
                    "size": size + _KONG_HEADERS_BYTES,
                    "headers": resp_headers,
                },
            }
        else:
            assert route is not None
            entry = self._upstream(
                random_, ts_ms, route, endpoint, method, path, uri, status, kong_ms, request_id
            )
            if consumer is not None and route.rate_limited:
                remaining = str(max(0, consumer.limit_per_min - consumer.count))
                limit = consumer.limit_text
                h = entry["response"]["headers"]
                h["x-ratelimit-limit-minute"] = limit
                h["x-ratelimit-remaining-minute"] = remaining
                h["ratelimit-limit"] = limit
                h["ratelimit-remaining"] = remaining
                h["ratelimit-reset"] = str(60 - (ts_ms // 1000) % 60)

        entry["request"] = {
            "id": request_id,
            "uri": uri,
            "url": f"https://{HOST}:{PORT}{uri}",
            "querystring": table,
            "method": method,
            "headers": req_headers,
            "size": request_size,
            "tls": tls or _TLS,
        }
        entry["client_ip"] = ip
        entry["started_at"] = ts_ms
        entry["workspace"] = WORKSPACE_ID
        entry["workspace_name"] = "default"
        if route is not None:
            entry["route"] = route.kong_route
            entry["service"] = route.kong_service
        if consumer is not None:
            entry["consumer"] = consumer.kong
            entry["authenticated_entity"] = {"id": consumer.credential_id}
        return entry

    def _upstream(
        self,
        random_: Callable[[], float],
        ts_ms: int,
        route: Route,
        endpoint: Endpoint | None,
        method: str,
        path: str,
        uri: str,
        status: int | None,
        kong_ms: int,
        request_id: str,
    ) -> dict[str, Any]:
        if endpoint is None:
            endpoint, path_known = self.catalogue.match(route, method, path)
            if endpoint is None:
                status = 405 if path_known else 404
        if status is None:
            assert endpoint is not None
            status = endpoint.ok
            if endpoint.errors:
                r = random_()
                for code, p in endpoint.errors:
                    if r < p:
                        status = code
                        break
                    r -= p
        scale = endpoint.latency_scale if endpoint is not None else 0.6
        spread = LATENCY_SPREAD[int(random_() * _TABLE)]
        upstream_ms = max(1, int(route.latency_ms * scale * spread))
        timed_out = False
        for incident in self.incidents:
            if (
                incident.start_ms <= ts_ms < incident.end_ms
                and incident.service == route.service
                and random_() < incident.share
            ):
                if random_() < 0.3:
                    timed_out = True
                    status = 504
                else:
                    status = 503
                    upstream_ms = 1 + int(random_() * 15)
                break
        if status >= 400 or endpoint is None:
            size = 60 + int(random_() * 180)
        elif endpoint.size == 0 or status == 204:
            size = 0
        else:
            size = int(endpoint.size * SIZE_SPREAD[int(random_() * _TABLE)])
        ips = route.upstream_ips
        upstream_ip = ips[int(random_() * len(ips))]
        if timed_out:
            proxy_ms = -1
            total = route.kong_service["read_timeout"] + kong_ms
            source = "kong"
        else:
            proxy_ms = upstream_ms
            total = kong_ms + upstream_ms + int(random_() * 4)
            source = "upstream"
        headers = {
            "content-type": "application/json",
            "content-length": str(size),
            "connection": "keep-alive",
            "x-kong-upstream-latency": str(upstream_ms),
            "x-kong-proxy-latency": str(kong_ms),
            "via": f"1.1 kong/{KONG_VERSION}",
            "x-kong-request-id": request_id,
        }
        return {
            "source": source,
            "upstream_status": str(status),
            "upstream_uri": uri,
            "tries": [
                {
                    "ip": upstream_ip,
                    "port": 8080,
                    "balancer_start": ts_ms + kong_ms,
                    "balancer_latency": 0,
                }
            ],
            "latencies": {"kong": kong_ms, "proxy": proxy_ms, "request": total, "receive": 0},
            "response": {
                "status": status,
                "size": size + _UPSTREAM_HEADERS_BYTES,
                "headers": headers,
            },
        }


_TLS = {"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256", "client_verify": "NONE"}


def _headers_size(headers: dict[str, str]) -> int:
    """`name: value\r\n` bytes of a header dict (values are strings: every client here sends
    each header once)."""
    return len("".join(headers)) + len("".join(headers.values())) + 4 * len(headers)


def _request_size(method: str, uri: str, headers: dict[str, str]) -> int:
    """Bytes of the request line and headers, as nginx's $request_length counts them (without
    the body)."""
    return len(method) + len(uri) + 14 + _headers_size(headers)


def new_uuid(rng: random.Random) -> str:
    """A random (version 4) UUID from `rng`: the same string as
    `str(uuid.UUID(int=rng.getrandbits(128), version=4))`, without building the object.

    >>> import uuid
    >>> r1, r2 = random.Random(3), random.Random(3)
    >>> new_uuid(r1) == str(uuid.UUID(int=r2.getrandbits(128), version=4))
    True
    """
    h = f"{rng.getrandbits(128):032x}"
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"
