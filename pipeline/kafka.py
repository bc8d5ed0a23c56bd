"""Kafka plumbing for the ingest side: topic creation, the envelope producer and dead letters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline import envelopes
from pipeline.config import Settings
from pipeline.envelopes import EventRecord
from pipeline.events import GatewayEvent, Reject

__all__ = ["DeadLetters", "EnvelopeProducer", "KafkaUnavailable", "ensure_topics"]

log = structlog.get_logger(__name__)
SUBJECT_CACHE = 100_000


class KafkaUnavailable(RuntimeError):
    """Kafka did not confirm a write in time; the sender should retry later."""


async def ensure_topics(settings: Settings) -> None:
    """Create gatewatch's topics if they are missing (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = settings.topics
        wanted = [
            NewTopic(names.events, settings.partitions, 1),
            NewTopic(names.raw_kong, settings.partitions, 1),
            NewTopic(
                names.decisions, settings.partitions, 1, topic_configs={"cleanup.policy": "compact"}
            ),
            # Alerts are a log of findings for SIEMs and SOAR, not a state: never compacted,
            # deleted after their retention.
            NewTopic(
                names.alerts,
                1,
                1,
                topic_configs={
                    "cleanup.policy": "delete",
                    "retention.ms": str(settings.alerts_retention_ms),
                },
            ),
            NewTopic(names.dlq, 1, 1),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process won the race
            log.info("kafka.topics_created", topics=[t.name for t in missing])
    finally:
        await admin.close()


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka,
        acks="all",  # 2xx to a gateway means the broker has it
        enable_idempotence=False,
        linger_ms=0,  # we batch ourselves (envelopes)
        max_request_size=16 * 1024 * 1024,
        request_timeout_ms=int(settings.kafka_timeout_s * 1000),
    )


@dataclass
class _Pending:
    records: list[EventRecord] = field(default_factory=list)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    timer: asyncio.Handle | None = None
    early: bool = False  # flush already moved up to the next loop iteration


class EnvelopeProducer:
    """Groups events by destination partition and writes one envelope per (partition, flush).

    `submit` returns once every event it was given is acknowledged by the broker, so a caller can
    answer its sender only after the data is durable. Concurrent callers share envelopes, which is
    what keeps the record rate low under load.

    An envelope is flushed at `max_events`, after `linger_ms`, or, once it holds `min_events`
    (default a fifth of `max_events`), as soon as the callers ready to run now have added theirs:
    a batched http-log POST often fills one alone, and its sender waits for the broker's ack, so
    lingering would only add latency. Small senders (one entry per POST) still share envelopes.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        partitions: int,
        *,
        max_events: int = 500,
        linger_ms: int = 20,
        timeout_s: float = 10.0,
        min_events: int | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.partitions = partitions
        self.max_events = max_events
        self.min_events = max(1, max_events // 5) if min_events is None else min_events
        self.linger_s = linger_ms / 1000
        self.timeout_s = timeout_s
        self._pending: dict[int, _Pending] = {}
        self._sends: set[asyncio.Task[None]] = set()
        # Partition of each consumer and client address seen lately (bounded): the same subjects
        # come back all the time, and hashing their names is a good part of routing an event.
        self._consumer_partition: dict[str, int] = {}
        self._ip_partition: dict[str, int] = {}

    async def submit(self, events: Iterable[GatewayEvent]) -> None:
        await self.submit_records([vars(e) for e in events])

    async def submit_records(self, records: Iterable[EventRecord]) -> None:
        """`submit` for events already in field-dict form (the Kong fast path's output)."""
        waits: dict[int, asyncio.Future[None]] = {}
        by_consumer, by_ip = self._consumer_partition, self._ip_partition
        for record in records:
            # GatewayEvent.partition_subject, with the answer remembered per subject.
            consumer = record["consumer"]
            if consumer:
                p = by_consumer.get(consumer)
                if p is None:
                    p = self._remember(by_consumer, consumer, f"consumer:{consumer}")
            else:
                ip = record["client_ip"]
                p = by_ip.get(ip)
                if p is None:
                    p = self._remember(by_ip, ip, f"ip:{ip}")
            pending = self._pending.get(p)
            if pending is None:
                pending = self._pending[p] = _Pending()
                pending.timer = asyncio.get_running_loop().call_later(self.linger_s, self._flush, p)
            pending.records.append(record)
            waits[id(pending.done)] = pending.done
            if len(pending.records) >= self.max_events:
                self._flush(p)
        if not waits:
            return
        loop = asyncio.get_running_loop()
        for p, pending in self._pending.items():
            if not pending.early and len(pending.records) >= self.min_events:
                if pending.timer is not None:
                    pending.timer.cancel()
                pending.timer, pending.early = loop.call_soon(self._flush, p), True
        try:
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(f) for f in waits.values())), self.timeout_s
            )
        except (TimeoutError, KafkaError) as exc:
            raise KafkaUnavailable(str(exc) or type(exc).__name__) from exc

    def _remember(self, cache: dict[str, int], name: str, subject: str) -> int:
        if len(cache) >= SUBJECT_CACHE:
            cache.clear()
        p = cache[name] = envelopes.partition_for(subject, self.partitions)
        return p

    def _flush(self, partition: int) -> None:
        pending = self._pending.pop(partition, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        task = asyncio.create_task(self._send(partition, pending))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, partition: int, pending: _Pending) -> None:
        try:
            await self.producer.send_and_wait(
                self.topic,
                envelopes.encode_records(pending.records),
                key=f"p{partition}".encode(),
                partition=partition,
            )
        except Exception as exc:  # every waiter must learn about the failure, whatever it is
            log.warning("kafka.envelope_failed", partition=partition, error=repr(exc))
            if not pending.done.done():
                pending.done.set_exception(
                    exc if isinstance(exc, KafkaError) else KafkaError(repr(exc))
                )
                pending.done.exception()  # mark retrieved: waiters that timed out are gone
        else:
            pending.done.set_result(None)

    async def close(self) -> None:
        for p in list(self._pending):
            self._flush(p)
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)


class DeadLetters:
    """Rejected input on the dead-letter topic: value = the (redacted) raw bytes, the cause in
    headers, the way Kafka Connect's DLQ does it, so a consumer can replay the value as-is."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, timeout_s: float = 10.0) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s

    async def send(self, rejects: list[Reject], *, origin: str = "") -> None:
        if not rejects:
            return
        now = str(int(time.time() * 1000)).encode()
        futures = []
        try:
            for reject in rejects:
                headers = [
                    ("gatewatch.source", reject.source.encode()),
                    ("gatewatch.reason", reject.reason.encode()[:1024]),
                    ("gatewatch.received_at", now),
                    ("gatewatch.origin", origin.encode()),
                ]
                futures.append(await self.producer.send(self.topic, reject.raw, headers=headers))
            await asyncio.wait_for(asyncio.gather(*futures), self.timeout_s)
        except (TimeoutError, KafkaError) as exc:
            raise KafkaUnavailable(str(exc) or type(exc).__name__) from exc
