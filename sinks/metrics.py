"""The sink metrics every sink process serves on `--metrics-port` (names shared across gatewatch).

One `SinkMetrics` per process, labelled by sink, so several sinks in one process share one
registry and one `/metrics`.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["SinkMetrics", "serve_metrics"]

# Receiver round trips: a local collector answers in milliseconds, a loaded SIEM in seconds.
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.alerts = Counter(
            "gatewatch_sink_alerts_total",
            "Alerts by outcome: delivered, retried (each resend counts), rejected (dead-lettered)",
            ["sink", "outcome"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "gatewatch_sink_batch_seconds",
            "Duration of one send of a batch to the receiver",
            ["sink"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            "gatewatch_sink_lag",
            "Alerts on the topic this sink has not delivered or dead-lettered yet",
            ["sink"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "gatewatch_sink_dead_letters_total",
            "Records sent to the dead-letter topic: refused alerts and malformed records",
            ["sink"],
            registry=registry,
        )


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> web.AppRunner:
    """`GET /metrics` on host:port; the caller cleans the returned runner up."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
