"""A real worker process (Faust) between a real broker and a real Redis: a credential-stuffing run
posted to the collector becomes a block decision in Redis and on the decisions topic; a corrupt
envelope goes to the dead-letter topic without stopping the worker."""

from __future__ import annotations

import asyncio
import subprocess
import time

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from pipeline.config import Settings
from pipeline.decisions import RedisDecisions
from pipeline.ingest.collector import collector_app
from pipeline.kafka import ensure_topics
from pipeline.stack import stop_process

from .conftest import PYTHON, ROOT, gatewatch_env, read_topic, serve

ATTACKER = "198.51.100.77"


def kong_entry(ip: str, path: str, status: int, ts_ms: int, method: str = "GET") -> dict:
    return {
        "request": {
            "method": method,
            "uri": path,
            "headers": {"user-agent": "curl/8.5.0"},
            "querystring": {},
            "size": 200,
        },
        "response": {"status": status, "size": 100},
        "latencies": {"request": 12, "kong": 1, "proxy": 11},
        "client_ip": ip,
        "started_at": ts_ms,
    }


@pytest.fixture
def worker(settings: Settings, tmp_path):
    log = open(tmp_path / "worker.log", "wb")  # the child writes to it
    proc = subprocess.Popen(
        [PYTHON, "-m", "pipeline", "worker"],
        env=gatewatch_env(settings),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        stop_process(proc, timeout_s=20)
        log.close()


async def next_decision(
    redis: Redis, stream: str, last_id: str, timeout_s: float, worker: subprocess.Popen
) -> tuple[str, dict]:
    """Block on the decision stream (an event, not a sleep) until the next entry arrives."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited"
        resp = await redis.xread({stream: last_id}, count=1, block=500)
        for _, entries in resp or []:
            entry_id, fields = entries[0]
            return entry_id.decode(), {k.decode(): v.decode() for k, v in fields.items()}
    raise AssertionError(f"no decision on {stream} within {timeout_s} s")


async def test_credential_stuffing_becomes_a_block_decision(
    worker: subprocess.Popen, settings: Settings, redis: Redis
) -> None:
    now = int(time.time() * 1000)
    benign = [kong_entry(f"203.0.113.{i}", "/v1/products", 200, now + i) for i in range(50)]
    stuffing = [
        kong_entry(ATTACKER, "/v1/auth/login", 401, now + 100 + i * 50, method="POST")
        for i in range(30)
    ]
    decisions = RedisDecisions(redis, settings.redis_prefix)
    async with collector_app(settings) as app:
        runner, base = await serve(app)
        try:
            async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {settings.ingest_token.get_secret_value()}"}
            ) as http:
                async with http.post(f"{base}/kong", data=orjson.dumps(benign + stuffing)) as resp:
                    assert (await resp.json())["accepted"] == 80
        finally:
            await runner.cleanup()

    last_id, action = "0-0", ""
    while action != "block":
        last_id, entry = await next_decision(
            redis, decisions.stream, last_id, timeout_s=60, worker=worker
        )
        assert entry["subject"] == f"ip:{ATTACKER}", "only the attacker may get a decision"
        action = entry["action"]

    decision = await decisions.get(f"ip:{ATTACKER}")
    assert decision is not None
    assert decision.action == "block" and decision.mode == "enforce"
    assert decision.detector == "bruteforce"
    assert "failed logins" in decision.reasons[0]
    assert decision.expires_at - decision.updated_at == 600_000
    assert 0 < await redis.pttl(decisions.key(f"ip:{ATTACKER}")) <= 600_000

    published = await read_topic(settings.kafka, settings.topics.decisions, expect=1)
    keys = {key for key, _, _ in published}
    assert keys == {f"ip:{ATTACKER}".encode()}
    assert orjson.loads(published[-1][1])["action"] in {"tag", "challenge", "block"}

    # Every event was counted once the envelopes were handled (decisions are written first).
    async with asyncio.timeout(30):
        while (await decisions.stats()).get("events_processed", 0) < 80:
            await redis.xread({decisions.stream: "$"}, block=200)
    assert (await decisions.stats())["events_processed"] == 80


async def test_corrupt_envelope_goes_to_dlq_and_worker_keeps_going(
    worker: subprocess.Popen, settings: Settings, redis: Redis
) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.events, b"\xc1 not msgpack", partition=0)
    finally:
        await producer.stop()
    dead = await read_topic(settings.kafka, settings.topics.dlq, expect=1, timeout_s=60)
    _, value, headers = dead[0]
    assert value == b"\xc1 not msgpack"
    assert headers["gatewatch.source"] == b"envelope"
    assert headers["gatewatch.reason"].startswith(b"not msgpack")
    assert worker.poll() is None, "the worker must survive a corrupt envelope"
