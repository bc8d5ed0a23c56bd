"""The HTTP collector: Kong `http-log` POSTs in, envelopes on Kafka out.

Answers (what Kong's http-log does with them):
- 200 `{"accepted", "rejected", "reasons"}` once every good entry is on Kafka and every bad one is
  on the dead-letter topic. A batch with bad entries is still a 2xx: Kong retries any non-2xx for
  up to 60 s while its queue stalls, so refusing the batch would lose the good entries' neighbours.
- 401 without the bearer token, 413 over the body limit: the only requests refused outright.
- 503 (with Retry-After) when Kafka does not confirm in time, so Kong retries the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pipeline.config import Settings
from pipeline.ingest.kong import KongParser
from pipeline.ingest.redaction import Redactor
from pipeline.kafka import (
    DeadLetters,
    EnvelopeProducer,
    KafkaUnavailable,
    ensure_topics,
    make_producer,
)

__all__ = ["CollectorMetrics", "collector_app", "create_collector_app", "serve_collector"]

log = structlog.get_logger(__name__)

KONG_PATHS = ("/v1/ingest/kong", "/kong")


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
        self.latency = Histogram(
            "gatewatch_ingest_request_seconds",
            "Time to answer an ingest request",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )


def _reason_label(reason: str) -> str:
    # Reasons name the offending field first ("request.method: expected a string"); the field is a
    # bounded label, the rest of the message is not.
    return reason.split(":", 1)[0][:64]


def create_collector_app(
    *,
    parser: KongParser,
    producer: EnvelopeProducer,
    dead_letters: DeadLetters,
    token: str,
    max_body_bytes: int,
    metrics: CollectorMetrics,
) -> web.Application:
    if not token:
        log.warning("collector.no_token", detail="every ingest request will be refused with 401")
    expected = f"Bearer {token}".encode()

    def authorized(request: web.Request) -> bool:
        given = request.headers.get("Authorization", "").encode()
        return bool(token) and hmac.compare_digest(given, expected)

    async def ingest_kong(request: web.Request) -> web.Response:
        with metrics.latency.time():
            response = await _ingest_kong(request)
        metrics.requests.labels(str(response.status)).inc()
        return response

    async def _ingest_kong(request: web.Request) -> web.Response:
        peer = request.remote or ""
        if not authorized(request):
            log.info("collector.unauthorized", peer=peer)
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        if request.content_length is not None and request.content_length > max_body_bytes:
            return _too_large(max_body_bytes)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(max_body_bytes)
        metrics.bytes.labels("kong").inc(len(body))

        result = parser.parse_body(body)
        try:
            await producer.submit(result.events)
            await dead_letters.send(result.rejects, origin=peer)
        except KafkaUnavailable as exc:
            log.warning("collector.kafka_unavailable", error=str(exc), events=len(result.events))
            return web.json_response(
                {"error": "event store unavailable, retry later"},
                status=503,
                headers={"Retry-After": "5"},
            )
        metrics.events.labels("kong", "accepted").inc(len(result.events))
        if result.rejects:
            metrics.events.labels("kong", "rejected").inc(len(result.rejects))
            for reject in result.rejects:
                metrics.rejects.labels("kong", _reason_label(reject.reason)).inc()
            log.info(
                "collector.rejected",
                peer=peer,
                rejected=len(result.rejects),
                first_reason=result.rejects[0].reason,
            )
        return web.json_response(
            {
                "accepted": len(result.events),
                "rejected": len(result.rejects),
                "reasons": sorted({r.reason for r in result.rejects})[:10],
            }
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # aiohttp enforces the limit itself while reading the body (no unbounded buffering).
    app = web.Application(client_max_size=max_body_bytes)
    for path in KONG_PATHS:
        app.router.add_post(path, ingest_kong)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    return app


def _too_large(limit: int) -> web.Response:
    return web.json_response({"error": f"body larger than {limit} bytes"}, status=413)


@contextlib.asynccontextmanager
async def collector_app(settings: Settings) -> AsyncIterator[web.Application]:
    """The collector wired to Kafka per `settings`; the producer lives as long as the context."""
    await ensure_topics(settings)
    kafka = make_producer(settings)
    await kafka.start()
    producer = None
    try:
        partitions = len(await kafka.partitions_for(settings.topics.events))
        producer = EnvelopeProducer(
            kafka,
            settings.topics.events,
            partitions,
            max_events=settings.envelope_max_events,
            linger_ms=settings.envelope_linger_ms,
            timeout_s=settings.kafka_timeout_s,
        )
        yield create_collector_app(
            parser=KongParser(Redactor(settings.redaction_key.get_secret_value().encode())),
            producer=producer,
            dead_letters=DeadLetters(kafka, settings.topics.dlq, settings.kafka_timeout_s),
            token=settings.ingest_token.get_secret_value(),
            max_body_bytes=settings.max_body_bytes,
            metrics=CollectorMetrics(CollectorRegistry()),
        )
    finally:
        if producer is not None:
            await producer.close()
        await kafka.stop()


async def serve_collector(settings: Settings, host: str, port: int) -> None:
    """Run the collector until cancelled."""
    async with collector_app(settings) as app:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            log.info("collector.listening", host=host, port=port)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
