"""Helpers for the sink tests: valid alerts, alerts onto a topic, a runner wired like the command,
a sink whose answers a test scripts, and the consumer group's committed offsets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from pipeline.alerts import Alert, AlertReason, alert_id
from pipeline.config import Settings
from pipeline.kafka import DeadLetters, ensure_topics
from sinks.base import Delivery
from sinks.command import make_runner
from sinks.metrics import SinkMetrics
from sinks.runner import SinkRunner

T0_MS = 1_700_000_000_000

# MITRE technique per reason code, as the worker stamps them.
ATTACKS = {
    "credential_stuffing": ["T1110.004"],
    "brute_force": ["T1110.001"],
    "flood": ["T1499.003"],
    "sqli": ["T1190"],
    "probing": ["T1595.003"],
}


def with_settings(settings: Settings, **update: object) -> Settings:
    """`settings` with some fields changed, validated (secrets become SecretStr)."""
    return Settings.model_validate(settings.model_dump() | update)


def make_alert(i: int, *, code: str = "credential_stuffing", mode: str = "shadow") -> Alert:
    """The i-th of a family of distinct, valid alerts (ids stable for the same i)."""
    subject = f"ip:203.0.113.{i % 250}" if i % 3 else f"consumer:c-{i}"
    action = ("block", "challenge", "tag")[i % 3]
    return Alert.model_validate(
        {
            "id": alert_id("test", code, i),
            "kind": "decision" if i % 5 else "finding",
            "event_time": T0_MS + i * 10,
            "emit_time": T0_MS + i * 10 + 150,
            "subject": subject,
            "scope": "ip" if subject.startswith("ip:") else "consumer",
            "tenant": "default",
            "gateway": "kong",
            "node": "kong-1",
            "service": "accounts",
            "route": "/v1/login",
            "action": action,
            "mode": mode,
            "enforced": mode == "enforce",
            "title": f"would {action} {subject}: {code}",
            "severity": ("high", "medium", "low")[i % 3],
            "score": 0.5 + (i % 50) / 100,
            "detector": "bruteforce",
            "reasons": [
                AlertReason(
                    detector="bruteforce",
                    code=code,
                    text="42 failed logins in 60 s against a baseline of 1.2",
                    score=0.9,
                    feature="auth_failures",
                    value=42.0,
                    baseline=1.2,
                    limit=20.0,
                )
            ],
            "attack": ATTACKS.get(code, []),
            "detector_versions": {"bruteforce": "1.3.0"},
            "model_version": "m-7",
            "evidence": [f"req-{i}-a", f"req-{i}-b"],
            "expires_at": T0_MS + 600_000,
        }
    )


async def produce(
    settings: Settings, values: list[bytes], *, topic: str | None = None, one_by_one: bool = False
) -> None:
    """Records onto the alerts topic (created if missing), acknowledged by the broker;
    `one_by_one` makes each its own record batch."""
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for value in values:
            futures.append(await producer.send(topic or settings.topics.alerts, value))
            if one_by_one:
                await futures[-1]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class ScriptedSink:
    """A sink whose answer to each send a test decides; it records what it was given."""

    def __init__(self, answer: Callable[[int, list[Alert]], Delivery], name: str = "scripted"):
        self.name = name
        self.answer = answer
        self.calls: list[list[str]] = []
        self.delivered: list[str] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, alerts: list[Alert]) -> Delivery:
        self.calls.append([a.id for a in alerts])
        delivery = self.answer(len(self.calls), alerts)
        self.delivered += [
            a.id for a in alerts if a.id not in delivery.retry and a.id not in delivery.rejected
        ]
        return delivery


def runner_for(settings: Settings, sink: object, producer: AIOKafkaProducer) -> SinkRunner:
    """A runner wired exactly as `gatewatch sink` wires one, with its own metrics registry."""
    metrics = SinkMetrics(CollectorRegistry())
    return make_runner(settings, sink, DeadLetters(producer, settings.topics.dlq), metrics)  # type: ignore[arg-type]


async def committed(settings: Settings, group: str) -> int:
    """The group's committed offset on the alerts topic's partition 0 (0 if none), read by a
    consumer of the group that does not join it (Tansu does not answer the admin API's call)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        offset = await consumer.committed(TopicPartition(settings.topics.alerts, 0))
    finally:
        await consumer.stop()
    return offset or 0


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Poll `check` until true: for state outside this process (a group's committed offset, a
    child's receiver), which no event announces."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - nothing to await but the broker's answer
            await asyncio.sleep(0.05)
