"""PartitionStates when Redis fails or another worker has taken a partition (a stand-in for the
checkpoint store; the real one is exercised in tests/integration/test_checkpoints.py)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from detectors import Fusion, default_detectors
from detectors.state_codec import StateCodec
from pipeline.worker.checkpoints import CheckpointMetrics, Claim, Loaded
from pipeline.worker.ownership import PartitionStates
from pipeline.worker.processor import Processor
from pipeline.worker.store import StateStore, SubjectBudget
from tests.unit.conftest import T0_MS, make_event


class FlakyCheckpoints:
    """Claims and loads nothing; `save` fails while `down`, answers None while `fenced`."""

    def __init__(self) -> None:
        self.codec = StateCodec(default_detectors())
        self.metrics = CheckpointMetrics(CollectorRegistry())
        self.generation = 0
        self.down = False
        self.fenced = False
        self.saved: list[tuple[int, int, set[str], set[str]]] = []

    async def claim(self, partition: int) -> Claim:
        self.generation += 1
        return Claim(self.generation - 1, self.generation)

    async def load(self, partition: int, store: StateStore, generation: int) -> Loaded:
        return Loaded()

    async def save(self, partition: int, generation: int, offset: int, states: list[Any],
                   dropped: Any) -> int | None:  # fmt: skip
        if self.down:
            raise RedisConnectionError("Redis is away")
        if self.fenced:
            return None
        self.saved.append((partition, offset, set(states[::2]), set(dropped)))
        return sum(len(x) for x in states)


async def process(states: PartitionStates, offset: int, ip: str, acked: list[int]) -> None:
    async with states.hold(0, offset, ack=lambda: acked.append(offset)) as store:
        assert store is not None
        Processor(default_detectors(), Fusion()).process(
            [make_event(ts_ms=T0_MS + offset, client_ip=ip)], store
        )


async def test_a_failed_write_acknowledges_nothing_and_is_written_later() -> None:
    checkpoints = FlakyCheckpoints()
    states = PartitionStates(SubjectBudget(100), checkpoints)  # type: ignore[arg-type]
    await states.assigned([0])
    acked: list[int] = []
    await process(states, 1, "10.0.0.1", acked)
    checkpoints.down = True
    await states.flush()
    await process(states, 2, "10.0.0.2", acked)
    assert acked == [] and checkpoints.saved == []
    assert checkpoints.metrics.flushes.labels(outcome="failed")._value.get() == 1
    checkpoints.down = False
    await states.flush()
    # Everything changed since the last good write, with the latest offset, then the acks.
    assert checkpoints.saved == [(0, 2, {"ip:10.0.0.1", "ip:10.0.0.2"}, set())]
    assert acked == [1, 2]


async def test_a_fenced_worker_gives_the_partition_up() -> None:
    checkpoints = FlakyCheckpoints()
    states = PartitionStates(SubjectBudget(100), checkpoints)  # type: ignore[arg-type]
    await states.assigned([0])
    acked: list[int] = []
    await process(states, 1, "10.0.0.1", acked)
    checkpoints.fenced = True  # another worker claimed partition 0 meanwhile
    await states.flush()
    assert acked == [] and 0 not in states.stores and states.budget.held == 0
    async with states.hold(0, 2, ack=lambda: acked.append(2)) as store:
        assert store is None  # no longer processed here
    assert acked == []


async def test_without_checkpoints_envelopes_are_acknowledged_at_once() -> None:
    states = PartitionStates(SubjectBudget(100))
    await states.assigned([0])
    acked: list[int] = []
    await process(states, 1, "10.0.0.1", acked)
    assert acked == [1]
    await states.revoked()
    await states.assigned([0])
    async with states.hold(0, 2) as store:
        assert store is not None and store.peek("ip:10.0.0.1") is not None  # kept in memory
