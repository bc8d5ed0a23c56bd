"""Decision changes from the real Redis stream to an HTTP endpoint standing in for the Apigee
decision-ingest proxy (Apigee itself cannot run here): every change arrives once the endpoint
accepts, failures are retried, the cursor survives a restart, expired changes are not pushed."""

from __future__ import annotations

import time

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from pipeline.config import Settings
from pipeline.decisions import Decision, RedisDecisions
from sinks.apigee import ApigeeDecisionPusher

from .conftest import serve


def decision(subject: str, action: str, ttl_ms: int) -> Decision:
    now = int(time.time() * 1000)
    return Decision(
        subject=subject,
        score=0.9,
        action=action,
        reasons=["r"],
        detector="rate",
        model_version="t",
        mode="enforce",
        updated_at=now,
        expires_at=now + ttl_ms,
    )


async def test_changes_reach_the_proxy_with_retries_and_a_durable_cursor(
    redis: Redis, settings: Settings
) -> None:
    received: list[dict] = []
    fail_first = {"ip:203.0.113.5": 2}  # the proxy refuses this one twice

    async def ingest(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer proxy-token"
        body = await request.json()
        if body["subject"] == "ip:bad":
            return web.json_response({"error": "invalid subject"}, status=400)
        if fail_first.get(body["subject"], 0) > 0:
            fail_first[body["subject"]] -= 1
            return web.json_response({"error": "cache busy"}, status=503)
        received.append(body)
        return web.json_response({"stored": True})

    app = web.Application()
    app.router.add_post("/gatewatch/decisions", ingest)
    runner, base = await serve(app)
    decisions = RedisDecisions(redis, settings.redis_prefix)
    await decisions.write(
        [
            decision("ip:203.0.113.5", "block", 600_000),
            decision("consumer:c-1", "challenge", 300_000),
            decision("ip:192.0.2.1", "tag", -1000),  # already expired when the sink reads it
        ]
    )

    def pusher(http: aiohttp.ClientSession) -> ApigeeDecisionPusher:
        return ApigeeDecisionPusher(
            redis,
            http,
            url=f"{base}/gatewatch/decisions",
            token="proxy-token",
            stream=decisions.stream,
            cursor_key=f"{settings.redis_prefix}sink:apigee",
        )

    try:
        async with aiohttp.ClientSession() as http:
            first = pusher(http)
            assert await first.step() == 3
            assert (first.pushed, first.expired) == (2, 1)
            assert fail_first["ip:203.0.113.5"] == 0  # it was retried until accepted

            # A restarted sink resumes after the cursor: only the new changes are pushed, and one
            # the proxy rejects for good is dropped instead of stalling the ones after it.
            await decisions.write(
                [
                    decision("ip:bad", "block", 600_000),
                    decision("key:hmac:abc", "block", 600_000),
                ]
            )
            second = pusher(http)
            assert await second.step() == 2
            assert (second.pushed, second.rejected) == (1, 1)
            assert await second.step() == 0
    finally:
        await runner.cleanup()

    by_subject = {r["subject"]: r for r in received}
    assert set(by_subject) == {"ip:203.0.113.5", "consumer:c-1", "key:hmac:abc"}
    assert by_subject["ip:203.0.113.5"]["action"] == "block"
    assert 590 <= by_subject["ip:203.0.113.5"]["ttl_s"] <= 600
    assert by_subject["consumer:c-1"]["ttl_s"] <= 300
