"""What a worker does with one envelope: decode, detect, write decisions, then let Faust ack it.

The handler returns only after Redis and the decisions topic have the batch's decisions; the
envelope is acknowledged (so committed) once a checkpoint holds the state it changed
(`PartitionStates`): at-least-once end to end, and a replayed envelope is not counted twice.
State lives in memory, one `StateStore` per owned partition, checkpointed to Redis.
"""

from __future__ import annotations

import asyncio
import time
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
from pipeline.worker.ownership import Ack, PartitionStates
from pipeline.worker.processor import Processor
from pipeline.worker.store import StateStore
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
        states: PartitionStates,
        source: str = "",
        operator: OperatorSync | None = None,
        checkpoint_interval_s: float = 1.0,
        model_interval_s: float = 10.0,
    ) -> None:
        super().__init__()
        self.processor = processor
        self.redis = redis
        self.decisions = decisions
        # aiokafka binds to the running loop, which Faust creates only when the worker starts.
        self.producer_factory = producer_factory
        self.decisions_topic = decisions_topic
        self.dlq_topic = dlq_topic
        self.operator = operator
        self.states = states
        # `<group>/<topic>`: with a partition and an offset, names an envelope whose effects
        # Redis must apply only once (`RedisDecisions.write`).
        self.source = source
        self.checkpoint_interval_s = checkpoint_interval_s
        self.model_interval_s = model_interval_s
        self.ready = asyncio.Event()

    @Service.timer(OVERRIDES_REFRESH_S)
    async def _refresh_overrides(self) -> None:
        """An operator's allow-override must also stop new decisions, not only their enforcement;
        feedback's threshold adjustments apply within seconds; queued audit alerts go out."""
        if self.operator is not None:
            await self.operator.refresh(self.processor, getattr(self, "producer", None))

    @Service.task
    async def _checkpoint(self) -> None:
        """Subject states about every `checkpoint_interval_s`, models every `model_interval_s`."""
        await self.ready.wait()
        models_at = time.monotonic()
        while not self.should_stop:
            await self.sleep(self.checkpoint_interval_s)
            await self.states.flush()
            if time.monotonic() - models_at >= self.model_interval_s:
                models_at = time.monotonic()
                await self.states.flush_models()

    async def on_start(self) -> None:
        self.producer = self.producer_factory()
        await self.producer.start()
        self.sink = KafkaDecisionSink(self.producer, self.decisions_topic)
        self.dead_letters = DeadLetters(self.producer, self.dlq_topic)
        # Learned models before the first envelope (partitions load on assignment).
        await self.states.load_models()
        self.ready.set()

    async def on_stop(self) -> None:
        await self.states.flush()
        await self.states.flush_models()
        await self.producer.stop()
        await self.redis.aclose()

    async def handle(
        self, payload: bytes, partition: int, offset: int | None = None, ack: Ack | None = None
    ) -> int:
        """Process one envelope (at `offset` of `partition`; `ack` once it is checkpointed);
        returns how many events it held."""
        await self.ready.wait()
        async with self.states.hold(partition, offset, ack) as store:
            if store is None:
                return 0  # already held by the loaded state, or no longer this worker's
            return await self._handle(payload, partition, store, offset)

    async def _handle(
        self, payload: bytes, partition: int, store: StateStore, offset: int | None
    ) -> int:
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
        source = None if offset is None else (f"{self.source}/{partition}", offset)
        await self._write(decisions, len(events), source)
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

    async def _write(
        self, decisions: list[Decision], events: int, source: tuple[str, int] | None
    ) -> None:
        async def write() -> None:
            await self.decisions.write(decisions, events_processed=events, source=source)

        # Redis down: hold this envelope (and so its offset) until it is back, never skip it.
        await until_done(
            write,
            retry_on=(RedisError, OSError),
            event="worker.redis_unavailable",
            max_backoff_s=MAX_BACKOFF_S,
        )
