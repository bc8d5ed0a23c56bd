"""Kafka out: decisions onto `gatewatch.decisions` (the worker's audit trail), and alerts
re-published to another topic or cluster for SOAR consumers (`gatewatch sink kafka`).

Decisions go from the worker, keyed by subject (a compacted topic keeps each subject's latest
decision for a consumer that starts late); the worker commits its input only after they are in.

Alerts are keyed by subject too (one subject's alerts stay in order on one partition) and written
by an idempotent producer (acks from all replicas; a retried produce is not written twice; Tansu's
in-memory store, used in the tests, refuses producer ids, so there it is turned off). The
record is the alert's JSON as it came from `gatewatch.alerts`, so consumers read one schema
(`pipeline/schemas/alert.schema.json`) wherever they take it from.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from aiokafka.helpers import create_ssl_context

from pipeline.alerts import Alert
from pipeline.config import Settings
from pipeline.decisions import Decision
from sinks.base import Delivery, SinkConfigError
from sinks.registry import require

__all__ = ["KafkaAlertSink", "KafkaDecisionSink", "build"]

# Too big for the cluster: retrying cannot help (anything else, even authorisation, is held).
TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)


class KafkaDecisionSink:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def publish(self, decisions: list[Decision]) -> None:
        """Returns once the broker has every decision (the worker commits offsets only after)."""
        futures = [
            await self.producer.send(self.topic, d.to_json(), key=d.subject.encode())
            for d in decisions
        ]
        if futures:
            await asyncio.gather(*futures)


class KafkaAlertSink:
    """The Sink Protocol over a producer: per-alert outcomes from the per-record futures."""

    name = "kafka"

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def start(self) -> None:
        await self.producer.start()

    async def close(self) -> None:
        await self.producer.stop()

    async def send(self, alerts: list[Alert]) -> Delivery:
        futures: list[asyncio.Future[object]] = []
        delivery = Delivery()
        for alert in alerts:
            try:
                future = await self.producer.send(
                    self.topic, alert.model_dump_json().encode(), key=alert.subject.encode()
                )
            except TOO_LARGE as exc:
                delivery.rejected[alert.id] = f"kafka: {type(exc).__name__}"
                future = _done()
            except KafkaError as exc:
                future = _failed(exc)
            futures.append(future)
        results = await asyncio.gather(*futures, return_exceptions=True)
        for alert, result in zip(alerts, results, strict=True):
            if isinstance(result, TOO_LARGE):
                delivery.rejected[alert.id] = f"kafka: {type(result).__name__}"
            elif isinstance(result, BaseException):
                delivery.retry.append(alert.id)
                delivery.retry_reason = f"kafka: {result!r}"
        return delivery


def _done() -> asyncio.Future[object]:
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def _failed(exc: BaseException) -> asyncio.Future[object]:
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


def build(settings: Settings) -> KafkaAlertSink:
    topic = require(settings, "sink_kafka_topic")
    bootstrap = settings.sink_kafka_bootstrap or settings.kafka
    if topic == settings.topics.alerts and bootstrap == settings.kafka:
        raise SinkConfigError(
            "GATEWATCH_SINK_KAFKA_TOPIC is the alerts topic itself on the same cluster: "
            "alerts would loop; name another topic or set GATEWATCH_SINK_KAFKA_BOOTSTRAP"
        )
    protocol = settings.sink_kafka_security_protocol
    sasl = protocol.startswith("SASL")
    if sasl and not settings.sink_kafka_username:
        raise SinkConfigError(f"set GATEWATCH_SINK_KAFKA_USERNAME for {protocol}")
    tls = protocol.endswith("SSL")
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=settings.sink_kafka_idempotent,
        linger_ms=5,
        compression_type=None,
        security_protocol=protocol,
        ssl_context=create_ssl_context(cafile=settings.sink_kafka_ca_file) if tls else None,
        sasl_mechanism=settings.sink_kafka_sasl_mechanism,
        sasl_plain_username=settings.sink_kafka_username or None,
        sasl_plain_password=settings.sink_kafka_password.get_secret_value() or None,
        request_timeout_ms=int(settings.kafka_timeout_s * 1000),
    )
    return KafkaAlertSink(producer, topic)
