"""Kafka first, the disk spool when Kafka is slow: how ingest acknowledges a sender without
losing what it acknowledged.

`deliver(records, rejects, origin)` returns once the events are on the events topic and the
rejects on the dead-letter topic, or, when Kafka has not confirmed within `spool_after_s`, once
they are fsync'd in the spool (`pipeline.ingest.spool`). It raises `SpoolFull` (or `SpoolError`)
only when the spool cannot take them, and `KafkaUnavailable` only when there is no spool: the
caller answers 503 then, and the sender keeps them.

Order, per partition, is the senders' order:
- The first batch that Kafka does not confirm in time switches delivery to spooling. Every batch
  still waiting for Kafka at that moment goes into the spool with it, in the order they were
  handed over, and from then on every new batch goes to the spool, behind them.
- One replayer sends the spool back in order, each partition's envelopes one after another. When
  it has caught up with the last append, new batches go straight to Kafka again.
- A batch that was already on its way to Kafka when it was spooled keeps its envelopes' futures
  (in memory): the replayer first waits for them (at most `settle_s`) and resends only the
  partitions whose write failed, so a slow broker that took it after all causes no duplicate.
  After a restart that knowledge is gone and the whole spool is resent (at-least-once).

While Kafka is healthy the spool costs nothing: no disk write, one dict entry per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.envelopes import EventRecord
from pipeline.events import Reject
from pipeline.ingest.spool import Position, Spool, SpoolError, SpoolFull, SpoolRecord
from pipeline.kafka import DeadLetters, EnvelopeProducer, KafkaUnavailable, Pending
from pipeline.retry import until_done

__all__ = ["Delivery", "SpoolMetrics"]

log = structlog.get_logger(__name__)
T = TypeVar("T")
VERSION = 1
# How late a wait's timeout may fire before it says more about this process than about Kafka.
LATE_S = 0.25
_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE = msgspec.msgpack.Decoder().decode


class SpoolMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.bytes = Gauge(
            "gatewatch_spool_bytes", "Bytes of spool files on disk", registry=registry
        )
        self.records = Gauge(
            "gatewatch_spool_records",
            "Entries (events and dead letters) in the spool, not yet replayed to Kafka",
            registry=registry,
        )
        self.spooled = Counter(
            "gatewatch_spool_spooled_total",
            "Entries acknowledged from the spool because Kafka did not confirm in time",
            registry=registry,
        )
        self.replayed = Counter(
            "gatewatch_spool_replayed_total",
            "Entries replayed from the spool to Kafka",
            registry=registry,
        )
        self.settled = Counter(
            "gatewatch_spool_settled_total",
            "Spooled entries not replayed because their first write reached Kafka after all",
            registry=registry,
        )
        self.full = Counter(
            "gatewatch_spool_full_total",
            "Batches refused (503, or held by a line receiver) because the spool was full",
            registry=registry,
        )
        self.corrupt = Counter(
            "gatewatch_spool_corrupt_bytes_total",
            "Spool bytes skipped as unreadable (a torn write after a crash, disk corruption)",
            registry=registry,
        )
        self.kafka_retries = Counter(
            "gatewatch_spool_kafka_retries_total",
            "Replay rounds retried because Kafka did not confirm",
            registry=registry,
        )


@dataclass(eq=False)
class _Batch:
    records: list[EventRecord]
    rejects: list[Reject]
    origin: str
    received_at_ms: int
    envelopes: list[Pending] = field(default_factory=list)  # on their way to Kafka
    dead: asyncio.Future[None] | None = None
    spooled: asyncio.Future[None] | None = None  # resolves once fsync'd in the spool

    def encode(self) -> tuple[int, bytes]:
        dead = [[r.source, r.reason, r.raw, self.origin] for r in self.rejects]
        payload = _ENCODE([VERSION, self.received_at_ms, self.records, dead])
        return len(self.records) + len(self.rejects), payload


class Delivery:
    """Parameters
    ----------
    producer, dead_letters
        Where events and rejects go.
    spool
        The on-disk spool (opened by `start`); None to answer `KafkaUnavailable` instead.
    spool_after_s
        How long a batch waits for Kafka before it is spooled (with a spool), and
        `kafka_timeout_s` before KafkaUnavailable (without one).
    settle_s
        How long the replayer waits for a spooled batch's first write to succeed or fail.
    """

    def __init__(
        self,
        producer: EnvelopeProducer | None,
        dead_letters: DeadLetters | None,
        *,
        spool: Spool | None = None,
        metrics: SpoolMetrics | None = None,
        spool_after_s: float = 1.0,
        kafka_timeout_s: float = 10.0,
        settle_s: float | None = None,
        replay_bytes: int = 4 << 20,
        retry_max_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.producer = producer
        self.dead_letters = dead_letters
        self.spool = spool
        self.metrics = metrics or SpoolMetrics(CollectorRegistry())
        self.spool_after_s = spool_after_s
        self.kafka_timeout_s = kafka_timeout_s
        self.settle_s = kafka_timeout_s if settle_s is None else settle_s
        self.replay_bytes = replay_bytes
        self.retry_max_s = retry_max_s
        self.clock = clock
        self.spooling = False
        self._inflight: dict[int, _Batch] = {}  # waiting for Kafka, in hand-over order
        self._next = 0
        self._queue: deque[_Batch] = deque()  # waiting to be appended
        self._queued = asyncio.Event()
        self._appended = asyncio.Event()  # set after every append
        self._writing = False
        self._sidecars: dict[Position, _Batch] = {}
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._writer: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._connected = asyncio.Event()
        if producer is not None:
            self._connected.set()

    # -- life --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool; one left non-empty by an earlier run is replayed first, and until
        Kafka is attached everything goes to the spool."""
        if self.spool is None:
            if self.producer is None:
                raise ValueError("without a spool, delivery needs Kafka from the start")
            return
        await self._run(self.spool.open)
        self.metrics.corrupt.inc(self.spool.corrupt_bytes)
        self._gauges()
        self._writer = asyncio.create_task(self._write_loop())
        if not self.spool.empty:
            log.warning(
                "delivery.replaying", records=self.spool.records, dir=str(self.spool.directory)
            )
        if not self.spool.empty or self.producer is None:
            self.spooling = True
            self._start_replayer()

    def attach(self, producer: EnvelopeProducer, dead_letters: DeadLetters) -> None:
        """Kafka is reachable at last: replay what was spooled meanwhile, then go direct."""
        self.producer, self.dead_letters = producer, dead_letters
        self._connected.set()

    async def close(self) -> None:
        """Stop replaying (what is not replayed stays in the spool for the next start) and close
        the spool once everything handed over to it is appended."""
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        if self._writer is not None:
            while self._queue or self._writing:
                self._appended.clear()
                await self._appended.wait()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self.spool is not None:
            await self._run(self.spool.close)
        self._io.shutdown(wait=True)

    async def drained(self, timeout_s: float) -> None:
        """Wait until nothing is left to replay (tests, shutdown)."""
        async with asyncio.timeout(timeout_s):
            while self.spooling:
                self._drained.clear()
                await self._drained.wait()

    # -- deliver -----------------------------------------------------------------------------

    async def deliver(self, records: list[EventRecord], rejects: list[Reject], origin: str) -> None:
        if not records and not rejects:
            return
        batch = _Batch(records, rejects, origin, int(self.clock() * 1000))
        if self.spool is None:
            await self._direct_only(batch)
        elif self.spooling:
            await self._append(batch)
        else:
            await self._direct(batch)

    async def _direct_only(self, batch: _Batch) -> None:
        waits = self._send(batch)
        done, pending = await asyncio.wait(
            waits, timeout=self.kafka_timeout_s, return_when=asyncio.FIRST_EXCEPTION
        )
        if pending or any(_failed(f) for f in done):
            raise KafkaUnavailable(_why(done, pending))

    async def _direct(self, batch: _Batch) -> None:
        waits = self._send(batch)
        key, self._next = self._next, self._next + 1
        self._inflight[key] = batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.spool_after_s
        done, pending = await asyncio.wait(
            waits, timeout=self.spool_after_s, return_when=asyncio.FIRST_EXCEPTION
        )
        if pending and not any(_failed(f) for f in done) and loop.time() - deadline > LATE_S:
            # The timeout itself fired late: this process is busy (parsing a burst), and
            # Kafka's answers may be waiting to be read. That is overload, not a slow broker:
            # spooling would only add work. Wait as long as a spool-less collector would.
            more, pending = await asyncio.wait(
                pending,
                timeout=max(0.0, self.kafka_timeout_s - self.spool_after_s),
                return_when=asyncio.FIRST_EXCEPTION,
            )
            done |= more
        if not pending and not any(_failed(f) for f in done):
            self._inflight.pop(key, None)  # on Kafka (and maybe spooled too: replay skips it)
            return
        if batch.spooled is None:
            self._switch(_why(done, pending))
        assert batch.spooled is not None
        await asyncio.shield(batch.spooled)

    def _send(self, batch: _Batch) -> list[asyncio.Future[None]]:
        # Direct delivery happens only once attached (spooling lasts until then).
        assert self.producer is not None and self.dead_letters is not None
        batch.envelopes = self.producer.enqueue(batch.records)
        waits = [p.done for p in batch.envelopes]
        if batch.rejects:
            batch.dead = self.dead_letters.enqueue(
                batch.rejects, origin=batch.origin, received_at_ms=batch.received_at_ms
            )
            waits.append(batch.dead)
        return waits

    def _switch(self, reason: str) -> None:
        """Spool every batch still waiting for Kafka, in order, and all that come after."""
        self.spooling = True
        batches = list(self._inflight.values())
        self._inflight.clear()
        loop = asyncio.get_running_loop()
        for batch in batches:
            batch.spooled = loop.create_future()
            self._queue.append(batch)
        self._queued.set()
        log.warning("delivery.spooling", reason=reason, batches=len(batches))
        self._start_replayer()

    async def _append(self, batch: _Batch) -> None:
        batch.spooled = asyncio.get_running_loop().create_future()
        self._queue.append(batch)
        self._queued.set()
        await asyncio.shield(batch.spooled)

    async def _write_loop(self) -> None:
        """Group commit: everything queued while the previous fsync ran is one append."""
        assert self.spool is not None
        spool = self.spool
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                self._writing = True
                batches = list(self._queue)
                self._queue.clear()
                fitting: list[_Batch] = []
                items: list[tuple[int, bytes]] = []
                size = 0
                for batch in batches:
                    entries, payload = batch.encode()
                    if spool.fits(size + len(payload)):
                        size += len(payload) + 12
                        fitting.append(batch)
                        items.append((entries, payload))
                    else:
                        self.metrics.full.inc()
                        _resolve(batch.spooled, SpoolFull(f"spool full ({spool.max_bytes} bytes)"))
                try:
                    positions = await self._run(spool.append, items) if items else []
                except SpoolError as exc:
                    log.error("delivery.spool_write_failed", error=str(exc))
                    for batch in fitting:
                        _resolve(batch.spooled, exc)
                else:
                    for batch, position, (entries, _) in zip(
                        fitting, positions, items, strict=True
                    ):
                        if batch.envelopes or batch.dead is not None:
                            self._sidecars[position] = batch
                        self.metrics.spooled.inc(entries)
                        _resolve(batch.spooled, None)
                finally:
                    self._writing = False
                    self._gauges()
                    self._appended.set()

    # -- replay ------------------------------------------------------------------------------

    def _start_replayer(self) -> None:
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.create_task(self._replay_loop())

    async def _replay_loop(self) -> None:
        assert self.spool is not None
        await self._connected.wait()
        while True:
            try:
                records = await self._run(self.spool.read, self.replay_bytes)
                if records:
                    await self._replay(records)
                    continue
            except (OSError, SpoolError) as exc:  # the disk, not Kafka: keep trying, loudly
                log.error("delivery.spool_read_failed", error=str(exc))
                await asyncio.sleep(self.retry_max_s)  # backoff pacing, not synchronisation
                continue
            if self._queue or self._writing:
                self._appended.clear()
                await self._appended.wait()
                continue
            # Caught up with the last append, and nothing is waiting to be appended: new
            # batches may go to Kafka directly from now on (decided before any await).
            self.spooling = False
            self._sidecars.clear()
            self._drained.set()
            log.info("delivery.replayed", detail="spool empty, delivering to Kafka directly")
            return

    async def _replay(self, records: list[SpoolRecord]) -> None:
        assert self.spool is not None and self.producer is not None
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
            batch = self._sidecars.pop(record.position, None)
            failed = await self._failed_partitions(batch) if batch is not None else None
            for event in events:
                p = self.producer.route(event)
                if failed is None or p in failed:
                    parts.setdefault(p, []).append(event)
                else:
                    settled += 1
            dead_landed = (
                batch is not None and batch.dead is not None and not await self._failed(batch.dead)
            )
            for source, reason, raw, origin in rejects:
                if dead_landed:
                    settled += 1
                else:
                    dead.append(
                        (Reject(source=source, reason=reason, raw=raw), origin, received_at)
                    )
        chunks = {
            p: [
                events[i : i + self.producer.max_events]
                for i in range(0, len(events), self.producer.max_events)
            ]
            for p, events in parts.items()
        }
        await until_done(
            lambda: self._send_replay(chunks, dead),
            retry_on=KafkaUnavailable,
            event="delivery.replay_retry",
            max_backoff_s=self.retry_max_s,
            on_retry=lambda _: self.metrics.kafka_retries.inc(),
        )
        replayed = entries - settled
        await self._run(self.spool.commit, records[-1].end, entries, len(records))
        self.metrics.replayed.inc(replayed)
        self.metrics.settled.inc(settled)
        self._gauges()

    async def _send_replay(
        self, chunks: dict[int, list[list[EventRecord]]], dead: list[tuple[Reject, str, int]]
    ) -> None:
        """Each partition's envelopes in order, partitions side by side; what was acknowledged
        is taken off `chunks` and `dead`, so a retry resends only the rest."""
        assert self.producer is not None and self.dead_letters is not None
        producer, dead_letters = self.producer, self.dead_letters

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

    async def _failed_partitions(self, batch: _Batch) -> set[int]:
        failed = set()
        for envelope in batch.envelopes:
            if await self._failed(envelope.done):
                failed.add(envelope.partition)
        return failed

    async def _failed(self, future: asyncio.Future[None]) -> bool:
        """Whether a first write failed, waiting up to `settle_s` for it to end (after which it
        counts as failed: resending may duplicate, never lose)."""
        if not future.done():
            await asyncio.wait([future], timeout=self.settle_s)
        return not future.done() or _failed(future)

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

    # -- helpers -----------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _gauges(self) -> None:
        if self.spool is not None:
            self.metrics.bytes.set(self.spool.disk_bytes)
            self.metrics.records.set(self.spool.entries)


def _failed(future: asyncio.Future[None]) -> bool:
    return future.cancelled() or future.exception() is not None


def _why(done: set[asyncio.Future[None]], pending: set[asyncio.Future[None]]) -> str:
    for future in done:
        if not future.cancelled() and (exc := future.exception()) is not None:
            return str(exc) or type(exc).__name__
    return "Kafka did not confirm in time" if pending else "cancelled"


def _resolve(future: asyncio.Future[None] | None, error: BaseException | None) -> None:
    if future is None or future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
        future.exception()  # retrieved: its caller may be gone
