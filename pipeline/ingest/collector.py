"""The HTTP collector: Kong `http-log` POSTs in, envelopes on Kafka out.

Answers (what Kong's http-log does with them):
- 200 `{"accepted", "rejected", "reasons"}` once every good entry is on Kafka and every bad one is
  on the dead-letter topic. A batch with bad entries is still a 2xx: Kong retries any non-2xx for
  up to 60 s while its queue stalls, so refusing the batch would lose the good entries' neighbours.
- 401 without the bearer token or a valid HMAC signature, 413 over the body or entry limit, 429
  (with Retry-After) over the source's rate: the only requests refused outright.
- Entries whose `request.id` is already on Kafka (Kong retrying after a timeout) are dropped and
  counted as duplicates.
- 503 (with Retry-After) when Kafka does not confirm in time, so Kong retries the batch; and at
  once, before reading the body, when the bodies already being handled add up to more than
  `max_inflight_bytes`: past its capacity the collector sheds load rather than parse bodies it
  cannot answer in time (they would end in the same 503, ten seconds and a core's worth later).
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
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pipeline.config import Settings
from pipeline.events import Reject
from pipeline.ingest.apigee import ApigeeParser
from pipeline.ingest.guards import Deduplicator, SenderAuth, SourceRateLimiter
from pipeline.ingest.kong import KongParser, RecordResult
from pipeline.ingest.outputs import ingest_outputs
from pipeline.kafka import DeadLetters, EnvelopeProducer, KafkaUnavailable

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
    producer: EnvelopeProducer,
    dead_letters: DeadLetters,
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
    # Body bytes (as announced by Content-Length, which Kong always sends) read or being read and
    # not yet answered. One body is always let in, however
    # large (up to max_body_bytes), so a lone big batch is never refused.
    inflight = 0

    def ingest(
        source: str, parse: Callable[[bytes], RecordResult]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            with metrics.latency.time():
                response = await _ingest(request, source, parse)
            metrics.requests.labels(str(response.status)).inc()
            return response

        return handler

    async def _ingest(
        request: web.Request, source: str, parse: Callable[[bytes], RecordResult]
    ) -> web.Response:
        nonlocal inflight
        peer = request.remote or ""
        # A bearer token is checked before the body is read; a signature needs the body.
        if "Authorization" in request.headers and (reason := auth.check(request.headers, b"")):
            return _unauthorized(peer, source, reason)
        if request.content_length is not None and request.content_length > max_body_bytes:
            return _too_large(f"body larger than {max_body_bytes} bytes")
        claimed = request.content_length or 0
        if inflight and inflight + claimed > max_inflight_bytes:
            metrics.shed.labels(source).inc()
            return web.json_response(
                {"error": "collector at capacity, retry later"},
                status=503,
                headers={"Retry-After": "1"},
            )
        inflight += claimed
        try:
            return await _read_and_store(request, source, parse, peer)
        finally:
            inflight -= claimed

    async def _read_and_store(
        request: web.Request, source: str, parse: Callable[[bytes], RecordResult], peer: str
    ) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(f"body larger than {max_body_bytes} bytes")
        if "Authorization" not in request.headers and (reason := auth.check(request.headers, body)):
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
            await producer.submit_records(records)
            await dead_letters.send(result.rejects, origin=peer)
        except KafkaUnavailable as exc:
            log.warning("collector.kafka_unavailable", error=str(exc), events=len(records))
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

    def _unauthorized(peer: str, source: str, reason: str) -> web.Response:
        metrics.unauthorized.labels(source, reason).inc()
        log.info("collector.unauthorized", peer=peer, reason=reason)
        return web.json_response({"error": "unauthenticated sender"}, status=401)

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


@contextlib.asynccontextmanager
async def collector_app(settings: Settings) -> AsyncIterator[web.Application]:
    """The collector wired to Kafka per `settings`; the producer lives as long as the context."""
    async with ingest_outputs(settings) as out:
        yield create_collector_app(
            parser=KongParser(out.redactor),
            producer=out.producer,
            dead_letters=out.dead_letters,
            auth=SenderAuth(
                token=settings.ingest_token.get_secret_value(),
                hmac_secret=settings.ingest_hmac_secret.get_secret_value().encode(),
            ),
            metrics=CollectorMetrics(CollectorRegistry()),
            max_body_bytes=settings.max_body_bytes,
            max_entries=settings.max_entries_per_request,
            rate_limiter=SourceRateLimiter(settings.source_rate_limit, settings.source_burst),
            deduplicator=out.deduplicator,
            apigee_parser=ApigeeParser(out.redactor),
        )


async def serve_collector(settings: Settings, host: str, port: int) -> None:
    """Run the collector until cancelled."""
    async with collector_app(settings) as app:
        runner = web.AppRunner(app, access_log=None)
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
