"""Decision changes from the real Redis stream to an HTTP endpoint standing in for the Apigee
decision-ingest proxy (Apigee itself cannot run here): every change arrives once the endpoint
accepts, failures are retried, the cursor survives a restart, expired changes are not pushed."""

from __future__ import annotations

import asyncio
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


async def test_overrides_reach_apigee_and_decisions_never_replace_them(
    redis: Redis, settings: Settings
) -> None:
    """Against a stand-in keeping the proxy's contract: a body's entry replaces the subject's
    (InvalidateCache, then PopulateCache unless a plain allow)."""
    from pipeline.operator.cli import operator_actions
    from pipeline.operator.overrides import Overrides
    from sinks.apigee_overrides import ApigeeOverridePusher

    cache: dict[str, dict] = {}

    async def ingest(request: web.Request) -> web.Response:
        body = await request.json()
        cache.pop(body["subject"], None)
        if body["action"] != "allow" or body["detector"] == "override":
            cache[body["subject"]] = body
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/gatewatch/decisions", ingest)
    runner, base = await serve(app)
    prefix = settings.redis_prefix
    decisions = RedisDecisions(redis, prefix)
    overrides = Overrides(redis, prefix)
    actions = operator_actions(redis, settings)
    # Before the pusher ever ran: a deny, and an allow over a standing block.
    await actions.override("deny", "ip:203.0.113.9", actor="a", reason="scanner", ttl_s=None)
    await decisions.write([decision("consumer:partner", "block", 600_000)])
    await actions.override("allow", "consumer:partner", actor="a", reason="fp", ttl_s=3600)

    try:
        async with aiohttp.ClientSession() as http:
            decision_pusher = ApigeeDecisionPusher(
                redis, http, url=f"{base}/gatewatch/decisions", token="t",
                stream=decisions.stream, cursor_key=f"{prefix}sink:apigee", overrides=overrides,
            )  # fmt: skip
            override_pusher = ApigeeOverridePusher(
                redis, http, url=f"{base}/gatewatch/decisions", token="t", overrides=overrides,
                decisions=decisions, cursor_key=f"{prefix}sink:apigee:overrides",
            )  # fmt: skip
            assert await override_pusher.step() == 2  # first run: everything in force
            assert await decision_pusher.step() == 1
            assert decision_pusher.held == 1  # the block is under an allow override
            assert {s: (b["action"], b["detector"]) for s, b in cache.items()} == {
                "ip:203.0.113.9": ("block", "override"),
                "consumer:partner": ("allow", "override"),
            }
            assert 3590 <= cache["consumer:partner"]["ttl_s"] <= 3600
            assert cache["ip:203.0.113.9"]["ttl_s"] == 9_999_999

            # Cleared: the subject's own decision is its entry again; a deny cleared with no
            # decision leaves no entry.
            await actions.clear("consumer:partner", actor="b", reason="done")
            await actions.clear("ip:203.0.113.9", actor="b", reason="done")
            assert await override_pusher.step() == 2
            assert {s: (b["action"], b["detector"]) for s, b in cache.items()} == {
                "consumer:partner": ("block", "rate")
            }

            # An expiring deny over a new decision: expired and reaped, the decision returns.
            await actions.override("deny", "ip:198.51.100.4", actor="a", reason="r", ttl_s=0.3)
            await decisions.write([decision("ip:198.51.100.4", "tag", 600_000)])
            assert await override_pusher.step() == 1
            assert await decision_pusher.step() == 1 and decision_pusher.held == 2
            assert cache["ip:198.51.100.4"]["detector"] == "override"
            await asyncio.sleep(0.4)
            assert await overrides.reap() == ["ip:198.51.100.4"]
            assert await override_pusher.step() == 1
            assert (cache["ip:198.51.100.4"]["action"], cache["ip:198.51.100.4"]["detector"]) == (
                "tag", "rate"
            )
    finally:
        await runner.cleanup()
