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

While Kafka is healthy the spool costs nothing: no disk write, one dict entry per batch. A wait
whose timeout fires late (this process was busy, e.g. parsing a burst) is taken for overload,
not for a slow broker: the batch waits on, as without a spool, rather than add disk work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.envelopes import EventRecord
from pipeline.events import Reject
from pipeline.ingest.replay import Replayer, SpooledBatch, failed
from pipeline.ingest.spool import Spool, SpoolError, SpoolFull, SpoolRecord
from pipeline.kafka import DeadLetters, EnvelopeProducer, KafkaUnavailable

__all__ = ["Delivery", "SpoolMetrics"]

log = structlog.get_logger(__name__)
T = TypeVar("T")
# How late a wait's timeout may fire before it says more about this process than about Kafka.
LATE_S = 0.25


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
        self._inflight: dict[int, SpooledBatch] = {}  # waiting for Kafka, in hand-over order
        self._next = 0
        self._queue: deque[SpooledBatch] = deque()  # waiting to be appended
        self._queued = asyncio.Event()
        self._appended = asyncio.Event()  # set after every append
        self._writing = False
        self.replayer = Replayer(
            metrics=self.metrics, settle_s=self.settle_s, retry_max_s=retry_max_s
        )
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._writer: asyncio.Task[None] | None = None
        self._replaying: asyncio.Task[None] | None = None
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
        if self._replaying is not None:
            self._replaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replaying
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
        batch = SpooledBatch(records, rejects, origin, int(self.clock() * 1000))
        if self.spool is None:
            await self._direct_only(batch)
        elif self.spooling:
            await self._append(batch)
        else:
            await self._direct(batch)

    async def _direct_only(self, batch: SpooledBatch) -> None:
        waits = self._send(batch)
        done, pending = await asyncio.wait(
            waits, timeout=self.kafka_timeout_s, return_when=asyncio.FIRST_EXCEPTION
        )
        if pending or any(failed(f) for f in done):
            raise KafkaUnavailable(_why(done, pending))

    async def _direct(self, batch: SpooledBatch) -> None:
        waits = self._send(batch)
        key, self._next = self._next, self._next + 1
        self._inflight[key] = batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.spool_after_s
        done, pending = await asyncio.wait(
            waits, timeout=self.spool_after_s, return_when=asyncio.FIRST_EXCEPTION
        )
        if pending and not any(failed(f) for f in done) and loop.time() - deadline > LATE_S:
            # The timeout itself fired late: this process is busy (parsing a burst), and
            # Kafka's answers may be waiting to be read. That is overload, not a slow broker:
            # spooling would only add work. Wait as long as a spool-less collector would.
            more, pending = await asyncio.wait(
                pending,
                timeout=max(0.0, self.kafka_timeout_s - self.spool_after_s),
                return_when=asyncio.FIRST_EXCEPTION,
            )
            done |= more
        if not pending and not any(failed(f) for f in done):
            self._inflight.pop(key, None)  # on Kafka (and maybe spooled too: replay skips it)
            return
        if batch.spooled is None:
            self._switch(_why(done, pending))
        assert batch.spooled is not None
        await asyncio.shield(batch.spooled)

    def _send(self, batch: SpooledBatch) -> list[asyncio.Future[None]]:
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

    async def _append(self, batch: SpooledBatch) -> None:
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
                fitting: list[SpooledBatch] = []
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
                            self.replayer.sidecars[position] = batch
                        self.metrics.spooled.inc(entries)
                        _resolve(batch.spooled, None)
                finally:
                    self._writing = False
                    self._gauges()
                    self._appended.set()

    # -- replay ------------------------------------------------------------------------------

    def _start_replayer(self) -> None:
        if self._replaying is None or self._replaying.done():
            self._replaying = asyncio.create_task(self._replay_loop())

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
            self.replayer.sidecars.clear()
            self._drained.set()
            log.info("delivery.replayed", detail="spool empty, delivering to Kafka directly")
            return

    async def _replay(self, records: list[SpoolRecord]) -> None:
        assert self.spool is not None
        assert self.producer is not None and self.dead_letters is not None
        entries, settled = await self.replayer.replay(records, self.producer, self.dead_letters)
        await self._run(self.spool.commit, records[-1].end, entries, len(records))
        self.metrics.replayed.inc(entries - settled)
        self.metrics.settled.inc(settled)
        self._gauges()

    # -- helpers -----------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _gauges(self) -> None:
        if self.spool is not None:
            self.metrics.bytes.set(self.spool.disk_bytes)
            self.metrics.records.set(self.spool.entries)


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
