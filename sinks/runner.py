"""Alerts from `gatewatch.alerts` to one sink: batching, retries, dead letters, a durable cursor.

The cursor is the sink's consumer group offset (`gatewatch-sink-<name>`), committed only once every
alert of a batch is delivered or dead-lettered (Vector's `Delivered`): a restart resumes at the
first batch not finished, so nothing is lost or skipped (a batch cut off mid-way is sent again:
alert ids are stable, receivers deduplicate on them). A receiver that is down holds the cursor and
the topic backs up (`gatewatch_sink_lag` grows); nothing is dropped. Only the alerts the sink names
in `Delivery.retry` are resent, after a capped, jittered exponential backoff (at least the
receiver's Retry-After); the ones it rejects go to the dead-letter topic with the reason, as do
records on the topic that are not alerts.

With `max_in_flight` above 1 several batches are sent at once and committed in fetch order, so the
cursor still never passes an unfinished batch.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from pipeline.alerts import Alert
from pipeline.events import Reject
from pipeline.kafka import DeadLetters, KafkaUnavailable
from pipeline.retry import until_done
from sinks.base import Delivery, Sink
from sinks.metrics import SinkMetrics

__all__ = ["Backoff", "BatchLimits", "SinkRunner"]

log = structlog.get_logger(__name__)
IDLE_FETCH_S = 1.0  # an empty fetch returns after this long, so the lag gauge stays fresh
LAG_REFRESH_S = 1.0


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_alerts: int = 500
    max_bytes: int = 4 * 1024 * 1024
    linger_s: float = 0.2


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential from `initial_s`, capped at `max_s`, with half of each wait jittered (many
    sinks retrying one receiver do not come back in step); a Retry-After is a floor, up to
    `max_retry_after_s`."""

    initial_s: float = 0.2
    max_s: float = 30.0
    max_retry_after_s: float = 300.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        ceiling = min(self.max_s, self.initial_s * 2 ** min(attempt - 1, 30))
        wait = ceiling / 2 + rng.random() * ceiling / 2
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after_s))
        return wait


@dataclass(slots=True)
class _Batch:
    alerts: list[Alert] = field(default_factory=list)
    raw: dict[str, bytes] = field(default_factory=dict)  # id -> the record's bytes, for the DLQ
    malformed: list[Reject] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to commit
    records: int = 0
    nbytes: int = 0


@dataclass(slots=True)
class Totals:
    delivered: int = 0
    retried: int = 0
    rejected: int = 0
    malformed: int = 0
    batches: int = 0


class SinkRunner:
    def __init__(
        self,
        sink: Sink,
        consumer: AIOKafkaConsumer,
        dead_letters: DeadLetters,
        metrics: SinkMetrics,
        *,
        limits: BatchLimits | None = None,
        backoff: Backoff | None = None,
        max_in_flight: int = 1,
        seed: int | None = None,
    ) -> None:
        self.sink = sink
        self.consumer = consumer
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.limits = BatchLimits() if limits is None else limits
        self.backoff = Backoff() if backoff is None else backoff
        self.max_in_flight = max_in_flight
        self.totals = Totals()
        self._rng = random.Random(seed)
        # Per partition, the first offset not yet delivered or dead-lettered (the lag's base).
        self._cursor: dict[TopicPartition, int] = {}
        self._lag_at = 0.0
        self._log = log.bind(sink=sink.name)
        # Every series exists from the start (at 0), so rates and alert rules see it.
        for outcome in ("delivered", "retried", "rejected"):
            metrics.alerts.labels(sink.name, outcome)
        metrics.dead_letters.labels(sink.name)
        metrics.batch_seconds.labels(sink.name)
        metrics.lag.labels(sink.name)

    async def run(self) -> None:
        """Deliver until cancelled (a cancelled batch is not committed: it is sent again)."""
        inflight: deque[tuple[_Batch, asyncio.Task[None]]] = deque()
        try:
            while True:
                while inflight and inflight[0][1].done():
                    batch, task = inflight.popleft()
                    task.result()
                    await self._commit(batch)
                if len(inflight) >= self.max_in_flight:
                    await asyncio.wait([inflight[0][1]])
                    continue
                batch = await self._fetch(idle_s=0.05 if inflight else IDLE_FETCH_S)
                if batch.records:
                    inflight.append((batch, asyncio.create_task(self._deliver(batch))))
                else:
                    await self._refresh_lag()
        finally:
            for _, task in inflight:
                task.cancel()
            await asyncio.gather(*(t for _, t in inflight), return_exceptions=True)

    async def step(self, idle_s: float = IDLE_FETCH_S) -> int:
        """One batch: fetch, deliver, dead-letter, commit; returns the records it handled."""
        batch = await self._fetch(idle_s=idle_s)
        if batch.records:
            await self._deliver(batch)
            await self._commit(batch)
        await self._refresh_lag(force=True)
        return batch.records

    async def _fetch(self, *, idle_s: float) -> _Batch:
        """Records until the batch is full (count or bytes) or has lingered long enough."""
        limits = self.limits
        batch = _Batch()
        loop = asyncio.get_running_loop()
        deadline = 0.0
        seen: dict[str, int] = {}  # alert id -> its place in the batch
        while batch.records < limits.max_alerts and batch.nbytes < limits.max_bytes:
            wait_s = deadline - loop.time() if batch.records else idle_s
            if batch.records and wait_s <= 0:
                break
            fetched = await self.consumer.getmany(
                timeout_ms=max(0, int(wait_s * 1000)),
                max_records=limits.max_alerts - batch.records,
            )
            if not fetched:
                break
            if not batch.records:
                deadline = loop.time() + limits.linger_s
            for tp, records in fetched.items():
                for record in records:
                    self._add(batch, tp, record, seen)
        return batch

    def _add(
        self, batch: _Batch, tp: TopicPartition, record: ConsumerRecord, seen: dict[str, int]
    ) -> None:
        batch.records += 1
        batch.offsets[tp] = record.offset + 1
        self._cursor.setdefault(tp, record.offset)  # where this runner started on tp
        value = record.value
        batch.nbytes += len(value) if value else 0
        where = f"{tp.topic}/{tp.partition}@{record.offset}"
        if not value:
            batch.malformed.append(Reject(source="alert", reason=f"{where}: empty record", raw=b""))
            return
        try:
            alert = Alert.from_json(value)
        except ValidationError as exc:
            first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
            path = ".".join(str(p) for p in first["loc"])
            reason = f"{where}: not an alert ({exc.error_count()} errors; {path}: {first['msg']})"
            batch.malformed.append(Reject(source="alert", reason=reason, raw=value))
            return
        at = seen.get(alert.id)
        if at is not None:
            # The same alert twice in one batch: a worker replay, or a finding window written
            # again when it closed with a higher count. Send it once, the fullest version.
            if (alert.count or 0) > (batch.alerts[at].count or 0):
                batch.alerts[at] = alert
                batch.raw[alert.id] = value
            return
        seen[alert.id] = len(batch.alerts)
        batch.alerts.append(alert)
        batch.raw[alert.id] = value

    async def _deliver(self, batch: _Batch) -> None:
        """Send until every alert is delivered or refused; dead-letter the refused ones."""
        name = self.sink.name
        count = self.metrics.alerts
        pending = batch.alerts
        refused: list[Reject] = list(batch.malformed)
        attempt = 0
        while pending:
            delivery = await self._send(pending)
            retry = set(delivery.retry)
            again = [a for a in pending if a.id in retry]
            rejected = [a for a in pending if a.id in delivery.rejected and a.id not in retry]
            delivered = len(pending) - len(again) - len(rejected)
            for alert in rejected:
                reason = delivery.rejected[alert.id]
                self._log.warning("sink.rejected", alert=alert.id, reason=reason)
                refused.append(Reject(source="alert", reason=reason, raw=batch.raw[alert.id]))
            count.labels(name, "delivered").inc(delivered)
            count.labels(name, "rejected").inc(len(rejected))
            self.totals.delivered += delivered
            self.totals.rejected += len(rejected)
            pending = again
            if not pending:
                break
            attempt += 1
            wait_s = self.backoff.delay(attempt, delivery.retry_after, self._rng)
            count.labels(name, "retried").inc(len(pending))
            self.totals.retried += len(pending)
            self._log.warning(
                "sink.retry",
                n=len(pending),
                reason=delivery.retry_reason,
                attempt=attempt,
                retry_in_s=round(wait_s, 3),
            )
            await self._refresh_lag()
            await asyncio.sleep(wait_s)  # backoff pacing, not synchronisation
        if refused:
            await self._dead_letter(refused)
        self.totals.malformed += len(batch.malformed)
        self.totals.batches += 1

    async def _send(self, alerts: list[Alert]) -> Delivery:
        started = time.perf_counter()
        try:
            return await self.sink.send(alerts)
        except OSError as exc:  # the receiver cannot be reached (timeouts are OSErrors too)
            return Delivery.retry_all(alerts, f"unreachable: {exc!r}")
        except Exception as exc:
            # A sink bug must not drop alerts or kill the process: hold the batch, say so loudly.
            self._log.exception("sink.send_failed", n=len(alerts))
            return Delivery.retry_all(alerts, f"sink failed: {exc!r}")
        finally:
            self.metrics.batch_seconds.labels(self.sink.name).observe(time.perf_counter() - started)

    async def _dead_letter(self, rejects: list[Reject]) -> None:
        await until_done(
            lambda: self.dead_letters.send(rejects, origin=f"sink:{self.sink.name}"),
            retry_on=KafkaUnavailable,
            event="sink.dlq_unavailable",
            max_backoff_s=self.backoff.max_s,
        )
        self.metrics.dead_letters.labels(self.sink.name).inc(len(rejects))

    async def _commit(self, batch: _Batch) -> None:
        # aiokafka retries the retriable errors itself; what is left means the commit is lost.
        offsets = dict(batch.offsets)
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # CommitFailedError, IllegalStateError, a dead coordinator
            # A rebalance while the batch was out (its new owner sends it again), or Kafka gone:
            # the next batch's commit covers this one, and a restart resends it (at least once).
            self._log.warning("sink.commit_lost", error=str(exc), records=batch.records)
            return
        self._cursor.update(offsets)

    async def _refresh_lag(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._lag_at < LAG_REFRESH_S:
            return
        self._lag_at = now
        partitions = list(self.consumer.assignment())
        if not partitions:
            return
        try:
            ends = await self.consumer.end_offsets(partitions)
        except KafkaError:
            return  # the gauge keeps its last value while Kafka is away
        behind = 0
        for tp, listed in ends.items():
            # Tansu answers "latest" with the last batch's base offset; a fetch's highwater is
            # exact but only as fresh as the last fetch: take whichever is further.
            end = max(listed, self.consumer.highwater(tp) or 0)
            done = self._cursor.get(tp)
            if done is None:
                try:
                    done = await self.consumer.position(tp)
                except KafkaError:
                    continue
            behind += max(0, end - done)
        self.metrics.lag.labels(self.sink.name).set(behind)
