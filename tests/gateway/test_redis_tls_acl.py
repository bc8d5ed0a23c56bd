"""The plugin syncing over TLS, as a Redis ACL user, from a database other than 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from redis.asyncio import Redis

from pipeline.decisions import RedisDecisions

from .conftest import decision, get, route, until
from .harness import Nginx, RedisServer

PREFIX = "tls:"
USER, PASSWORD, DATABASE = "gateway", "gateway-secret", 3
ADMIN_PASSWORD = "admin-secret"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(tls=True).start()  # TLS only: no plaintext port at all
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def writer(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """The pipeline's side, on database 3; the default user gets a password, so only a
    gateway that authenticates as its ACL user can read anything."""
    client = Redis(
        host="127.0.0.1", port=redis_server.port, ssl=True, ssl_cert_reqs="none", db=DATABASE
    )
    await client.acl_setuser(
        USER,
        enabled=True,
        passwords=[f"+{PASSWORD}"],
        keys=[f"{PREFIX}*"],
        commands=["+@read", "+@connection", "+select"],  # read-only: all a gateway needs
    )
    await client.config_set("requirepass", ADMIN_PASSWORD)
    yield client
    await client.aclose()


async def test_tls_acl_user_and_database(redis_server: RedisServer, writer: Redis) -> None:
    conf = route(f"rediss://{USER}:{PASSWORD}@127.0.0.1:{redis_server.port}/{DATABASE}", PREFIX)
    conf["redis"]["server_name"] = "localhost"
    gateway = Nginx(routes={"gw": conf}, workers=1).start()
    try:
        async with aiohttp.ClientSession() as http:
            await RedisDecisions(writer, PREFIX).write([decision("ip:192.0.2.50", "block")])
            await until(http, gateway.url("gw"), 403, ip="192.0.2.50")
            assert (await get(http, gateway.url("gw"), ip="192.0.2.51")).status == 200
        assert "sync failed" not in gateway.error_log()
    finally:
        gateway.close()
