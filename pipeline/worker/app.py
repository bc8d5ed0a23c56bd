"""The Faust app: one agent over the events topic; partitions are the unit of parallelism.

No Faust tables: on Tansu a second worker could not join a group whose app had one (see the
architecture brief), so per-subject state stays in the worker's memory, owned by partition
(`PartitionStates`), checkpointed to Redis, loaded on assignment and flushed on revoke. The agent
acknowledges envelopes itself (`noack`): only once a checkpoint holds what they changed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.asyncio import Redis

from detectors.state_codec import StateCodec
from pipeline.config import Settings
from pipeline.decisions import RedisDecisions
from pipeline.kafka import make_producer
from pipeline.operator.sync import OperatorSync
from pipeline.worker.checkpoints import CheckpointMetrics, Checkpoints
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.ownership import PartitionStates
from pipeline.worker.processor import build_processor
from pipeline.worker.runtime import WorkerRuntime
from pipeline.worker.store import SubjectBudget
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
    registry = CollectorRegistry()
    processor = build_processor(settings)
    # One bound for every partition this worker owns, not one per partition.
    budget = SubjectBudget(settings.max_subjects)
    worker_metrics = WorkerMetrics(registry, subjects=lambda: budget.held)
    metrics = CheckpointMetrics(registry)
    checkpoints = (
        Checkpoints(
            redis,
            StateCodec(processor.detectors),
            prefix=settings.redis_prefix,
            group=settings.worker_id,
            topic=settings.topics.events,
            ttl_s=settings.checkpoint_ttl_s,
            metrics=metrics,
        )
        if settings.checkpoints
        else None
    )
    states = PartitionStates(budget, checkpoints, metrics)
    runtime = WorkerRuntime(
        processor=processor,
        redis=redis,
        decisions=RedisDecisions(redis, settings.redis_prefix, settings.decision_stream_maxlen),
        producer_factory=lambda: make_producer(settings),
        decisions_topic=settings.topics.decisions,
        dlq_topic=settings.topics.dlq,
        states=states,
        source=f"{settings.worker_id}/{settings.topics.events}",
        operator=OperatorSync.from_settings(redis, settings),
        checkpoint_interval_s=settings.checkpoint_interval_s,
        model_interval_s=settings.checkpoint_model_interval_s,
        alerts_topic=settings.topics.alerts if settings.alerts_enabled else None,
        alert_window_s=settings.alert_window_s,
        metrics=worker_metrics,
    )
    topic = app.topic(
        settings.topics.events,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    topic_name = topic.get_topic_name()

    @app.task
    async def start_runtime() -> None:
        await app.add_runtime_dependency(runtime)

    @app.agent(topic, name="detect")
    async def detect(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            message = event.message
            await runtime.handle(event.value, message.partition, message.offset, event.ack)
            worker_metrics.positions[message.partition] = message.offset + 1

    # Faust revokes everything before each assignment (and waits for this before rejoining):
    # the states are checkpointed here, so whoever is assigned a partition next loads them.
    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        await states.revoked()

    # Partitions this worker keeps keep their memory; new ones are loaded before their first
    # envelope is processed (`PartitionStates.hold` waits for this).
    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        await states.assigned(tp.partition for tp in assigned if tp.topic == topic_name)

    @app.page("/metrics")
    async def metrics_page(view: View, request: Request) -> Response:
        worker_metrics.refresh_consumer_lag(app.consumer, topic_name)
        # As a header: aiohttp refuses a content_type argument with a charset in it.
        return view.bytes(worker_metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app
