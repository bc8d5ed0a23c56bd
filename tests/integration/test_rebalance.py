"""Two real workers in one group on the real broker and Redis: a brute-forcer's partition moves from
one to the other (the first joins a rebalance, then is killed), and its failure count carries on
across the move: it is blocked at the same attempt as by a worker that never stopped, and none
of the envelopes the first worker handled is counted twice."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from detectors import Fusion, default_detectors
from pipeline import envelopes
from pipeline.config import Settings
from pipeline.decisions import RedisDecisions
from pipeline.events import GatewayEvent
from pipeline.kafka import ensure_topics
from pipeline.stack import free_port, stop_process
from pipeline.worker.processor import Processor
from pipeline.worker.store import StateStore

from .conftest import PYTHON, ROOT, gatewatch_env

ATTACKER = "198.51.100.77"
BEFORE_MOVE, AFTER_MOVE = 8, 5


def attempts(start_ms: int) -> list[GatewayEvent]:
    return [
        GatewayEvent(
            ts_ms=start_ms + i * 100,
            gateway="kong",
            client_ip=ATTACKER,
            method="POST",
            path="/v1/auth/login",
            route="/v1/auth/login",
            status=401,
            user_agent="curl/8.5.0",
        )
        for i in range(BEFORE_MOVE + AFTER_MOVE)
    ]


class Workers:
    """Worker processes of one group, each with its own web port and log."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"{name}.log", "wb")  # the child writes to it
        env = gatewatch_env(self.settings) | {"GATEWATCH_WEB_PORT": str(free_port())}
        proc = subprocess.Popen(
            [PYTHON, "-m", "pipeline", "worker"], env=env, cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop_process(proc, timeout_s=20)


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(settings, tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll a running system (other processes: there is no event to await) until `check`."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def reference_decisions(events: list[GatewayEvent]) -> list[tuple[str, float, str]]:
    """(action, score, reason) of each decision change of one worker that never stops, one
    envelope per attempt as the test sends them."""
    processor = Processor(default_detectors(), Fusion(), mode="enforce")
    store = StateStore(1000)
    out = []
    for event in events:
        for d in processor.process([event], store):
            out.append((d.action, d.score, d.reasons[0]))
    return out


async def test_a_brute_forcers_count_continues_across_a_move_between_workers(
    settings: Settings, redis: Redis, workers: Workers
) -> None:
    # (`workers` after `redis`: the workers stop, and write their last checkpoints, before the
    # test's keys are cleaned up.)
    await ensure_topics(settings)  # two partitions
    partition = envelopes.partition_for(f"ip:{ATTACKER}", settings.partitions)
    ckpt_key = (
        f"{settings.redis_prefix}ckpt:{settings.worker_id}:{settings.topics.events}:{partition}"
    )
    decisions = RedisDecisions(redis, settings.redis_prefix)
    events = attempts(int(time.time() * 1000))
    expected = reference_decisions(events)
    assert [action for action, _, _ in expected] == ["tag", "challenge", "block"]

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()

    async def send(batch: list[GatewayEvent]) -> None:
        for event in batch:  # one envelope per attempt: the offsets count attempts
            await producer.send_and_wait(
                settings.topics.events, envelopes.encode([event]), key=b"p", partition=partition
            )

    try:
        a = workers.start("a")
        await send(events[:BEFORE_MOVE])

        async def a_checkpointed_all() -> bool:
            assert a.poll() is None, workers.log("a")
            return await redis.hget(ckpt_key, "~offset") == str(BEFORE_MOVE - 1).encode()

        await until(a_checkpointed_all, 90, "worker a to checkpoint the first attempts")

        b = workers.start("b")
        await until(
            lambda: _true(b.poll() is None and bool(_loaded(workers.log("b")))),
            90,
            "worker b to be assigned a partition",
        )
        a.kill()  # no goodbye: b takes every partition once a's session times out
        a.wait()
        await until(
            lambda: _true(partition in _loaded(workers.log("b"))),
            90,
            "worker b to load the brute-forcer's partition",
        )
        await send(events[BEFORE_MOVE:])

        async def all_processed() -> bool:
            assert b.poll() is None, workers.log("b")
            stats = await decisions.stats()
            return stats.get("events_processed", 0) >= len(events)

        await until(all_processed, 60, "every attempt to be processed")
    finally:
        await producer.stop()

    # Counted once each, even though b may have been handed envelopes a had handled.
    assert (await decisions.stats())["events_processed"] == len(events)
    entries = await redis.xrange(decisions.stream)
    changes = [(f[b"subject"].decode(), f[b"action"].decode(), float(f[b"score"]))
               for _, f in entries]  # fmt: skip
    assert changes == [(f"ip:{ATTACKER}", action, score) for action, score, _ in expected]
    final = await decisions.get(f"ip:{ATTACKER}")
    assert final is not None and final.action == "block"
    assert final.reasons[0] == expected[-1][2]  # "13 failed logins of 13 attempts (...)"
    assert f"{BEFORE_MOVE + AFTER_MOVE} failed logins of" in final.reasons[0]
    moved = _loaded(workers.log("b"))[partition]
    # a's checkpoint: the address and its /24 (logins are also counted per range)
    assert (moved["offset"], moved["subjects"]) == (BEFORE_MOVE - 1, 2)


def _loaded(log: str) -> dict[int, dict]:
    """The partitions a worker's log says it loaded, with the log record (JSON lines)."""
    out = {}
    for line in log.splitlines():
        if line.startswith("{") and '"checkpoint.loaded"' in line:
            record = orjson.loads(line)
            out[record["partition"]] = record
    return out


async def _true(value: bool) -> bool:
    return value
