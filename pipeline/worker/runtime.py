"""What a worker does with one envelope: decode, detect, write decisions, then let Faust ack it.

The handler returns only after Redis and the decisions topic have the batch's decisions, and Faust
acks (so commits) a message only after its handler returned: at-least-once end to end. State lives
in memory, one `StateStore` per partition, dropped when another worker is assigned the partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaProducer
from mode import Service
from redis.asyncio import Redis
from redis.exceptions import RedisError

from pipeline import envelopes
from pipeline.decisions import Decision, RedisDecisions
from pipeline.events import Reject
from pipeline.kafka import DeadLetters
from pipeline.operator.sync import OperatorSync
from pipeline.retry import until_done
from pipeline.worker.processor import Processor, StateStore
from sinks.kafka import KafkaDecisionSink

__all__ = ["WorkerRuntime"]

log = structlog.get_logger(__name__)
MAX_BACKOFF_S = 5.0
OVERRIDES_REFRESH_S = 5.0


class WorkerRuntime(Service):
    def __init__(
        self,
        *,
        processor: Processor,
        redis: Redis,
        decisions: RedisDecisions,
        producer_factory: Callable[[], AIOKafkaProducer],
        decisions_topic: str,
        dlq_topic: str,
        max_subjects: int,
        operator: OperatorSync | None = None,
    ) -> None:
        super().__init__()
        self.processor = processor
        self.redis = redis
        self.decisions = decisions
        # aiokafka binds to the running loop, which Faust creates only when the worker starts.
        self.producer_factory = producer_factory
        self.decisions_topic = decisions_topic
        self.dlq_topic = dlq_topic
        self.max_subjects = max_subjects
        self.operator = operator
        self.stores: dict[int, StateStore] = {}
        self.ready = asyncio.Event()

    @Service.timer(OVERRIDES_REFRESH_S)
    async def _refresh_overrides(self) -> None:
        """An operator's allow-override must also stop new decisions, not only their enforcement;
        feedback's threshold adjustments apply within seconds; queued audit alerts go out."""
        if self.operator is not None:
            await self.operator.refresh(self.processor, getattr(self, "producer", None))

    async def on_start(self) -> None:
        self.producer = self.producer_factory()
        await self.producer.start()
        self.sink = KafkaDecisionSink(self.producer, self.decisions_topic)
        self.dead_letters = DeadLetters(self.producer, self.dlq_topic)
        self.ready.set()

    async def on_stop(self) -> None:
        await self.producer.stop()
        await self.redis.aclose()

    def retain(self, partitions: set[int]) -> None:
        """Keep the state of these partitions only (another worker owns the rest now)."""
        for p in set(self.stores) - partitions:
            dropped = self.stores.pop(p)
            log.info("worker.partition_dropped", partition=p, subjects=len(dropped))

    async def handle(self, payload: bytes, partition: int) -> int:
        """Process one envelope; returns how many events it held."""
        await self.ready.wait()
        store = self.stores.get(partition)
        if store is None:
            store = self.stores[partition] = StateStore(self.max_subjects)
        try:
            events = envelopes.decode(payload)
            decisions = self.processor.process(events, store)
        except envelopes.EnvelopeError as exc:
            await self._dead_letter(payload, partition, str(exc))
            return 0
        except Exception as exc:
            # A poison envelope must not stop the partition: park it with the cause and go on.
            log.exception("worker.processing_failed", partition=partition)
            await self._dead_letter(payload, partition, f"processing failed: {exc!r}")
            return 0
        await self._write(decisions, len(events))
        if decisions:
            await self.sink.publish(decisions)
            for d in decisions:
                log.info(
                    "decision.changed",
                    subject=d.subject,
                    action=d.action,
                    score=d.score,
                    detector=d.detector,
                    reason=d.reasons[0] if d.reasons else "",
                )
        return len(events)

    async def _dead_letter(self, payload: bytes, partition: int, reason: str) -> None:
        log.warning("worker.bad_envelope", partition=partition, reason=reason)
        reject = Reject(source="envelope", reason=reason, raw=payload)
        await self.dead_letters.send([reject], origin=f"partition:{partition}")

    async def _write(self, decisions: list[Decision], events: int) -> None:
        # Redis down: hold this envelope (and so its offset) until it is back, never skip it.
        await until_done(
            lambda: self.decisions.write(decisions, events_processed=events),
            retry_on=(RedisError, OSError),
            event="worker.redis_unavailable",
            max_backoff_s=MAX_BACKOFF_S,
        )
