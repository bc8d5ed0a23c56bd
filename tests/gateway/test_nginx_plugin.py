"""Decisions written by the Python pipeline, enforced by the Kong plugin running in nginx."""

from __future__ import annotations

import ipaddress
import secrets
import time

import aiohttp
from redis.asyncio import Redis

from pipeline.decisions import RedisDecisions
from pipeline.ingest.redaction import Redactor
from pipeline.operator.overrides import Override, Overrides

from .conftest import CHALLENGE_URL, KEY_SECRET, audit_for, decision, get, until
from .harness import Nginx


async def test_block_answers_403_and_audits(
    gateway: Nginx, decisions: RedisDecisions, http: aiohttp.ClientSession, net: str
) -> None:
    ip = f"{net}.7"
    await decisions.write([decision(f"ip:{ip}", "block")])
    reply = await until(http, gateway.url("gw"), 403, ip=ip)
    assert reply.body == {"message": "Forbidden"}
    assert await audit_for(gateway, f"ip:{ip}") == {
        "action": "block",
        "enforced": "block",
        "subject": f"ip:{ip}",
        "score": 0.87,
        "mode": "enforce",
        "detector": "stuffing",
    }


async def test_challenge_answers_429_with_retry_after(
    gateway: Nginx, decisions: RedisDecisions, http: aiohttp.ClientSession, net: str
) -> None:
    soon, later = f"{net}.1", f"{net}.2"
    await decisions.write(
        [
            decision(f"ip:{soon}", "challenge", ttl_ms=30_000),
            decision(f"ip:{later}", "challenge", ttl_ms=3_600_000),
        ]
    )
    reply = await until(http, gateway.url("gw"), 429, ip=soon)
    assert 25 <= int(reply.headers["Retry-After"]) <= 30
    assert reply.body == {"message": "Too Many Requests", "challenge_url": CHALLENGE_URL}
    capped = await until(http, gateway.url("gw"), 429, ip=later)
    assert capped.headers["Retry-After"] == "60"


async def test_tag_reaches_the_upstream_only(
    gateway: Nginx, decisions: RedisDecisions, http: aiohttp.ClientSession, net: str
) -> None:
    tagged, sentinel = f"{net}.3", f"{net}.4"
    await decisions.write(
        [
            decision(f"ip:{tagged}", "tag", score=0.61, detector="bot"),
            decision(f"ip:{sentinel}", "block"),
        ]
    )
    await until(http, gateway.url("gw"), 403, ip=sentinel)
    reply = await get(http, gateway.url("gw"), ip=tagged)
    assert reply.status == 200
    upstream = reply.body["headers"]
    assert (upstream["x-risk-score"], upstream["x-risk-reason"]) == ("0.61", "bot")
    assert not {"X-Risk-Score", "X-Risk-Reason"} & set(reply.headers)


async def test_client_cannot_forge_risk_headers(
    gateway: Nginx, http: aiohttp.ClientSession, net: str
) -> None:
    forged = {"X-Risk-Score": "0.0", "X-Risk-Reason": "trusted"}
    reply = await get(http, gateway.url("gw"), ip=f"{net}.5", headers=forged)
    assert reply.status == 200
    assert not {"x-risk-score", "x-risk-reason"} & set(reply.body["headers"])
    base = await get(http, gateway.url("base"), ip=f"{net}.5", headers=forged)
    assert base.body["headers"]["x-risk-score"] == "0.0"  # the header does reach an unguarded route


async def test_unknown_passes_and_allow_lifts_a_block(
    gateway: Nginx, decisions: RedisDecisions, http: aiohttp.ClientSession, net: str
) -> None:
    ip, unknown = f"{net}.6", f"{net}.8"
    await decisions.write([decision(f"ip:{ip}", "block")])
    await until(http, gateway.url("gw"), 403, ip=ip)
    assert (await get(http, gateway.url("gw"), ip=unknown)).status == 200
    await decisions.write([decision(f"ip:{ip}", "allow")])
    reply = await until(http, gateway.url("gw", "users/1"), 200, ip=ip)
    assert reply.body["uri"] == "/gw/users/1"


async def test_expired_decision_stops_applying(
    gateway: Nginx, decisions: RedisDecisions, http: aiohttp.ClientSession, net: str
) -> None:
    ip = f"{net}.9"
    await decisions.write([decision(f"ip:{ip}", "block", ttl_ms=2_500)])
    await until(http, gateway.url("gw"), 403, ip=ip)
    await until(http, gateway.url("gw"), 200, ip=ip)


async def test_deny_override_blocks_without_a_decision(
    gateway: Nginx, redis: Redis, prefix: str, http: aiohttp.ClientSession, net: str
) -> None:
    ip = f"{net}.10"
    await redis.sadd(f"{prefix}override:deny", f"ip:{ip}")
    await until(http, gateway.url("gw"), 403, ip=ip)
    audit = await audit_for(gateway, f"ip:{ip}")
    assert (audit["override"], audit["enforced"]) == ("deny", "block")


async def test_overrides_written_by_operators_expire_in_the_gateway(
    gateway: Nginx,
    decisions: RedisDecisions,
    redis: Redis,
    prefix: str,
    http: aiohttp.ClientSession,
    net: str,
) -> None:
    """`gatewatch override` / feedback write who, why and an expiry; the plugin stops applying
    an override at its expiry (the local TTL), and one already expired never applies."""
    denied, allowed, stale = f"{net}.20", f"{net}.21", f"{net}.22"
    overrides = Overrides(redis, prefix)
    now = int(time.time() * 1000)
    pipe = redis.pipeline(transaction=True)
    for subject, kind, expires_at in [
        (f"ip:{denied}", "deny", now + 2_500),
        (f"ip:{allowed}", "allow", now + 2_500),
        (f"ip:{stale}", "deny", now - 1),
    ]:
        overrides.stage_put(
            pipe,
            Override(
                subject=subject, kind=kind, actor="test", created_at=now, expires_at=expires_at
            ),
        )
    await pipe.execute()
    await decisions.write([decision(f"ip:{allowed}", "block")])
    await until(http, gateway.url("gw"), 403, ip=denied)
    assert (await get(http, gateway.url("gw"), ip=allowed)).status == 200
    assert (await get(http, gateway.url("gw"), ip=stale)).status == 200
    # At expiry: the deny lifts, and the allow no longer hides the block underneath.
    await until(http, gateway.url("gw"), 200, ip=denied)
    await until(http, gateway.url("gw"), 403, ip=allowed)


async def test_allow_override_beats_a_block(
    gateway: Nginx,
    decisions: RedisDecisions,
    redis: Redis,
    prefix: str,
    http: aiohttp.ClientSession,
    net: str,
) -> None:
    allowed, decided, denied = f"{net}.11", f"{net}.12", f"{net}.13"
    await redis.sadd(f"{prefix}override:allow", f"ip:{allowed}")
    await redis.sadd(f"{prefix}override:deny", f"ip:{denied}")
    await decisions.write([decision(f"ip:{allowed}", "block"), decision(f"ip:{decided}", "block")])
    # Both sets are read together and the decisions written together: once the other two are
    # enforced, the allow override and the block on `allowed` are both in the cache.
    await until(http, gateway.url("gw"), 403, ip=decided)
    await until(http, gateway.url("gw"), 403, ip=denied)
    assert (await get(http, gateway.url("gw"), ip=allowed)).status == 200
    assert (await audit_for(gateway, f"ip:{allowed}"))["override"] == "allow"


async def test_shadow_mode_logs_but_lets_through(
    gateway: Nginx, decisions: RedisDecisions, http: aiohttp.ClientSession, net: str
) -> None:
    shadowed, enforced = f"{net}.14", f"{net}.15"
    await decisions.write(
        [
            decision(f"ip:{shadowed}", "block", mode="shadow"),
            decision(f"ip:{enforced}", "block"),
        ]
    )
    await until(http, gateway.url("gw"), 403, ip=enforced)
    assert (await get(http, gateway.url("gw"), ip=shadowed)).status == 200
    audit = await audit_for(gateway, f"ip:{shadowed}")
    assert (audit["action"], audit["enforced"], audit["mode"]) == ("block", "allow", "shadow")
    assert f"would block ip:{shadowed} (shadow mode" in gateway.error_log()
    # A route in shadow mode does not enforce even a decision made in enforce mode.
    assert (await get(http, gateway.url("shadow"), ip=enforced)).status == 200


async def test_route_in_challenge_mode_challenges_instead_of_blocking(
    gateway: Nginx, decisions: RedisDecisions, http: aiohttp.ClientSession, net: str
) -> None:
    ip = f"{net}.16"
    await decisions.write([decision(f"ip:{ip}", "block")])
    await until(http, gateway.url("gw"), 403, ip=ip)
    assert (await get(http, gateway.url("challenge"), ip=ip)).status == 429


async def test_strongest_subject_wins_and_subjects_are_configurable(
    gateway: Nginx, decisions: RedisDecisions, http: aiohttp.ClientSession, net: str
) -> None:
    ip, consumer = f"{net}.17", f"consumer:{secrets.token_hex(8)}"
    await decisions.write([decision(f"ip:{ip}", "tag"), decision(consumer, "block")])
    as_consumer = {"X-Harness-Consumer": consumer.removeprefix("consumer:")}
    await until(http, gateway.url("gw"), 403, ip=ip, headers=as_consumer)
    # The ip-only route does not look at consumers: the tag on the address is all it sees.
    reply = await get(http, gateway.url("ip-only"), ip=ip, headers=as_consumer)
    assert (reply.status, reply.body["headers"]["x-risk-score"]) == (200, "0.87")


async def test_ipv4_range_applies_inside_it(
    gateway: Nginx, decisions: RedisDecisions, http: aiohttp.ClientSession, net: str
) -> None:
    await decisions.write([decision(f"ip:{net}.0/24", "block")])
    await until(http, gateway.url("gw"), 403, ip=f"{net}.77")
    assert (await get(http, gateway.url("gw"), ip=f"{net}.200")).status == 403
    outside = f"{net.rsplit('.', 1)[0]}.255.77"
    assert (await get(http, gateway.url("gw"), ip=outside)).status == 200


async def test_ipv6_range_applies_inside_it(
    gateway: Nginx, decisions: RedisDecisions, http: aiohttp.ClientSession
) -> None:
    ip = f"2001:db8:{secrets.randbelow(0xFFFF):x}:0:aaaa::5"
    network = ipaddress.ip_network(f"{ip}/64", strict=False)
    await decisions.write([decision(f"ip:{network}", "block")])
    await until(http, gateway.url("gw"), 403, ip=ip)


async def test_api_key_fingerprint_matches_the_pipeline(
    gateway: Nginx, decisions: RedisDecisions, http: aiohttp.ClientSession, net: str
) -> None:
    key = f"api-key-{secrets.token_hex(8)}"
    subject = "key:" + Redactor(KEY_SECRET.encode()).fingerprint(key)
    await decisions.write([decision(subject, "block")])
    await until(http, gateway.url("gw"), 403, ip=f"{net}.18", headers={"apikey": key})
    assert (await get(http, gateway.url("gw"), ip=f"{net}.18")).status == 200


async def test_never_synced_cache_fails_open_or_closed(
    gateway: Nginx, http: aiohttp.ClientSession, net: str
) -> None:
    await until(http, gateway.url("closed"), 503, ip=f"{net}.19")
    assert (await get(http, gateway.url("open"), ip=f"{net}.19")).status == 200
    log = gateway.error_log()
    assert "decision cache stale (no sync for" in log
    assert "failing open" in log and "refusing request" in log
    assert "dead:: sync failed: failed to connect to Redis" in log


async def test_one_worker_leads_the_sync(
    gateway: Nginx, decisions: RedisDecisions, http: aiohttp.ClientSession, prefix: str, net: str
) -> None:
    await decisions.write([decision(f"ip:{net}.20", "block")])
    await until(http, gateway.url("gw"), 403, ip=f"{net}.20")
    assert gateway.error_log().count(f"{prefix}: snapshot loaded") == 1
