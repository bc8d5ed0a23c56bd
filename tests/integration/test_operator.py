"""Overrides, feedback and their audit trail against a real Redis and a real Kafka-protocol
broker: who/why/expiry stored and honoured, alerts on the alerts topic even when Kafka was away,
the CLI's one-line refusals, the feedback endpoint's authentication, and what workers load."""

from __future__ import annotations

import asyncio
import getpass
import subprocess
import time

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr
from redis.asyncio import Redis

from detectors.tuning import Tuning
from pipeline.alerts import Alert
from pipeline.api import create_decision_app
from pipeline.config import Settings
from pipeline.decisions import Decision, RedisDecisions
from pipeline.kafka import ensure_topics, make_producer
from pipeline.operator.actions import OperatorActions, OperatorError
from pipeline.operator.api import operator_api
from pipeline.operator.cli import operator_actions
from pipeline.operator.overrides import LEGACY_ACTOR, Overrides
from pipeline.operator.sync import OperatorSync
from tests.unit.feedback_traffic import processor

from .conftest import PYTHON, ROOT, gatewatch_env, read_topic, serve

OPERATOR_TOKEN = "alice-operator-token"


@pytest.fixture
def actions(settings: Settings, redis: Redis) -> OperatorActions:
    return operator_actions(redis, settings)


@pytest.fixture
async def producer(settings: Settings) -> AIOKafkaProducer:
    await ensure_topics(settings)
    p = make_producer(settings)
    await p.start()
    yield p
    await p.stop()


def _decision(subject: str, action: str, score: float, detector: str = "rate") -> Decision:
    now = int(time.time() * 1000)
    return Decision(
        subject=subject, score=score, action=action, reasons=[f"{detector}: test"],
        detector=detector, model_version="t", mode="enforce", updated_at=now,
        expires_at=now + 600_000,
    )  # fmt: skip


async def test_override_carries_who_why_expiry_and_expires_for_readers(
    actions: OperatorActions, redis: Redis, settings: Settings
) -> None:
    overrides = Overrides(redis, settings.redis_prefix)
    done = await actions.override(
        "deny", "ip:2001:DB8::7", actor="alice", reason="scanner", ttl_s=0.5
    )
    assert done.subject == "ip:2001:db8::7"  # stored as gateways spell it
    (found,) = await overrides.active()
    assert (found.actor, found.reason, found.kind) == ("alice", "scanner", "deny")
    assert found.expires_at == done.expires_at and found.id == done.id
    # Gateways' keys: the plain set plus the expiry index the readers honour.
    prefix = settings.redis_prefix
    assert await redis.smembers(f"{prefix}override:deny") == {b"ip:2001:db8::7"}
    assert await redis.zscore(f"{prefix}override:expiry", "ip:2001:db8::7") == done.expires_at

    later = done.expires_at + 1  # type: ignore[operator]
    assert await overrides.active(later) == []
    assert await overrides.get("ip:2001:db8::7", later) is None
    assert await overrides.reap(later) == ["ip:2001:db8::7"]
    assert await redis.smembers(f"{prefix}override:deny") == set()
    assert await redis.hlen(f"{prefix}override:meta") == 0
    changes = [f[b"change"] for _, f in await redis.xrange(f"{prefix}overrides")]
    assert changes == [b"set", b"expired"]


async def test_overrides_written_before_audit_stay_readable(
    redis: Redis, settings: Settings
) -> None:
    prefix = settings.redis_prefix
    await redis.sadd(f"{prefix}override:allow", "consumer:old", "ip:192.0.2.1")
    await redis.sadd(f"{prefix}override:deny", "ip:192.0.2.1", "ip:192.0.2.2")
    overrides = Overrides(redis, prefix)
    current = await overrides.all()
    # Allow wins for a subject in both sets, as gateways treat it; no expiry, author unknown.
    assert current == {"allow": ["consumer:old", "ip:192.0.2.1"], "deny": ["ip:192.0.2.2"]}
    assert {o.actor for o in await overrides.active()} == {LEGACY_ACTOR}
    assert await overrides.reap() == []


async def test_an_allow_replaces_a_deny_and_clear_removes_everything(
    actions: OperatorActions, redis: Redis, settings: Settings
) -> None:
    await actions.override("deny", "consumer:c1", actor="a", reason="r", ttl_s=60)
    await actions.override("allow", "consumer:c1", actor="b", reason="partner", ttl_s=None)
    overrides = Overrides(redis, settings.redis_prefix)
    assert await overrides.all() == {"allow": ["consumer:c1"], "deny": []}
    assert (await overrides.get("consumer:c1")).expires_at is None  # type: ignore[union-attr]
    cleared = await actions.clear("consumer:c1", actor="c", reason="")
    assert cleared is not None and cleared.actor == "b"
    assert await overrides.all() == {"allow": [], "deny": []}
    assert await actions.clear("consumer:c1", actor="c", reason="") is None
    assert await actions.audit.pending() == 3  # deny, allow, clear; nothing for a no-op clear


async def test_refused_subject_changes_nothing(actions: OperatorActions, redis: Redis) -> None:
    with pytest.raises(OperatorError, match="/24 \\(IPv4\\) and /64"):
        await actions.override("deny", "ip:10.0.0.0/8", actor="a", reason="r", ttl_s=None)
    assert await actions.audit.pending() == 0
    assert [k async for k in redis.scan_iter(f"{actions.overrides.prefix}*")] == []


async def test_audit_alerts_reach_the_alerts_topic(
    actions: OperatorActions, settings: Settings, producer: AIOKafkaProducer
) -> None:
    await actions.override("deny", "ip:203.0.113.9", actor="alice", reason="scan", ttl_s=3600)
    await actions.override("allow", "consumer:partner", actor="bob", reason="ok", ttl_s=None)
    assert await actions.audit.flush(producer) == 2
    assert await actions.audit.pending() == 0
    records = await read_topic(settings.kafka, settings.topics.alerts, expect=2)
    alerts = [Alert.from_json(value) for _, value, _ in records]
    assert [r[0] for r in records] == [b"ip:203.0.113.9", b"consumer:partner"]
    deny, allow = alerts
    assert (deny.kind, deny.action, deny.severity) == ("operator", "block", "medium")
    assert deny.scope == "ip"
    assert deny.operator is not None and deny.operator.action == "override_deny"
    assert (deny.operator.actor, deny.operator.reason) == ("alice", "scan")
    assert deny.expires_at == deny.operator.expires_at and deny.expires_at is not None
    assert allow.operator is not None and allow.operator.expires_at is None
    assert len({deny.id, allow.id}) == 2


async def test_alerts_wait_in_redis_while_kafka_is_away(
    actions: OperatorActions, settings: Settings, producer: AIOKafkaProducer
) -> None:
    await actions.override("deny", "ip:203.0.113.10", actor="a", reason="r", ttl_s=60)
    away = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", request_timeout_ms=500)
    with pytest.raises(KafkaConnectionError):
        await away.start()
        await actions.audit.flush(away)
    await away.stop()
    assert await actions.audit.pending() == 1  # kept
    assert await actions.audit.flush(producer) == 1
    (record,) = await read_topic(settings.kafka, settings.topics.alerts, expect=1)
    assert Alert.from_json(record[1]).subject == "ip:203.0.113.10"


async def test_false_positive_feedback(
    actions: OperatorActions, redis: Redis, settings: Settings
) -> None:
    await RedisDecisions(redis, settings.redis_prefix).write(
        [_decision("consumer:partner", "challenge", 0.7)]
    )
    result = await actions.feedback(
        "consumer:partner", "false_positive", actor="alice", reason="nightly export",
        ttl_s=3600, route="/v1/export",
    )  # fmt: skip
    assert result.override is not None and result.override.kind == "allow"
    assert result.override.reason == "false positive: nightly export"
    # A route key (no --detector): 0.7 must fall below the route's challenge threshold 0.6.
    assert result.tuning_key == ("/v1/export", None)
    assert (result.adjustment_before, result.adjustment_after) == (0.0, 0.26)
    assert await Overrides(redis, settings.redis_prefix).all() == {
        "allow": ["consumer:partner"], "deny": []
    }
    # Without --route or --detector the key is the decision's detector, on every route.
    again = await actions.feedback(
        "consumer:partner", "false_positive", actor="bob", reason="again", ttl_s=3600
    )
    assert again.tuning_key == (None, "rate") and again.adjustment_after == 0.26
    # A third report on the same key starts from the second: capped.
    third = await actions.feedback(
        "consumer:partner", "false_positive", actor="bob", reason="3rd", ttl_s=3600
    )
    assert (third.adjustment_before, third.adjustment_after) == (0.26, 0.3)
    tuning = await actions.tuning.load()
    assert tuning.adjustment("/v1/export", "rate") == pytest.approx(1 - 0.74 * 0.7)
    entries = await actions.tuning.entries()
    assert entries[("/v1/export", None)]["reports"] == 1
    # Audit: feedback + the override it created, per report.
    outbox = await redis.xrange(f"{settings.redis_prefix}audit")
    alerts = [Alert.from_json(f[b"alert"]) for _, f in outbox]
    assert [a.operator.action for a in alerts if a.operator] == [
        "feedback_false_positive", "override_allow"
    ] * 3
    first = alerts[0]
    assert (first.route, first.detector, first.score, first.enforced) == (
        "/v1/export", "rate", 0.7, False
    )
    (adjusted,) = [r for r in first.reasons if r.code == "threshold_adjusted"]
    assert (adjusted.baseline, adjusted.value, adjusted.limit) == (0.0, 0.26, 0.3)


async def test_confirmed_feedback_is_recorded_and_changes_nothing(
    actions: OperatorActions, redis: Redis, settings: Settings
) -> None:
    await RedisDecisions(redis, settings.redis_prefix).write(
        [_decision("ip:203.0.113.5", "block", 0.95, "bruteforce")]
    )
    result = await actions.feedback(
        "ip:203.0.113.5", "confirmed", actor="alice", reason="stuffing", ttl_s=None
    )
    assert result.override is None and result.tuning_key is None
    assert await Overrides(redis, settings.redis_prefix).all() == {"allow": [], "deny": []}
    assert await actions.tuning.entries() == {}
    (alert,) = result.alerts
    assert (alert.action, alert.detector, alert.operator.action) == (  # type: ignore[union-attr]
        "block", "bruteforce", "feedback_confirmed"
    )


async def test_feedback_input_is_checked(actions: OperatorActions) -> None:
    for kwargs, message in [
        ({"detector": "nope"}, "unknown detector 'nope'"),
        ({"route": "v1/export"}, "must be a route template"),
        ({"reason": ""}, "needs a reason"),
    ]:
        args = {"actor": "a", "reason": "r", "ttl_s": None} | kwargs
        with pytest.raises(OperatorError, match=message):
            await actions.feedback("consumer:c", "false_positive", **args)  # type: ignore[arg-type]
    assert await actions.audit.pending() == 0


async def test_workers_load_overrides_and_adjustments(
    actions: OperatorActions, redis: Redis, settings: Settings, producer: AIOKafkaProducer
) -> None:
    await actions.feedback(
        "consumer:partner", "false_positive", actor="a", reason="r", ttl_s=3600,
        detector="rate", route="/v1/export",
    )  # fmt: skip
    await actions.override("allow", "ip:192.0.2.9", actor="a", reason="r", ttl_s=0.2)
    proc = processor()
    sync = OperatorSync.from_settings(redis, settings)
    await asyncio.sleep(0.3)  # the second override expires
    await sync.refresh(proc, producer)
    assert proc.allowed == frozenset({"consumer:partner"})
    assert isinstance(proc.policy.tuning, Tuning)
    assert proc.policy.tuning.adjustment("/v1/export/{id}", "rate") == 0.05
    assert await actions.audit.pending() == 0  # the worker published the queue
    records = await read_topic(settings.kafka, settings.topics.alerts, expect=3)
    assert len(records) == 3


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "pipeline", *args], env=gatewatch_env(settings), cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("subject", ["ip:not-an-ip", "ip:10.0.0.0/8"])
async def test_cli_refuses_a_malformed_subject_with_one_line(
    settings: Settings, redis: Redis, subject: str
) -> None:
    done = await asyncio.to_thread(_cli, settings, "override", "deny", subject, "--reason", "x")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "accepted: consumer:<id>" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert [k async for k in redis.scan_iter(f"{settings.redis_prefix}*")] == []


async def test_cli_feedback_audits_the_os_user_or_the_actor(
    settings: Settings, redis: Redis
) -> None:
    await ensure_topics(settings)
    done = await asyncio.to_thread(
        _cli, settings, "feedback", "consumer:partner", "--false-positive",
        "--reason", "nightly export", "--detector", "rate", "--ttl", "2h", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = orjson.loads(done.stdout)
    assert answer["actor"] == getpass.getuser() and answer["audit_pending"] == 0
    assert answer["tuning"] == {"route": None, "detector": "rate", "before": 0.0, "after": 0.05}
    expires = answer["override"]["expires_at"] - answer["override"]["created_at"]
    assert expires == 2 * 3600 * 1000
    done = await asyncio.to_thread(
        _cli, settings, "override", "deny", "ip:203.0.113.9", "--reason", "scanner",
        "--actor", "soc-bot", "--ttl", "never",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = await read_topic(settings.kafka, settings.topics.alerts, expect=3)
    actors = [Alert.from_json(v).operator.actor for _, v, _ in records]  # type: ignore[union-attr]
    assert actors == [getpass.getuser(), getpass.getuser(), "soc-bot"]
    listed = await asyncio.to_thread(_cli, settings, "override", "list", "--json")
    data = orjson.loads(listed.stdout)
    assert data["deny"] == ["ip:203.0.113.9"] and data["allow"] == ["consumer:partner"]


async def test_feedback_endpoint(
    settings: Settings, redis: Redis, producer: AIOKafkaProducer
) -> None:
    settings = settings.model_copy(update={"operator_tokens": {"alice": SecretStr(OPERATOR_TOKEN)}})
    decisions = RedisDecisions(redis, settings.redis_prefix)
    await decisions.write([_decision("consumer:partner", "challenge", 0.6)])
    app = create_decision_app(
        decisions,
        token=settings.decision_api_token.get_secret_value(),
        operator=operator_api(operator_actions(redis, settings), settings),
    )
    runner, url = await serve(app)
    body = {"subject": "consumer:partner", "verdict": "false_positive", "reason": "export"}
    try:
        async with aiohttp.ClientSession() as http:
            async def post(token: str | None, data: object) -> tuple[int, dict]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with http.post(f"{url}/v1/feedback", json=data, headers=headers) as r:
                    return r.status, await r.json()

            assert (await post(None, body))[0] == 401
            assert (await post("wrong", body))[0] == 401
            status, answer = await post(settings.decision_api_token.get_secret_value(), body)
            assert status == 403 and "operator token" in answer["error"]
            status, answer = await post(OPERATOR_TOKEN, body | {"subject": "ip:10.0.0.0/8"})
            assert status == 400 and "/24" in answer["error"]
            status, answer = await post(OPERATOR_TOKEN, body | {"verdict": "maybe"})
            assert status == 400 and answer["error"].startswith("invalid feedback: verdict")
            status, answer = await post(OPERATOR_TOKEN, body | {"ttl_s": 600})
            assert status == 200, answer
            assert answer["actor"] == "alice" and answer["decision"]["action"] == "challenge"
            assert answer["override"]["expires_at"] - answer["override"]["created_at"] == 600_000
            assert answer["tuning"]["detector"] == "rate"
        # Published in the background by the API, as the authenticated operator.
        records = await read_topic(settings.kafka, settings.topics.alerts, expect=2)
        alerts = [Alert.from_json(v) for _, v, _ in records]
        assert {a.operator.actor for a in alerts if a.operator} == {"alice"}
        assert sorted(a.id for a in alerts) == sorted(answer["alerts"])
    finally:
        await runner.cleanup()
