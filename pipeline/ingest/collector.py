"""The HTTP collector: Kong `http-log` POSTs in, envelopes on Kafka out.

Answers (what Kong's http-log does with them):
- 200 `{"accepted", "rejected", "reasons"}` once every good entry is on Kafka and every bad one is
  on the dead-letter topic. A batch with bad entries is still a 2xx: Kong retries any non-2xx for
  up to 60 s while its queue stalls, so refusing the batch would lose the good entries' neighbours.
  When Kafka does not confirm within `spool_after_s`, the entries are fsync'd to the disk spool
  instead and the answer is the same 200: they are replayed, in order, once Kafka is back
  (`pipeline.ingest.delivery`). Kong's queue keeps draining through a broker outage.
- 401 without the bearer token or a valid HMAC signature, decided before the body is read (a
  signed body is read first, under the in-flight limit, since the signature covers it); 413 over
  the body or entry limit; 429 (with Retry-After) over the source's rate.
- Entries whose `request.id` is already on Kafka (Kong retrying after a timeout) are dropped and
  counted as duplicates.
- 503 (with Retry-After) when neither Kafka nor the spool can take the entries (the spool is full,
  or off and Kafka is slow), so Kong retries the batch; and at once when the bodies in hand add up
  to more than `max_inflight_bytes`: before reading a body whose Content-Length does not fit, or
  as soon as a chunked body streaming in goes past it. Past its capacity the collector sheds load
  rather than parse bodies it cannot answer in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import operator
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pipeline.config import Settings
from pipeline.events import Reject
from pipeline.ingest.apigee import ApigeeParser
from pipeline.ingest.delivery import Delivery
from pipeline.ingest.guards import Deduplicator, SenderAuth, SourceRateLimiter
from pipeline.ingest.kong import KongParser, RecordResult
from pipeline.ingest.outputs import ingest_outputs
from pipeline.ingest.spool import SpoolError
from pipeline.kafka import KafkaUnavailable

__all__ = ["CollectorMetrics", "collector_app", "create_collector_app", "serve_collector"]

log = structlog.get_logger(__name__)

KONG_PATHS = ("/v1/ingest/kong", "/kong")
# The same JSON the MessageLogging template renders, POSTed by an Apigee callout instead of syslog
# (one object or an array of them).
APIGEE_PATHS = ("/v1/ingest/apigee", "/apigee")


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = Counter(
            "gatewatch_ingest_events_total",
            "Entries received",
            ["source", "outcome"],
            registry=registry,
        )
        self.rejects = Counter(
            "gatewatch_ingest_rejects_total",
            "Rejected entries by reason",
            ["source", "reason"],
            registry=registry,
        )
        self.requests = Counter(
            "gatewatch_ingest_requests_total",
            "HTTP requests by answer",
            ["status"],
            registry=registry,
        )
        self.bytes = Counter(
            "gatewatch_ingest_bytes_total", "Body bytes received", ["source"], registry=registry
        )
        self.unauthorized = Counter(
            "gatewatch_ingest_unauthorized_total",
            "Requests refused for missing or wrong credentials",
            ["source", "reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "gatewatch_ingest_duplicates_total",
            "Entries dropped as retries of entries already on Kafka",
            ["source"],
            registry=registry,
        )
        self.parse_paths = Counter(
            "gatewatch_ingest_parse_total",
            "Bodies by parser path: fast (typed decode) or reference (anything unusual)",
            ["source", "path"],
            registry=registry,
        )
        self.shed = Counter(
            "gatewatch_ingest_shed_total",
            "Requests answered 503 at once because the collector was at capacity",
            ["source"],
            registry=registry,
        )
        self.inflight = Gauge(
            "gatewatch_ingest_inflight_bytes",
            "Request body bytes in hand (read or announced, not yet answered)",
            registry=registry,
        )
        self.latency = Histogram(
            "gatewatch_ingest_request_seconds",
            "Time to answer an ingest request",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )

    def count(self, source: str, *, accepted: int, duplicates: int, rejects: list[Reject]) -> None:
        self.events.labels(source, "accepted").inc(accepted)
        if duplicates:
            self.duplicates.labels(source).inc(duplicates)
        if rejects:
            self.events.labels(source, "rejected").inc(len(rejects))
            for reject in rejects:
                self.rejects.labels(source, _reason_label(reject.reason)).inc()


def _reason_label(reason: str) -> str:
    # Reasons name the offending field first ("request.method: expected a string"); the field is a
    # bounded label, the rest of the message is not.
    return reason.split(":", 1)[0][:64]


def create_collector_app(
    *,
    parser: KongParser,
    delivery: Delivery,
    auth: SenderAuth,
    metrics: CollectorMetrics,
    max_body_bytes: int,
    max_entries: int = 10_000,
    rate_limiter: SourceRateLimiter | None = None,
    deduplicator: Deduplicator | None = None,
    apigee_parser: ApigeeParser | None = None,
    max_inflight_bytes: int = 16 * 1024 * 1024,
) -> web.Application:
    if not auth.configured:
        log.warning("collector.no_credentials", detail="every ingest request will be refused")
    # Body bytes read or being read and not yet answered: a Content-Length is counted whole
    # before reading, a chunked body as it streams in. One body is always let in, however large
    # (up to max_body_bytes), so a lone big batch is never refused.
    inflight = 0
    metrics.inflight.set_function(lambda: inflight)

    def ingest(
        source: str, parse: Callable[[bytes], RecordResult]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            with metrics.latency.time():
                response = await _ingest(request, source, parse)
            metrics.requests.labels(str(response.status)).inc()
            return response

        return handler

    async def _ingest(
        request: web.Request, source: str, parse: Callable[[bytes], RecordResult]
    ) -> web.StreamResponse:
        nonlocal inflight
        peer = request.remote or ""
        # Whoever cannot be authenticated is refused before a byte of the body is read; a
        # signed body is checked once read.
        if reason := auth.precheck(request.headers):
            return _unauthorized(peer, source, reason)
        length = request.content_length
        if length is not None and length > max_body_bytes:
            return _closing(_too_large(f"body larger than {max_body_bytes} bytes"))
        claimed = length or 0
        if inflight and inflight + claimed > max_inflight_bytes:
            return _closing(_at_capacity(source))
        inflight += claimed
        held = claimed
        try:
            if length is not None:
                try:
                    body = await request.read()
                except web.HTTPRequestEntityTooLarge:
                    return _closing(_too_large(f"body larger than {max_body_bytes} bytes"))
            else:
                # Chunked: no size up front, so each chunk is counted as it arrives.
                chunks: list[bytes] = []
                size = 0
                async for chunk in request.content.iter_any():
                    size += len(chunk)
                    if size > max_body_bytes:
                        return _closing(_too_large(f"body larger than {max_body_bytes} bytes"))
                    if inflight > held and inflight + len(chunk) > max_inflight_bytes:
                        return _closing(_at_capacity(source))
                    inflight += len(chunk)
                    held += len(chunk)
                    chunks.append(chunk)
                body = b"".join(chunks)
                del chunks
            return await _store(request, source, parse, peer, body)
        finally:
            inflight -= held

    async def _store(
        request: web.Request,
        source: str,
        parse: Callable[[bytes], RecordResult],
        peer: str,
        body: bytes,
    ) -> web.Response:
        if auth.body_signed(request.headers) and (reason := auth.check(request.headers, body)):
            return _unauthorized(peer, source, reason)
        metrics.bytes.labels(source).inc(len(body))

        result = parse(body)
        metrics.parse_paths.labels(source, "fast" if result.fast else "reference").inc()
        entries = len(result.records) + len(result.rejects)
        if entries > max_entries:
            return _too_large(f"{entries} entries in one request, limit {max_entries}")
        if rate_limiter is not None and (wait := rate_limiter.take(peer, entries)):
            log.info("collector.rate_limited", peer=peer, entries=entries, retry_in_s=wait)
            return web.json_response(
                {"error": "source over its rate limit, retry later"},
                status=429,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        records, duplicates = (
            deduplicator.filter(result.records, _request_id)
            if deduplicator
            else (result.records, 0)
        )
        try:
            await delivery.deliver(records, result.rejects, peer)
        except (KafkaUnavailable, SpoolError) as exc:
            log.warning("collector.unavailable", error=str(exc), events=len(records))
            return web.json_response(
                {"error": "event store unavailable, retry later"},
                status=503,
                headers={"Retry-After": "5"},
            )
        if deduplicator is not None:
            deduplicator.remember(r["request_id"] for r in records if r["request_id"])
        metrics.count(source, accepted=len(records), duplicates=duplicates, rejects=result.rejects)
        if result.rejects:
            log.info(
                "collector.rejected",
                peer=peer,
                rejected=len(result.rejects),
                first_reason=result.rejects[0].reason,
            )
        return web.json_response(
            {
                "accepted": len(records),
                "rejected": len(result.rejects),
                "duplicates": duplicates,
                "reasons": sorted({r.reason for r in result.rejects})[:10],
            }
        )

    def _at_capacity(source: str) -> web.Response:
        metrics.shed.labels(source).inc()
        return web.json_response(
            {"error": "collector at capacity, retry later"},
            status=503,
            headers={"Retry-After": "1"},
        )

    def _unauthorized(peer: str, source: str, reason: str) -> web.Response:
        metrics.unauthorized.labels(source, reason).inc()
        log.info("collector.unauthorized", peer=peer, reason=reason)
        return _closing(web.json_response({"error": "unauthenticated sender"}, status=401))

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # aiohttp enforces the limit itself while reading the body (no unbounded buffering).
    app = web.Application(client_max_size=max_body_bytes)
    for path in KONG_PATHS:
        app.router.add_post(path, ingest("kong", parser.parse_records))
    if apigee_parser is not None:
        parse_apigee = apigee_parser.parse_body
        for path in APIGEE_PATHS:
            app.router.add_post(path, ingest("apigee", lambda body: parse_apigee(body).records()))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    return app


_request_id = operator.itemgetter("request_id")


def _too_large(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=413)


def _closing(response: web.Response) -> web.Response:
    """An answer given with (part of) the body unread: the connection is not reused, so what
    the sender still streams is discarded (aiohttp's lingering close), never buffered."""
    response.force_close()
    return response


@contextlib.asynccontextmanager
async def collector_app(
    settings: Settings, *, spool: str | None = "collector"
) -> AsyncIterator[web.Application]:
    """The collector wired to Kafka per `settings`; the producer lives as long as the context.
    `spool` names its spool directory under `settings.spool_dir` (None: no spool)."""
    registry = CollectorRegistry()
    async with ingest_outputs(settings, spool=spool, registry=registry) as out:
        yield create_collector_app(
            parser=KongParser(out.redactor, window=out.window),
            delivery=out.delivery,
            auth=SenderAuth(
                token=settings.ingest_token.get_secret_value(),
                hmac_secret=settings.ingest_hmac_secret.get_secret_value().encode(),
            ),
            metrics=CollectorMetrics(registry),
            max_body_bytes=settings.max_body_bytes,
            max_entries=settings.max_entries_per_request,
            rate_limiter=SourceRateLimiter(settings.source_rate_limit, settings.source_burst),
            deduplicator=out.deduplicator,
            apigee_parser=ApigeeParser(out.redactor, window=out.window),
            max_inflight_bytes=settings.max_inflight_bytes,
        )


async def serve_collector(settings: Settings, host: str, port: int) -> None:
    """Run the collector until cancelled."""
    async with collector_app(settings, spool=f"collector-{port}") as app:
        # A refused upload's rest is read and discarded for at most 2 s before the connection
        # closes (so the sender sees the answer, not a reset), not aiohttp's 10.
        runner = web.AppRunner(app, access_log=None, lingering_time=2.0)
        await runner.setup()
        # What exists now (modules, the app, the Kafka client) lives as long as the process:
        # frozen, it is no longer walked by every full collection, which the parsed bodies
        # trigger many times a second. A body of 500 entries allocates some 5,000 containers
        # that all live until it is answered: collecting every 700 allocations only moves them
        # up a generation. Together ~3 us of CPU per entry, a fifth of the total.
        gc.freeze()
        gc.set_threshold(50_000, 20, 10)
        try:
            await web.TCPSite(runner, host, port).start()
            log.info("collector.listening", host=host, port=port)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
