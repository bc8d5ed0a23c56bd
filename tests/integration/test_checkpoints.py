"""Checkpoints in a real Redis: states and offsets come back on assignment before any envelope is
processed; corrupt, foreign and old-version checkpoints are skipped and counted, never loaded; a
previous owner cannot overwrite its successor's checkpoint; envelopes are acknowledged only once
a checkpoint holds them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from detectors import Fusion, default_detectors
from detectors.state import SubjectState
from detectors.state_codec import StateCodec
from pipeline.config import Settings
from pipeline.worker.checkpoints import FORMAT_VERSION, CheckpointMetrics, Checkpoints
from pipeline.worker.ownership import PartitionStates
from pipeline.worker.processor import Processor
from pipeline.worker.store import StateStore, SubjectBudget
from tests.unit.conftest import T0_MS, make_event

TOPIC = "gatewatch.events"


def checkpoints_for(settings: Settings, redis: Redis, group: str = "g") -> Checkpoints:
    return Checkpoints(
        redis,
        StateCodec(default_detectors()),
        prefix=settings.redis_prefix,
        group=group,
        topic=TOPIC,
        ttl_s=600,
        metrics=CheckpointMetrics(CollectorRegistry()),
    )


def skipped(checkpoints: Checkpoints, reason: str) -> float:
    return checkpoints.metrics.skipped.labels(reason=reason)._value.get()


def logins(ip: str, n: int, start_ms: int = T0_MS) -> list:
    return [
        make_event(ts_ms=start_ms + i * 100, client_ip=ip, method="POST", path="/v1/auth/login",
                   route="/v1/auth/login", status=401)
        for i in range(n)
    ]


@pytest.fixture
async def ckpt(settings: Settings, redis: Redis) -> AsyncIterator[Checkpoints]:
    yield checkpoints_for(settings, redis)


async def save_states(ckpt: Checkpoints, partition: int, states: dict[str, SubjectState],
                      offset: int) -> int:  # fmt: skip
    claim = await ckpt.claim(partition)
    encoded = [x for s, state in states.items() for x in (s, ckpt.codec.encode(state))]
    assert await ckpt.save(partition, claim.generation, offset, encoded, []) is not None
    return claim.generation


async def test_states_and_offset_round_trip(ckpt: Checkpoints, redis: Redis) -> None:
    store = StateStore(100)
    Processor(default_detectors(), Fusion()).process(logins("198.51.100.7", 12), store)
    await save_states(ckpt, 3, dict(store.items()), offset=41)
    loaded_into = StateStore(100, track_changes=True)
    claim = await ckpt.claim(3)
    loaded = await ckpt.load(3, loaded_into, claim.generation)
    assert (loaded.offset, loaded.subjects, loaded.skipped) == (41, len(store), {})
    assert loaded_into.offset == 41
    for subject, state in store.items():
        assert ckpt.codec.encode(loaded_into.peek(subject)) == ckpt.codec.encode(state)
    assert loaded_into.take_changes() == (set(), set())  # loading is not a change to write back
    ttl = await redis.pttl(ckpt.key(3))
    assert 0 < ttl <= 600_000


async def test_a_corrupt_state_is_skipped_and_deleted_at_the_next_write(
    ckpt: Checkpoints, redis: Redis
) -> None:
    good = StateStore(10)
    good.get("ip:10.0.0.1").w_requests = 4
    gen = await save_states(ckpt, 0, dict(good.items()), offset=5)
    await redis.hset(ckpt.key(0), "ip:10.0.0.2", b"\x93\x01\x02")  # msgpack, not a state
    await redis.hset(ckpt.key(0), "ip:10.0.0.3", b"\xc1 not msgpack at all")
    store = StateStore(10, track_changes=True)
    claim = await ckpt.claim(0)
    assert claim.previous == gen
    loaded = await ckpt.load(0, store, claim.generation)
    assert loaded.subjects == 1 and store.peek("ip:10.0.0.1").w_requests == 4
    assert loaded.skipped == {"corrupt": 2} and skipped(ckpt, "corrupt") == 2
    _, dropped = store.take_changes()
    assert dropped == {"ip:10.0.0.2", "ip:10.0.0.3"}
    await ckpt.save(0, claim.generation, 6, [], dropped)
    assert sorted(await redis.hkeys(ckpt.key(0))) == sorted(
        f.encode() for f in ("~v", "~id", "~offset", "~gen", "~t", "~owner", "ip:10.0.0.1")
    )


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("~v", str(FORMAT_VERSION - 1), "version"),  # an older worker's format
        ("~v", "99", "version"),
        ("~id", f"other-group/{TOPIC}/0", "foreign"),  # another group's, copied or misnamed
        ("~id", f"g/{TOPIC}/1", "foreign"),  # another partition's
        ("~offset", "eleven", "corrupt"),
    ],
)
async def test_an_unreadable_checkpoint_is_skipped_whole_and_emptied(
    ckpt: Checkpoints, redis: Redis, field: str, value: str, reason: str
) -> None:
    state = SubjectState()
    state.auth_failures = 9.0
    await save_states(ckpt, 0, {"ip:10.0.0.9": state}, offset=10)
    await redis.hset(ckpt.key(0), field, value)
    store = StateStore(10, track_changes=True)
    claim = await ckpt.claim(0)
    loaded = await ckpt.load(0, store, claim.generation)
    assert (loaded.subjects, loaded.offset, len(store)) == (0, -1, 0)
    assert loaded.skipped == {reason: 1} and skipped(ckpt, reason) == 1
    # What cannot be read is not kept around: only the new owner's claim remains.
    assert await redis.hgetall(ckpt.key(0)) == {b"~gen": str(claim.generation).encode()}


async def test_a_previous_owner_cannot_overwrite_its_successor(ckpt: Checkpoints) -> None:
    old = await ckpt.claim(1)
    new = await ckpt.claim(1)  # another worker was assigned the partition
    assert new.previous == old.generation and new.generation > old.generation
    state = SubjectState()
    state.w_requests = 1
    raw = ckpt.codec.encode(state)
    written = await ckpt.save(1, new.generation, 20, ["ip:a", raw], [])
    assert written is not None and written > len(raw)  # the state and the reserved fields
    stale = SubjectState()
    stale.w_requests = 99
    assert await ckpt.save(1, old.generation, 25, ["ip:a", ckpt.codec.encode(stale)], []) is None
    store = StateStore(10)
    await ckpt.load(1, store, (await ckpt.claim(1)).generation)
    assert store.peek("ip:a").w_requests == 1 and store.offset == 20


async def test_models_round_trip_and_an_old_version_is_skipped(
    settings: Settings, redis: Redis
) -> None:
    writer = checkpoints_for(settings, redis)
    injection = next(d for d in writer.codec.learners.values() if d.name == "injection")
    for value in ("1", "22", "333") * 10:
        injection.shapes.learn("/v1/orders", "id", value)
    assert await writer.save_models() > 0
    reader = checkpoints_for(settings, redis)
    assert await reader.load_models() == len(reader.codec.learners)
    loaded = reader.codec.learners["injection"]
    assert loaded.shapes.shape("/v1/orders", "id") == "numeric"
    await redis.hset(writer.models_key, "~v", "0")
    late = checkpoints_for(settings, redis)
    assert await late.load_models() == 0 and skipped(late, "version") == 1
    assert late.codec.learners["injection"].shapes.shape("/v1/orders", "id") is None


# -- PartitionStates: the worker's side ---------------------------------------------------------


class PausedLoad(Checkpoints):
    """Holds `load` until the test lets it go, to see what waits for it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.release = asyncio.Event()
        self.loading = asyncio.Event()

    async def load(self, partition, store, generation):  # type: ignore[no-untyped-def]
        self.loading.set()
        await self.release.wait()
        return await super().load(partition, store, generation)


async def test_an_envelope_waits_until_its_partition_is_loaded(
    settings: Settings, redis: Redis
) -> None:
    writer = checkpoints_for(settings, redis)
    state = SubjectState()
    state.auth_failures = state.auth_attempts = 11.0
    await save_states(writer, 0, {"ip:198.51.100.7": state}, offset=30)
    paused = PausedLoad(
        redis, StateCodec(default_detectors()), prefix=settings.redis_prefix, group="g",
        topic=TOPIC, ttl_s=600, metrics=CheckpointMetrics(CollectorRegistry()),
    )  # fmt: skip
    states = PartitionStates(SubjectBudget(100), paused)
    seen: list[tuple[int, float]] = []

    async def envelope() -> None:
        async with states.hold(0, offset=31) as store:
            assert store is not None
            seen.append((store.offset, store.peek("ip:198.51.100.7").auth_failures))

    assignment = asyncio.create_task(states.assigned([0]))
    await paused.loading.wait()
    processing = asyncio.create_task(envelope())
    for _ in range(50):
        await asyncio.sleep(0)  # let the envelope task run as far as it can
    assert seen == [] and not processing.done()
    paused.release.set()
    await asyncio.gather(assignment, processing)
    assert seen == [(30, 11.0)]


async def test_replayed_envelopes_are_skipped_and_acks_wait_for_the_checkpoint(
    settings: Settings, redis: Redis
) -> None:
    ckpt = checkpoints_for(settings, redis)
    await save_states(ckpt, 0, {"ip:10.0.0.1": SubjectState()}, offset=7)
    states = PartitionStates(SubjectBudget(100), ckpt)
    await states.assigned([0])
    processor = Processor(default_detectors(), Fusion())
    acked: list[int] = []
    for offset in (6, 7, 8, 9):
        async with states.hold(0, offset, ack=lambda o=offset: acked.append(o)) as store:
            if store is not None:
                processor.process(logins("10.0.0.1", 1, T0_MS + offset * 1000), store)
                assert offset > 7, "an envelope the checkpoint holds is not processed again"
    # 6 and 7 were already in the checkpoint; 8 and 9 only once it holds them.
    assert acked == [6, 7]
    assert ckpt.metrics.replays._value.get() == 2
    await states.flush()
    assert acked == [6, 7, 8, 9]
    assert await redis.hget(ckpt.key(0), "~offset") == b"9"
    copy = StateStore(10)
    await ckpt.load(0, copy, (await ckpt.claim(0)).generation)
    assert copy.peek("ip:10.0.0.1").auth_failures == pytest.approx(2.0, abs=0.02)


async def test_a_worker_keeps_the_memory_of_a_partition_nobody_else_claimed(
    settings: Settings, redis: Redis
) -> None:
    ckpt = checkpoints_for(settings, redis)
    states = PartitionStates(SubjectBudget(100), ckpt)
    await states.assigned([0, 1])
    first = states.stores[0]
    await states.revoked()
    await states.assigned([0])  # kept 0, lost 1
    assert states.stores[0] is first and set(states.stores) == {0}
    other = PartitionStates(SubjectBudget(100), checkpoints_for(settings, redis))
    await other.assigned([0])  # another worker took it meanwhile
    await states.revoked()
    await states.assigned([0])
    assert states.stores[0] is not first  # reloaded from the checkpoint, not the stale memory


async def test_revoke_checkpoints_for_the_next_owner_within_one_budget(
    settings: Settings, redis: Redis
) -> None:
    processor = Processor(default_detectors(), Fusion())
    a = PartitionStates(SubjectBudget(1_000), checkpoints_for(settings, redis))
    await a.assigned([0, 1, 2])
    for p in (0, 1, 2):
        async with a.hold(p, offset=100 + p) as store:
            assert store is not None
            for i in range(300):
                processor.process([make_event(client_ip=f"10.{p}.{i // 250}.{i % 250}")], store)
    assert a.budget.held == 900
    await a.revoked()  # the flush on revoke: nothing waits for the periodic one
    b = PartitionStates(SubjectBudget(500), checkpoints_for(settings, redis))
    await b.assigned([0, 1, 2])
    # The new owner's bound is per worker: it keeps the 500 most recently seen of the 900.
    assert b.budget.held == sum(len(s) for s in b.stores.values()) == 500
    assert [b.stores[p].offset for p in (0, 1, 2)] == [100, 101, 102]
