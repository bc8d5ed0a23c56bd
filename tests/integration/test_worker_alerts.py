"""A real worker (Faust) between a real broker and a real Redis writes alerts for an attack: in
shadow mode, a credential-stuffing run becomes "would block" decision alerts, a scanner's SQL
injections one finding per window with a count, PII in a URL a finding about the route; every
record is valid against the shipped JSON Schema and cites request ids the gateway logged. The
worker's /metrics, on its Faust web port bound to 127.0.0.1, answers with the worker metrics."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from pipeline.alerts import Alert
from pipeline.config import Settings
from pipeline.decisions import RedisDecisions
from pipeline.ingest.collector import collector_app
from pipeline.stack import stop_process

from .conftest import PYTHON, ROOT, gatewatch_env, serve

SCHEMA = json.loads((ROOT / "pipeline" / "schemas" / "alert.schema.json").read_text())
STUFFER = "198.51.100.77"
SCANNER = "203.0.113.66"
SQLI = "1' UNION SELECT password FROM users--"
PAYLOADS = 200


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Shadow mode, as a rollout starts; short finding windows so their final counts come soon.
    return settings.model_copy(
        update={"mode": "shadow", "alert_window_s": 2.0, "alerts_retention_ms": 259_200_000}
    )


@pytest.fixture
def worker(settings: Settings, tmp_path: Path):
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


def entry(
    rid: str,
    ip: str,
    uri: str,
    status: int,
    ts_ms: int,
    method: str = "GET",
    query: dict | None = None,
) -> dict:
    return {
        "request": {
            "id": rid,
            "method": method,
            "uri": uri,
            "headers": {"user-agent": "curl/8.5.0"},
            "querystring": query or {},
            "size": 200,
        },
        "response": {"status": status, "size": 100},
        "latencies": {"request": 12, "kong": 1, "proxy": 11},
        "client_ip": ip,
        "started_at": ts_ms,
    }


async def consume_until(
    settings: Settings,
    done: Callable[[list[tuple[bytes, Alert]]], bool],
    timeout_s: float,
    worker: subprocess.Popen,
) -> list[tuple[bytes, Alert]]:
    """Alerts from the start of the alerts topic, each checked against the JSON Schema, until
    `done` says enough (an event, not a sleep)."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=200,
    )
    await consumer.start()
    seen: list[tuple[bytes, Alert]] = []
    try:
        async with asyncio.timeout(timeout_s):
            partitions = consumer.partitions_for_topic(settings.topics.alerts)
            while not partitions:
                await consumer.topics()
                partitions = consumer.partitions_for_topic(settings.topics.alerts)
            consumer.assign([TopicPartition(settings.topics.alerts, p) for p in partitions])
            while not done(seen):
                assert worker.poll() is None, "the worker exited"
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    for r in records:
                        validator.validate(orjson.loads(r.value))  # the shipped schema
                        seen.append((r.key, Alert.from_json(r.value)))
    finally:
        await consumer.stop()
    return seen


def final_counts(alerts: list[Alert], code: str) -> dict[str, int]:
    """The highest count per id of one finding code: what a downstream upsert keeps."""
    out: dict[str, int] = {}
    for a in alerts:
        if a.kind == "finding" and a.reasons[0].code == code:
            out[a.id] = max(out.get(a.id, 0), a.count)
    return out


async def test_worker_writes_schema_valid_alerts_with_evidence_and_serves_metrics(
    worker: subprocess.Popen, settings: Settings, redis: Redis
) -> None:
    now = int(time.time() * 1000)
    benign = [entry(f"ok-{i}", f"192.0.2.{i}", "/v1/products", 200, now + i) for i in range(50)]
    stuffing = [
        entry(f"login-{i}", STUFFER, "/v1/auth/login", 401, now + 100 + i * 50, method="POST")
        for i in range(30)
    ]
    scan = [
        entry(f"scan-{i}", SCANNER, "/v1/search", 200, now + 200 + i, query={"q": SQLI})
        for i in range(PAYLOADS)
    ]
    pii = [entry("pii-0", "192.0.2.200", "/v1/users/alice@example.com/orders", 200, now + 300)]
    posted = benign + stuffing + scan + pii
    async with collector_app(settings) as app:
        runner, base = await serve(app)
        try:
            async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {settings.ingest_token.get_secret_value()}"}
            ) as http:
                async with http.post(f"{base}/kong", data=orjson.dumps(posted)) as resp:
                    assert (await resp.json())["accepted"] == len(posted)
        finally:
            await runner.cleanup()

    def enough(seen: list[tuple[bytes, Alert]]) -> bool:
        alerts = [a for _, a in seen]
        blocked = any(
            a.kind == "decision" and a.subject == f"ip:{STUFFER}" and a.action == "block"
            for a in alerts
        )
        scanned = sum(final_counts(alerts, "sqli").values()) == PAYLOADS
        return blocked and scanned and bool(final_counts(alerts, "pii_in_url"))

    seen = await consume_until(settings, enough, timeout_s=90, worker=worker)
    alerts = [a for _, a in seen]
    assert all(key == a.subject.encode() for key, a in seen), "alerts are keyed by subject"
    ids_of = {e["request"]["id"]: e["client_ip"] for e in posted}

    # Credential stuffing in shadow mode: "would block", reasons and technique, its own requests.
    stuffed = [a for a in alerts if a.kind == "decision" and a.subject == f"ip:{STUFFER}"]
    block = next(a for a in stuffed if a.action == "block")
    assert block.mode == "shadow" and not block.enforced
    assert block.title == f"would block ip:{STUFFER}: credential stuffing"
    assert block.reasons[0].code == "credential_stuffing" and block.attack == ["T1110.004"]
    assert block.reasons[0].feature == "failed_logins" and block.reasons[0].limit == 5.0
    assert block.detector_versions["bruteforce"] and block.model_version.startswith("gatewatch-")
    assert block.evidence and all(ids_of[rid] == STUFFER for rid in block.evidence)
    assert len({a.id for a in stuffed}) == len(stuffed), "one alert per change"

    # 200 SQL injections: one finding per window (here 2 s), counts adding up, not 200 alerts.
    sqli = [a for a in alerts if a.kind == "finding" and a.reasons[0].code == "sqli"]
    assert len(final_counts(alerts, "sqli")) <= 2 and len(sqli) <= 4
    for a in sqli:
        assert a.subject == f"ip:{SCANNER}" and a.attack == ["T1190"] and a.client_ip == SCANNER
        assert 1 <= len(a.evidence) <= 5 and all(ids_of[rid] == SCANNER for rid in a.evidence)
    [pii_alert] = {
        a.id: a for a in alerts if a.kind == "finding" and a.reasons[0].code == "pii_in_url"
    }.values()
    assert pii_alert.scope == "route" and pii_alert.evidence == ["pii-0"]
    assert "alice" not in pii_alert.to_json().decode()
    assert not any(a.subject.startswith("ip:192.0.2.") for a in alerts if a.kind == "decision")

    # Metrics on the worker's web port, once every event is counted.
    decisions = RedisDecisions(redis, settings.redis_prefix)
    async with asyncio.timeout(30):
        while (await decisions.stats()).get("events_processed", 0) < len(posted):
            await redis.xread({decisions.stream: "$"}, block=200)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{settings.web_port}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    got = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            got[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert got[("gatewatch_worker_events_total", ())] == len(posted)
    assert got[("gatewatch_worker_envelopes_total", ())] >= 1
    assert got[("gatewatch_processing_lag_seconds_count", ())] == len(posted)
    assert got[("gatewatch_subjects_held", ())] >= 50
    assert got[("gatewatch_alerts_emitted_total", (("kind", "decision"),))] >= 2
    assert got[("gatewatch_alerts_emitted_total", (("kind", "finding"),))] >= 2
    shadow_blocks = [
        v
        for (name, labels), v in got.items()
        if name == "gatewatch_decisions_total"
        and ("action", "block") in labels
        and ("mode", "shadow") in labels
    ]
    assert sum(shadow_blocks) >= 2
    lags = {
        dict(labels)["partition"]: v
        for (name, labels), v in got.items()
        if name == "gatewatch_consumer_lag"
    }
    assert lags and all(v == 0 for v in lags.values()), lags  # all processed: no lag

    # The web server listens on 127.0.0.1 only.
    assert _listening_addresses(settings.web_port) == {"127.0.0.1"}

    # The alerts topic is a log, not compacted, kept for the configured retention.
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        [described] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.topics.alerts)]
        )
    finally:
        await admin.close()
    configs = {e[0]: e[1] for e in described.resources[0][4]}
    assert configs["cleanup.policy"] == "delete"
    assert configs["retention.ms"] == "259200000"


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on `port` (from /proc/net/tcp{,6})."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                if len(address) == 8:
                    out.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    words = bytes.fromhex(address)
                    raw = b"".join(words[i : i + 4][::-1] for i in range(0, 16, 4))
                    out.add(socket.inet_ntop(socket.AF_INET6, raw))
    return out
