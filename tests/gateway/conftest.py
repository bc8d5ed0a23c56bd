"""The Kong plugin in a real nginx against a real Redis, fed by the Python decision writer.

One nginx (two workers) serves every test, with one route per plugin config (see `gateway`).
Redis is started on a free port unless `GATEWATCH_REDIS_URL` points at one; every session gets
its own key prefix and every test its own addresses (`net`), so tests never see each other's
decisions. Propagation from Redis to the gateway is asynchronous by design, so tests poll the
gateway with a deadline (`until`) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from pipeline.config import Mode
from pipeline.decisions import Decision, RedisDecisions
from pipeline.stack import free_port

from .harness import Nginx, RedisServer, redis_config

KEY_SECRET = "test-redaction-key"
CHALLENGE_URL = "https://challenge.example/verify"
DEADLINE_S = 5.0
POLL_S = 0.02

_nets = itertools.count(1)


def route(redis_url: str, prefix: str, **overrides: Any) -> dict[str, Any]:
    """A plugin config: every subject, fast sync, as a test route uses it."""
    return {
        "subjects": ["consumer", "key", "ip", "ip_range"],
        "key_secret": KEY_SECRET,
        "sync_interval_ms": 100,
        "override_refresh": 0.2,
        "challenge_url": CHALLENGE_URL,
        "redis": redis_config(redis_url, prefix),
    } | overrides


def decision(
    subject: str,
    action: str,
    *,
    mode: Mode = "enforce",
    ttl_ms: int = 60_000,
    score: float = 0.87,
    detector: str = "stuffing",
) -> Decision:
    now = int(time.time() * 1000)
    return Decision(
        subject=subject,
        score=score,
        action=action,
        reasons=[f"{detector}: test"],
        detector=detector,
        model_version="test",
        mode=mode,
        updated_at=now,
        expires_at=now + ttl_ms,
    )


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


async def get(
    http: aiohttp.ClientSession, url: str, *, ip: str, headers: dict[str, str] | None = None
) -> Reply:
    async with http.get(url, headers={"X-Forwarded-For": ip} | (headers or {})) as resp:
        body: Any = await resp.text()
        if resp.content_type == "application/json":
            body = await resp.json()
        return Reply(resp.status, dict(resp.headers), body)


async def until(
    http: aiohttp.ClientSession,
    url: str,
    status: int,
    *,
    ip: str,
    headers: dict[str, str] | None = None,
    timeout_s: float = DEADLINE_S,
) -> Reply:
    """Request `url` until it answers `status` (the sync has caught up), or fail."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = await get(http, url, ip=ip, headers=headers)
        if reply.status == status or time.monotonic() > deadline:
            assert reply.status == status, f"{url} as {ip}: {reply.status} after {timeout_s} s"
            return reply
        await asyncio.sleep(POLL_S)


async def audit_for(gateway: Nginx, subject: str, timeout_s: float = DEADLINE_S) -> dict[str, Any]:
    """The last audit line (http-log's `gatewatch` value) about `subject`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [a for a in gateway.audits() if a.get("subject") == subject]
        if found or time.monotonic() > deadline:
            assert found, f"no audit line for {subject} after {timeout_s} s"
            return found[-1]
        await asyncio.sleep(POLL_S)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("GATEWATCH_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def prefix() -> str:
    return f"gwtest:{secrets.token_hex(4)}:"


@pytest.fixture(scope="session")
def gateway(redis_url: str, prefix: str) -> Iterator[Nginx]:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    nginx = Nginx(
        routes={
            "gw": route(redis_url, prefix),
            "shadow": route(redis_url, prefix, mode="shadow"),
            "challenge": route(redis_url, prefix, mode="challenge"),
            "ip-only": route(redis_url, prefix, subjects=["ip"]),
            "open": route(dead, "dead:", stale_after=0.5),
            "closed": route(dead, "dead:", stale_after=0.5, fail_closed=True),
        }
    ).start()
    try:
        yield nginx
    finally:
        nginx.close()


@pytest.fixture(scope="session")
async def redis(redis_url: str, prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    keys = [k async for k in client.scan_iter(f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def decisions(redis: Redis, prefix: str) -> RedisDecisions:
    return RedisDecisions(redis, prefix)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def net() -> str:
    """A /24 of this test's own: "10.<a>.<b>" (append ".<host>")."""
    n = next(_nets)
    return f"10.{n // 256}.{n % 256}"
