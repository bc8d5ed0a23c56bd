"""What a worker does with one envelope: decode, detect, write decisions, then let Faust ack it.

The handler returns only after Redis and the decisions topic have the batch's decisions and the
alerts topic its alerts, and Faust acks (so commits) a message only after its handler returned:
at-least-once end to end. State lives in memory, one `StateStore` per partition (and one
`AlertCollector` when alerts are on), dropped when another worker is assigned the partition.
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
from pipeline.alerts import Alert
from pipeline.decisions import Decision, Overrides, RedisDecisions
from pipeline.events import Reject
from pipeline.kafka import DeadLetters
from pipeline.retry import until_done
from pipeline.worker.alerting import AlertCollector
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.processor import Processor, StateStore
from sinks.kafka import KafkaDecisionSink

__all__ = ["WorkerRuntime"]

log = structlog.get_logger(__name__)
MAX_BACKOFF_S = 5.0
OVERRIDES_REFRESH_S = 5.0
ALERT_SWEEP_S = 5.0


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
        overrides: Overrides | None = None,
        alerts_topic: str | None = None,
        alert_window_s: float = 60.0,
        metrics: WorkerMetrics | None = None,
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
        self.overrides = overrides
        self.stores: dict[int, StateStore] = {}
        self.ready = asyncio.Event()
        # Alerts: None writes none (the throughput bench's "alerts off").
        self.alerts_topic = alerts_topic
        self.alert_window_s = alert_window_s
        self.collectors: dict[int, AlertCollector] = {}
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self.metrics.subjects.set_function(lambda: sum(len(s) for s in self.stores.values()))

    @Service.timer(OVERRIDES_REFRESH_S)
    async def _refresh_overrides(self) -> None:
        """An operator's allow-override must also stop new decisions, not only their enforcement."""
        if self.overrides is None:
            return
        try:
            current = await self.overrides.all()
        except (RedisError, OSError) as exc:
            log.warning("worker.overrides_unavailable", error=str(exc))
            return  # keep the last known set
        self.processor.allowed = frozenset(current["allow"])

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
        for p in set(self.collectors) - partitions:
            del self.collectors[p]  # its open finding windows were reported when they opened

    async def handle(self, payload: bytes, partition: int) -> int:
        """Process one envelope; returns how many events it held."""
        await self.ready.wait()
        store = self.stores.get(partition)
        if store is None:
            store = self.stores[partition] = StateStore(self.max_subjects)
        collector = self._collector(partition, store)
        alerts: list[Alert] = []
        try:
            events = envelopes.decode(payload)
            if collector is not None:
                collector.begin(events)
            decisions = self.processor.process(events, store, report=collector)
            if collector is not None:
                alerts = collector.take()
        except envelopes.EnvelopeError as exc:
            await self._dead_letter(payload, partition, str(exc), "bad_envelope")
            return 0
        except Exception as exc:
            # A poison envelope must not stop the partition: park it with the cause and go on.
            log.exception("worker.processing_failed", partition=partition)
            await self._dead_letter(
                payload, partition, f"processing failed: {exc!r}", "processing_failed"
            )
            return 0
        await self._write(decisions, len(events))
        if decisions or alerts:
            # Both before returning: the envelope's offset is committed only after.
            await asyncio.gather(self.sink.publish(decisions), self._publish(alerts))
        self.metrics.envelope(events, decisions, alerts)
        if decisions:
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

    def _collector(self, partition: int, store: StateStore) -> AlertCollector | None:
        if self.alerts_topic is None:
            return None
        collector = self.collectors.get(partition)
        if collector is None or collector.store is not store:
            collector = self.collectors[partition] = AlertCollector(
                self.processor, store, partition=partition, window_s=self.alert_window_s
            )
        return collector

    async def _publish(self, alerts: list[Alert]) -> None:
        """Returns once the broker has every alert, each keyed by its subject."""
        if not alerts:
            return
        assert self.alerts_topic is not None
        futures = [
            await self.producer.send(self.alerts_topic, a.to_json(), key=a.subject.encode())
            for a in alerts
        ]
        await asyncio.gather(*futures)

    @Service.timer(ALERT_SWEEP_S)
    async def _sweep_alerts(self) -> None:
        """Report finding windows that closed on partitions gone quiet (their final counts)."""
        now_ms = int(time.time() * 1000)
        alerts = [a for c in list(self.collectors.values()) for a in c.sweep(now_ms)]
        if not alerts:
            return
        try:
            await self._publish(alerts)
        except Exception as exc:  # the windows' first reports are out already: log, go on
            log.warning("worker.alerts_sweep_failed", alerts=len(alerts), error=repr(exc))
            return
        self.metrics.emitted(alerts)

    async def _dead_letter(self, payload: bytes, partition: int, reason: str, cause: str) -> None:
        log.warning("worker.bad_envelope", partition=partition, reason=reason)
        reject = Reject(source="envelope", reason=reason, raw=payload)
        await self.dead_letters.send([reject], origin=f"partition:{partition}")
        self.metrics.dead_letter(cause)

    async def _write(self, decisions: list[Decision], events: int) -> None:
        # Redis down: hold this envelope (and so its offset) until it is back, never skip it.
        await until_done(
            lambda: self.decisions.write(decisions, events_processed=events),
            retry_on=(RedisError, OSError),
            event="worker.redis_unavailable",
            max_backoff_s=MAX_BACKOFF_S,
        )
