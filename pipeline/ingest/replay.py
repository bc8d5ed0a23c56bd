"""What a spool record holds, and how a read of them goes back to Kafka.

A record is one delivery batch: msgpack `[1, received_at_ms, events, dead letters]`, the events
as the field dicts an envelope carries (redacted already: no raw body is ever written to disk),
the dead letters as `[source, reason, raw, origin]` (the raw bytes scrubbed, as on the DLQ).

`Replayer.replay` sends a read's events again, grouped by partition (routed afresh, so a topic
that gained partitions meanwhile is served), each partition's envelopes one after another and
partitions side by side, then the dead letters with their original origin and arrival time. A
batch that was already on its way to Kafka when it was spooled (its `sidecar`, kept in memory)
is first waited for: partitions whose write landed after all are not sent twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from pipeline.envelopes import EventRecord
from pipeline.events import Reject
from pipeline.ingest.spool import Position, SpoolRecord
from pipeline.kafka import DeadLetters, EnvelopeProducer, KafkaUnavailable, Pending
from pipeline.retry import until_done

if TYPE_CHECKING:
    from pipeline.ingest.delivery import SpoolMetrics

__all__ = ["Replayer", "SpooledBatch", "failed"]

log = structlog.get_logger(__name__)
VERSION = 1
_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE = msgspec.msgpack.Decoder().decode


@dataclass(eq=False)
class SpooledBatch:
    """One delivery: what it carries, and while it lives its way to Kafka or the spool."""

    records: list[EventRecord]
    rejects: list[Reject]
    origin: str
    received_at_ms: int
    envelopes: list[Pending] = field(default_factory=list)  # on their way to Kafka
    dead: asyncio.Future[None] | None = None
    spooled: asyncio.Future[None] | None = None  # resolves once fsync'd in the spool

    def encode(self) -> tuple[int, bytes]:
        """(entries, payload) of its spool record."""
        dead = [[r.source, r.reason, r.raw, self.origin] for r in self.rejects]
        payload = _ENCODE([VERSION, self.received_at_ms, self.records, dead])
        return len(self.records) + len(self.rejects), payload


def failed(future: asyncio.Future[None]) -> bool:
    """A finished write that did not succeed."""
    return future.cancelled() or future.exception() is not None


class Replayer:
    """Parameters
    ----------
    metrics
        Where unreadable records and Kafka retries are counted.
    settle_s
        How long to wait for a sidecar's write to end; still pending after that, it counts as
        failed (a resend may duplicate it, never lose it).
    retry_max_s
        Backoff cap while Kafka refuses the replay.
    """

    def __init__(self, *, metrics: SpoolMetrics, settle_s: float, retry_max_s: float) -> None:
        self.metrics = metrics
        self.settle_s = settle_s
        self.retry_max_s = retry_max_s
        self.sidecars: dict[Position, SpooledBatch] = {}

    async def replay(
        self, records: list[SpoolRecord], producer: EnvelopeProducer, dead_letters: DeadLetters
    ) -> tuple[int, int]:
        """Send `records` until Kafka has them all; (entries handled, entries not resent
        because their first write landed)."""
        parts: dict[int, list[EventRecord]] = {}
        dead: list[tuple[Reject, str, int]] = []
        settled = 0
        entries = 0
        for record in records:
            entries += record.entries
            decoded = self._decode(record)
            if decoded is None:
                continue
            received_at, events, rejects = decoded
            batch = self.sidecars.pop(record.position, None)
            lost = await self._failed_partitions(batch) if batch is not None else None
            for event in events:
                p = producer.route(event)
                if lost is None or p in lost:
                    parts.setdefault(p, []).append(event)
                else:
                    settled += 1
            landed = (
                batch is not None and batch.dead is not None and not await self._failed(batch.dead)
            )
            for source, reason, raw, origin in rejects:
                if landed:
                    settled += 1
                else:
                    reject = Reject(source=source, reason=reason, raw=raw)
                    dead.append((reject, origin, received_at))
        size = producer.max_events
        chunks = {
            p: [events[i : i + size] for i in range(0, len(events), size)]
            for p, events in parts.items()
        }
        await until_done(
            lambda: self._send(chunks, dead, producer, dead_letters),
            retry_on=KafkaUnavailable,
            event="delivery.replay_retry",
            max_backoff_s=self.retry_max_s,
            on_retry=lambda _: self.metrics.kafka_retries.inc(),
        )
        return entries, settled

    async def _send(
        self,
        chunks: dict[int, list[list[EventRecord]]],
        dead: list[tuple[Reject, str, int]],
        producer: EnvelopeProducer,
        dead_letters: DeadLetters,
    ) -> None:
        """What was acknowledged is taken off `chunks` and `dead`: a retry resends the rest."""

        async def partition(p: int, queue: list[list[EventRecord]]) -> None:
            while queue:
                await producer.send_envelope(p, queue[0])
                queue.pop(0)

        results = await asyncio.gather(
            *(partition(p, queue) for p, queue in chunks.items()), return_exceptions=True
        )
        while dead:
            # Consecutive rejects of one origin and arrival go in one send.
            _, origin, received_at = dead[0]
            n = 1
            while n < len(dead) and n < 1000 and dead[n][1:] == (origin, received_at):
                n += 1
            group = [reject for reject, _, _ in dead[:n]]
            await dead_letters.send(group, origin=origin, received_at_ms=received_at)
            del dead[:n]
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _failed_partitions(self, batch: SpooledBatch) -> set[int]:
        lost = set()
        for envelope in batch.envelopes:
            if await self._failed(envelope.done):
                lost.add(envelope.partition)
        return lost

    async def _failed(self, future: asyncio.Future[None]) -> bool:
        if not future.done():
            await asyncio.wait([future], timeout=self.settle_s)
        return not future.done() or failed(future)

    def _decode(self, record: SpoolRecord) -> tuple[int, list[EventRecord], list[Any]] | None:
        try:
            version, received_at, events, dead = _DECODE(record.payload)
            if version != VERSION:
                raise ValueError(f"unknown spool record version {version}")
            return received_at, events, dead
        except (ValueError, TypeError, msgspec.DecodeError) as exc:
            # The CRC matched, so this is a record from another version: skipped, said loudly.
            log.error(
                "delivery.unreadable_spool_record", position=str(record.position), error=str(exc)
            )
            self.metrics.corrupt.inc(len(record.payload))
            return None
