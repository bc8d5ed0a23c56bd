"""Reading decisions back: the HTTP decision API and `gatewatch decision`, against real Redis."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from pipeline.api import create_decision_app
from pipeline.config import Settings
from pipeline.decisions import Decision, RedisDecisions

from .conftest import PYTHON, ROOT, gatewatch_env, serve

SUBJECT = "consumer:ae974d6c-0f8a-4dc5-b701-fa0aa38592bd"


@pytest.fixture
async def stored(redis: Redis, settings: Settings) -> Decision:
    now = int(time.time() * 1000)
    decision = Decision(
        subject=SUBJECT,
        score=0.93,
        action="block",
        reasons=["rate: 300 requests/s"],
        detector="rate",
        model_version="test",
        mode="enforce",
        updated_at=now,
        expires_at=now + 60_000,
    )
    await RedisDecisions(redis, settings.redis_prefix).write([decision])
    return decision


@pytest.fixture
async def api(redis: Redis, settings: Settings):
    app = create_decision_app(
        RedisDecisions(redis, settings.redis_prefix),
        token=settings.decision_api_token.get_secret_value(),
    )
    runner, base = await serve(app)
    yield base
    await runner.cleanup()


async def test_api_returns_the_stored_decision(
    api: str, stored: Decision, settings: Settings
) -> None:
    headers = {"Authorization": f"Bearer {settings.decision_api_token.get_secret_value()}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{api}/v1/decisions/{SUBJECT}") as resp:
            assert resp.status == 200
            body = await resp.json()
        async with http.get(f"{api}/v1/decisions/ip:192.0.2.1") as resp:
            unknown = await resp.json()
        async with http.get(f"{api}/v1/decisions/nonsense") as resp:
            assert resp.status == 400
        async with http.get(f"{api}/v1/decisions/consumer:%0Aevil") as resp:
            assert resp.status == 400
        # Apigee consumers are app names: spaces and non-ASCII letters are real subjects.
        async with http.get(f"{api}/v1/decisions/consumer:Shop%20App%20%C3%A4") as resp:
            assert (await resp.json())["subject"] == "consumer:Shop App ä"
    assert body["action"] == "block"
    assert body["decision"] == stored.model_dump()
    assert unknown == {"subject": "ip:192.0.2.1", "action": "allow", "decision": None}


@pytest.mark.parametrize("header", [None, "Bearer nope"])
async def test_api_requires_the_token(api: str, stored: Decision, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{api}/v1/decisions/{SUBJECT}") as resp:
            assert resp.status == 401
            assert "decision" not in await resp.json()


async def test_cli_decision_json(stored: Decision, settings: Settings) -> None:
    proc = await asyncio.create_subprocess_exec(
        *(PYTHON, "-m", "pipeline", "decision", SUBJECT, "--json"),
        env=gatewatch_env(settings),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert orjson.loads(stdout) == {"subject": SUBJECT, "decision": stored.model_dump()}


async def test_decision_expires_with_its_ttl(redis: Redis, settings: Settings) -> None:
    now = int(time.time() * 1000)
    decisions = RedisDecisions(redis, settings.redis_prefix)
    await decisions.write(
        [
            Decision(
                subject="ip:192.0.2.9",
                score=0.5,
                action="tag",
                reasons=[],
                detector="rate",
                model_version="test",
                mode="shadow",
                updated_at=now,
                expires_at=now + 1_500,
            )
        ]
    )
    assert 0 < await redis.pttl(decisions.key("ip:192.0.2.9")) <= 1_500
    entries = await redis.xrange(decisions.stream)
    assert [e[1][b"subject"] for e in entries] == [b"ip:192.0.2.9"]


async def _cli(settings: Settings, *args: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *(PYTHON, "-m", "pipeline", *args),
        env=gatewatch_env(settings),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, stdout


async def test_overrides_are_managed_in_the_sets_gateways_read(
    redis: Redis, settings: Settings
) -> None:
    deny_key = f"{settings.redis_prefix}override:deny"
    allow_key = f"{settings.redis_prefix}override:allow"
    why = ("--reason", "test")
    assert (await _cli(settings, "override", "deny", "ip:203.0.113.66", *why))[0] == 0
    assert await redis.sismember(deny_key, "ip:203.0.113.66")
    # Moving a subject to the other set takes it out of the first: never in both.
    code, out = await _cli(settings, "override", "allow", "ip:203.0.113.66", *why, "--json")
    assert code == 0
    answer = orjson.loads(out)
    assert (answer["allow"], answer["deny"]) == (["ip:203.0.113.66"], [])
    assert not await redis.sismember(deny_key, "ip:203.0.113.66")
    code, out = await _cli(settings, "override", "clear", "ip:203.0.113.66", "--json")
    answer = orjson.loads(out)
    assert (answer["allow"], answer["deny"]) == ([], [])
    assert await redis.scard(allow_key) == 0
    assert (await _cli(settings, "override", "deny", "not-a-subject", *why))[0] != 0
    assert (await _cli(settings, "override", "deny", "ip:203.0.113.67"))[0] != 0  # no reason
