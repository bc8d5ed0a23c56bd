"""The gateway through a Redis outage: it keeps enforcing what it knows, and recovers alone.

This test stops and restarts Redis, so it always runs its own (never GATEWATCH_REDIS_URL) and
its own nginx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from redis.asyncio import Redis

from pipeline.decisions import RedisDecisions

from .conftest import audit_for, decision, get, route, until
from .harness import Nginx, RedisServer

PREFIX = "outage:"
STALE_AFTER_S = 1.0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def write(server: RedisServer, *args: tuple[str, str]) -> None:
    """Write decisions with a client of its own: the server may have restarted since."""
    client = Redis.from_url(server.url)
    try:
        await RedisDecisions(client, PREFIX).write([decision(s, a) for s, a in args])
    finally:
        await client.aclose()


async def test_outage_keeps_known_decisions_then_sync_resumes(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    blocked, other, later = "192.0.2.1", "192.0.2.2", "192.0.2.3"
    # Written before nginx starts and gone from the stream: only the start snapshot can load it.
    await write(redis_server, (f"ip:{blocked}", "block"))
    client = Redis.from_url(redis_server.url)
    await client.xtrim(f"{PREFIX}decisions", maxlen=0)
    await client.aclose()

    gateway = Nginx(
        routes={
            "gw": route(redis_server.url, PREFIX, stale_after=STALE_AFTER_S),
            "closed": route(redis_server.url, PREFIX, stale_after=STALE_AFTER_S, fail_closed=True),
        }
    ).start()
    try:
        await until(http, gateway.url("gw"), 403, ip=blocked)
        assert (await get(http, gateway.url("closed"), ip=other)).status == 200

        redis_server.stop()
        assert (await get(http, gateway.url("gw"), ip=blocked)).status == 403
        assert (await get(http, gateway.url("gw"), ip=other)).status == 200
        # Past stale_after: fail_closed refuses, the default keeps passing and enforcing.
        await until(http, gateway.url("closed"), 503, ip=other)
        assert (await get(http, gateway.url("gw"), ip=other)).status == 200
        assert (await get(http, gateway.url("gw"), ip=blocked)).status == 403
        log = gateway.error_log()
        assert log.count(f"{PREFIX}: sync failed:") == 1  # once per outage, not per retry
        assert "failing open" in log

        redis_server.start()  # same port, empty: as after a restart without persistence
        await write(redis_server, (f"ip:{later}", "block"))
        await until(http, gateway.url("gw"), 403, ip=later)
        # The decision lands in the dict a moment before the sync records its success, so the
        # fail-closed route reopens right after, not necessarily on the very next request.
        await until(http, gateway.url("closed"), 200, ip=other)
        # The outage never lifts a block early: it stays until the decision expires.
        assert (await get(http, gateway.url("gw"), ip=blocked)).status == 403
        assert f"{PREFIX}: sync with Redis resumed" in gateway.error_log()
        assert (await audit_for(gateway, f"ip:{later}"))["enforced"] == "block"
    finally:
        gateway.close()
