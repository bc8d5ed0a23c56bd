"""The Faust app: one agent over the events topic; partitions are the unit of parallelism.

No Faust tables: on Tansu a second worker could not join a group whose app had one (see the
architecture brief), so per-subject state stays in `WorkerRuntime`, owned by partition.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.asyncio import Redis

from pipeline.config import Settings
from pipeline.decisions import Overrides, RedisDecisions
from pipeline.kafka import make_producer
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.processor import build_processor
from pipeline.worker.runtime import WorkerRuntime
from pipeline.worker.transport import GatewatchApp

__all__ = ["create_worker_app"]


def create_worker_app(settings: Settings) -> faust.App:
    # Faust writes a data directory even with in-memory stores; keep it out of the cwd.
    datadir = Path(tempfile.gettempdir()) / "gatewatch-faust" / settings.worker_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = GatewatchApp(
        settings.worker_id,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        broker=",".join(f"kafka://{h}" for h in settings.kafka.split(",")),
        store="memory://",
        datadir=str(datadir),
        topic_disable_leader=True,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=10.0,
        stream_wait_empty=False,
    )
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    runtime = WorkerRuntime(
        processor=build_processor(settings),
        redis=redis,
        decisions=RedisDecisions(redis, settings.redis_prefix, settings.decision_stream_maxlen),
        producer_factory=lambda: make_producer(settings),
        decisions_topic=settings.topics.decisions,
        dlq_topic=settings.topics.dlq,
        max_subjects=settings.max_subjects,
        overrides=Overrides(redis, settings.redis_prefix),
        alerts_topic=settings.topics.alerts if settings.alerts_enabled else None,
        alert_window_s=settings.alert_window_s,
        metrics=(metrics := WorkerMetrics()),
    )
    topic = app.topic(
        settings.topics.events,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.task
    async def start_runtime() -> None:
        await app.add_runtime_dependency(runtime)

    @app.agent(topic, name="detect")
    async def detect(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await runtime.handle(event.value, event.message.partition)
            metrics.positions[event.message.partition] = event.message.offset + 1

    @app.page("/metrics")
    async def metrics_page(view: View, request: Request) -> Response:
        metrics.refresh_consumer_lag(app.consumer, topic.get_topic_name())
        return view.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # Faust revokes everything before each assignment; dropping state only for partitions that did
    # not come back keeps baselines across a rebalance that leaves this worker its partitions.
    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        runtime.retain({tp.partition for tp in assigned if tp.topic == topic.get_topic_name()})

    return app
