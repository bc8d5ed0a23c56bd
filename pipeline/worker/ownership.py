"""The partitions a worker owns and their subject states, kept in step with Kafka and Redis.

- On assignment, each partition is claimed and its checkpoint loaded *before* any envelope of it is
  processed: `hold` waits until the whole assignment is loaded (Faust may already be fetching).
  A partition the worker keeps across a rebalance, that nobody else claimed meanwhile, keeps its
  memory as is.
- Each envelope is processed under `hold`, which skips one the state already holds (its offset is
  at or below the store's) and records the new offset once its effects are written.
- Every `flush` (about a second) writes each partition's changed states and offset in one step
  (`Checkpoints.save`); only then are the envelopes it covers acknowledged to Faust, so the
  committed Kafka offset never passes the checkpoint: whoever loads it next resumes exactly there,
  replayed envelopes are skipped, nothing is counted twice or lost.
- On revoke, processing stops, the envelope in flight finishes and everything is flushed; the
  next assignment drops the partitions that went elsewhere.

Without `checkpoints` (turned off) states live in memory only and envelopes are acknowledged as
soon as they are processed, as before checkpoints existed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import RedisError

from pipeline.worker.checkpoints import CheckpointMetrics, Checkpoints
from pipeline.worker.store import StateStore, SubjectBudget

__all__ = ["PartitionStates"]

log = structlog.get_logger(__name__)
Ack = Callable[[], Any]
_REDIS_DOWN = (RedisError, OSError)
MAX_BACKOFF_S = 5.0


@dataclass(slots=True)
class _Owned:
    generation: int = 0
    saved_offset: int = -1  # the offset the checkpoint in Redis holds
    saved_at: float = field(default_factory=time.monotonic)
    bytes: int = 0
    acks: list[tuple[int, Ack]] = field(default_factory=list)  # processed, not yet checkpointed


@dataclass(slots=True)
class _Snapshot:
    partition: int
    generation: int
    offset: int
    states: list[str | bytes]  # subject, encoded state, subject, ...
    changed: set[str]
    dropped: set[str]
    acks: list[tuple[int, Ack]]


class PartitionStates:
    """Owns the `StateStore` of each assigned partition under one `SubjectBudget`."""

    def __init__(
        self,
        budget: SubjectBudget,
        checkpoints: Checkpoints | None = None,
        metrics: CheckpointMetrics | None = None,
    ) -> None:
        self.budget = budget
        self.checkpoints = checkpoints
        self.metrics = metrics if metrics is not None else (
            checkpoints.metrics if checkpoints is not None else None
        )
        self.stores: dict[int, StateStore] = {}
        self._owned: dict[int, _Owned] = {}
        self._open = asyncio.Event()  # set while the current assignment is loaded
        self._busy = asyncio.Lock()  # an envelope in flight, or a snapshot being taken
        self._flushing = asyncio.Lock()  # one writer of checkpoints at a time
        self.model_bytes = 0
        if self.metrics is not None:
            self.metrics.age.set_function(self.age_s)
            self.metrics.bytes.set_function(
                lambda: sum(o.bytes for o in self._owned.values()) + self.model_bytes
            )

    def age_s(self) -> float:
        """Seconds since the least recently checkpointed partition was last known saved."""
        now = time.monotonic()
        return max((now - o.saved_at for o in self._owned.values()), default=0.0)

    # -- processing --------------------------------------------------------------------------------
    @asynccontextmanager
    async def hold(
        self, partition: int, offset: int | None = None, ack: Ack | None = None
    ) -> AsyncIterator[StateStore | None]:
        """The partition's store for processing one envelope, or None when the envelope must
        not be processed (the partition is not this worker's, or its state already holds it)."""
        while True:
            await self._open.wait()
            await self._busy.acquire()
            if self._open.is_set():
                break
            self._busy.release()  # a rebalance started meanwhile: wait for its assignment
        try:
            store = self.stores.get(partition)
            if store is None:
                yield None  # the rebalance gave it to another worker: not acknowledged here
                return
            if offset is not None and offset <= store.offset:
                if self.metrics is not None:
                    self.metrics.replays.inc()
                self._processed(partition, offset, ack)
                yield None
                return
            yield store
            # Reached only when processing (effects included) did not raise.
            if offset is not None:
                store.offset = offset
            self._processed(partition, offset, ack)
        finally:
            self._busy.release()

    def _processed(self, partition: int, offset: int | None, ack: Ack | None) -> None:
        if ack is None:
            return
        owned = self._owned[partition]
        if self.checkpoints is None or offset is None or offset <= owned.saved_offset:
            ack()
        else:
            owned.acks.append((offset, ack))

    # -- rebalances --------------------------------------------------------------------------------
    async def revoked(self) -> None:
        """Stop processing, let the envelope in flight finish, checkpoint everything."""
        self._open.clear()
        log.info("worker.partitions_revoked", partitions=sorted(self.stores))
        await self.flush()

    async def assigned(self, partitions: Iterable[int]) -> None:
        """Drop the partitions that went elsewhere, claim and load the new ones, then let
        processing resume."""
        assigned = set(partitions)
        async with self._flushing, self._busy:
            for p in [p for p in self.stores if p not in assigned]:
                self._drop(p, "moved")
            await asyncio.gather(*(self._take(p) for p in sorted(assigned)))
        self._open.set()

    async def _take(self, partition: int) -> None:
        if self.checkpoints is None:
            if partition not in self.stores:
                self.stores[partition] = StateStore(budget=self.budget)
                self._owned[partition] = _Owned()
            return
        checkpoints = self.checkpoints
        delay = 0.1
        while True:
            store: StateStore | None = None
            try:
                claim = await checkpoints.claim(partition)
                kept = self._owned.get(partition)
                if kept is not None and claim.previous == kept.generation:
                    kept.generation = claim.generation  # nobody else had it: memory is current
                    log.info("checkpoint.kept", partition=partition, generation=claim.generation)
                    return
                if kept is not None:
                    self._drop(partition, "claimed elsewhere meanwhile")
                started = time.monotonic()
                store = StateStore(budget=self.budget, track_changes=True)
                loaded = await checkpoints.load(partition, store, claim.generation)
            except _REDIS_DOWN as exc:
                log.warning("checkpoint.load_unavailable", partition=partition, error=str(exc),
                            retry_in_s=delay)  # fmt: skip
                if store is not None:
                    store.close()  # half loaded: start again
                await asyncio.sleep(delay)  # backoff pacing, not synchronisation
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            self.stores[partition] = store
            self._owned[partition] = _Owned(
                generation=claim.generation, saved_offset=loaded.offset, bytes=loaded.bytes
            )
            log.info(
                "checkpoint.loaded", partition=partition, subjects=loaded.subjects,
                offset=loaded.offset, generation=claim.generation,
                ms=round((time.monotonic() - started) * 1000, 1),
            )  # fmt: skip
            return

    def _drop(self, partition: int, why: str) -> None:
        store = self.stores.pop(partition, None)
        self._owned.pop(partition, None)
        if store is not None:
            log.info("worker.partition_dropped", partition=partition, subjects=len(store), why=why)
            store.close()

    # -- checkpoints -------------------------------------------------------------------------------
    async def flush(self) -> None:
        """Write every partition's changes; acknowledge the envelopes each write covers."""
        if self.checkpoints is None:
            return
        async with self._flushing:
            async with self._busy:
                snapshots = [s for p in list(self.stores) if (s := self._snapshot(p)) is not None]
            for snapshot in snapshots:
                await self._write(snapshot)

    def _snapshot(self, partition: int) -> _Snapshot | None:
        assert self.checkpoints is not None
        store, owned = self.stores[partition], self._owned[partition]
        changed, dropped = store.take_changes()
        if not changed and not dropped and store.offset == owned.saved_offset:
            owned.saved_at = time.monotonic()  # nothing unsaved
            return None
        encode = self.checkpoints.codec.encode
        peek = store.peek
        states: list[str | bytes] = []
        for subject in changed:
            state = peek(subject)
            if state is not None:
                states += (subject, encode(state))
        acks, owned.acks = owned.acks, []
        return _Snapshot(partition, owned.generation, store.offset, states, changed, dropped, acks)

    async def _write(self, snap: _Snapshot) -> None:
        assert self.checkpoints is not None and self.metrics is not None
        p = snap.partition
        try:
            delta = await self.checkpoints.save(
                p, snap.generation, snap.offset, snap.states, snap.dropped
            )
        except _REDIS_DOWN as exc:
            self.metrics.flushes.labels(outcome="failed").inc()
            log.warning("checkpoint.flush_failed", partition=p, error=str(exc))
            self._retry_later(snap)
            return
        owned = self._owned.get(p)
        if delta is None:
            self.metrics.flushes.labels(outcome="fenced").inc()
            log.warning("checkpoint.fenced", partition=p, generation=snap.generation)
            if owned is not None and owned.generation == snap.generation:
                self._drop(p, "another worker claimed it")
            return
        self.metrics.flushes.labels(outcome="ok").inc()
        if owned is not None and owned.generation == snap.generation:
            owned.saved_offset = max(owned.saved_offset, snap.offset)
            owned.saved_at = time.monotonic()
            owned.bytes += delta
        for _, ack in snap.acks:
            ack()

    def _retry_later(self, snap: _Snapshot) -> None:
        """Put a failed write's changes back, so the next flush writes them (fresh)."""
        store, owned = self.stores.get(snap.partition), self._owned.get(snap.partition)
        if store is None or owned is None or owned.generation != snap.generation:
            return
        if store.changed is not None and store.dropped is not None:
            store.changed |= {s for s in snap.changed if store.peek(s) is not None}
            store.dropped |= snap.dropped - set(store)
        owned.acks[:0] = snap.acks

    async def flush_models(self) -> None:
        if self.checkpoints is None:
            return
        try:
            self.model_bytes = await self.checkpoints.save_models()
        except _REDIS_DOWN as exc:
            log.warning("checkpoint.models_flush_failed", error=str(exc))
            if self.metrics is not None:
                self.metrics.flushes.labels(outcome="failed").inc()

    async def load_models(self) -> None:
        """Load the group's learned models (waiting for Redis if it is away)."""
        if self.checkpoints is None:
            return
        checkpoints = self.checkpoints
        delay = 0.1
        while True:
            try:
                loaded = await checkpoints.load_models()
            except _REDIS_DOWN as exc:
                log.warning("checkpoint.models_unavailable", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)  # backoff pacing, not synchronisation
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            log.info("checkpoint.models_loaded", models=loaded)
            return
