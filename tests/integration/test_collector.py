"""The collector against a real broker: what Kong's http-log sends ends up on Kafka, redacted;
bad entries go to the dead-letter topic with a reason; only 401 and 413 refuse a request."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from pipeline import envelopes
from pipeline.config import Settings
from pipeline.ingest.collector import collector_app
from pipeline.ingest.guards import SIGNATURE_HEADER, TIMESTAMP_HEADER, SenderAuth
from pipeline.stack import EmbeddedStack, free_port, stop_process, wait_for_port
from tests.unit.test_guards import chunked_upload

from .conftest import FIXTURES, PYTHON, ROOT, gatewatch_env, read_topic, serve

KONG_FILES = sorted((FIXTURES / "kong").glob("*.json"))
SECRET_APIKEY = b"my-secret-key-not-redacted"


@pytest.fixture
async def collector(settings: Settings):
    async with collector_app(settings) as app:
        runner, base = await serve(app)
        try:
            yield base
        finally:
            await runner.cleanup()


def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.ingest_token.get_secret_value()}"}


async def test_all_kong_versions_reach_kafka_redacted(collector: str, settings: Settings) -> None:
    body = b"[" + b",".join(f.read_bytes() for f in KONG_FILES) + b"]"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{collector}/kong", data=body, headers=auth(settings)) as resp:
            assert resp.status == 200
            assert await resp.json() == {
                "accepted": 4,
                "rejected": 0,
                "duplicates": 0,
                "reasons": [],
            }

    records = await read_topic(settings.kafka, settings.topics.events, expect=1)
    events = [e for _, value, _ in records for e in envelopes.decode(value)]
    assert len(events) == 4
    by_id = {e.request_id: e for e in events}
    assert by_id["2f6946328ffc4946b8c9120704a4a155"].upstream_status == 200
    constructed = by_id["9c3b1e0f6a2d4e7b8f01c2d3e4f5a6b7"]
    assert constructed.status == 429 and constructed.upstream_latency_ms is None
    assert constructed.credential and constructed.credential.startswith("hmac:")
    for key, value, _ in records:
        assert SECRET_APIKEY not in value
        partition = int(key.decode()[1:])
        for e in envelopes.decode(value):
            assert envelopes.partition_for(e.partition_subject(), settings.partitions) == partition


async def test_single_object_body_is_accepted(collector: str, settings: Settings) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{collector}/v1/ingest/kong", data=KONG_FILES[0].read_bytes(), headers=auth(settings)
        ) as resp:
            assert (await resp.json())["accepted"] == 1


async def test_bad_entries_go_to_dlq_and_good_ones_go_through(
    collector: str, settings: Settings
) -> None:
    good = json.loads((FIXTURES / "kong" / "kong-3.9-serializer-constructed-429.json").read_text())
    bad_status = json.loads(json.dumps(good))
    bad_status["response"]["status"] = "teapot"
    body = orjson.dumps([good, 42, bad_status, {"request": {"method": "GET"}}])
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{collector}/kong", data=body, headers=auth(settings)) as resp:
            assert resp.status == 200
            answer = await resp.json()
        async with http.post(
            f"{collector}/kong", data=b"{not json", headers=auth(settings)
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["rejected"] == 1
        async with http.get(f"{collector}/metrics") as resp:
            metrics = await resp.text()

    assert answer["accepted"] == 1 and answer["rejected"] == 3
    dead = await read_topic(settings.kafka, settings.topics.dlq, expect=4)
    reasons = sorted(headers["gatewatch.reason"].decode() for _, _, headers in dead)
    assert any(r.startswith("malformed JSON") for r in reasons)
    assert any(r.startswith("response.status") for r in reasons)
    assert any(r.startswith("entry: expected an object") for r in reasons)
    assert any(r.startswith("response: missing") for r in reasons)
    assert all(SECRET_APIKEY not in value for _, value, _ in dead)
    events = await read_topic(settings.kafka, settings.topics.events, expect=1)
    assert sum(len(envelopes.decode(v)) for _, v, _ in events) == 1
    assert 'gatewatch_ingest_events_total{outcome="rejected",source="kong"} 4.0' in metrics
    assert 'gatewatch_ingest_rejects_total{reason="response.status",source="kong"} 1.0' in metrics


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic dGVzdA=="])
async def test_unauthenticated_senders_are_refused(
    collector: str, settings: Settings, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{collector}/kong", data=KONG_FILES[0].read_bytes(), headers=headers
        ) as resp:
            assert resp.status == 401
        async with http.get(f"{collector}/metrics") as resp:
            assert 'gatewatch_ingest_requests_total{status="401"} 1.0' in await resp.text()


async def test_oversize_body_is_refused(services, settings: Settings) -> None:
    settings.max_body_bytes = 1024
    async with collector_app(settings) as app:
        runner, base = await serve(app)
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{base}/kong", data=b"[" + b" " * 4096 + b"]", headers=auth(settings)
                ) as resp:
                    assert resp.status == 413
        finally:
            await runner.cleanup()


async def test_kafka_down_answers_503_when_the_spool_is_off(settings: Settings) -> None:
    """A broker of its own, stopped after the collector connected: without a spool the POST
    must not be 2xx (Kong keeps the batch and retries)."""
    broker = EmbeddedStack().start()
    settings.kafka = broker.kafka
    settings.kafka_timeout_s = 2.0
    settings.spool_dir = "off"
    try:
        async with collector_app(settings) as app:
            runner, base = await serve(app)
            try:
                broker.stop()
                async with aiohttp.ClientSession() as http:
                    async with http.post(
                        f"{base}/kong", data=KONG_FILES[0].read_bytes(), headers=auth(settings)
                    ) as resp:
                        assert resp.status == 503
                        assert resp.headers["Retry-After"] == "5"
            finally:
                await runner.cleanup()
    finally:
        broker.stop()


async def test_kafka_down_with_a_spool_answers_200_and_keeps_the_entries(
    settings: Settings, tmp_path
) -> None:
    """The same outage with the spool on: acknowledged, fsync'd on disk, still there after the
    collector stopped (the broker never came back)."""
    broker = EmbeddedStack().start()
    settings.kafka = broker.kafka
    settings.kafka_timeout_s = 2.0
    settings.spool_after_s = 0.5
    try:
        async with collector_app(settings, spool="c1") as app:
            runner, base = await serve(app)
            try:
                broker.stop()
                async with aiohttp.ClientSession() as http:
                    async with http.post(
                        f"{base}/kong", data=KONG_FILES[0].read_bytes(), headers=auth(settings)
                    ) as resp:
                        assert resp.status == 200
                        assert (await resp.json())["accepted"] == 1
                    async with http.get(f"{base}/metrics") as resp:
                        metrics = await resp.text()
            finally:
                await runner.cleanup()
    finally:
        broker.stop()
    assert "gatewatch_spool_records 1.0" in metrics
    assert "gatewatch_spool_spooled_total 1.0" in metrics
    assert list((tmp_path / "gatewatch-spool" / "c1").glob("*.seg"))


async def test_hmac_signed_body_is_accepted_and_forgeries_are_not(
    collector: str, settings: Settings
) -> None:
    settings_secret = settings.ingest_hmac_secret.get_secret_value().encode()
    body = KONG_FILES[2].read_bytes()
    now = int(time.time())
    good = {
        TIMESTAMP_HEADER: str(now),
        SIGNATURE_HEADER: SenderAuth.sign(settings_secret, body, now),
    }
    tampered = dict(good)
    stale = {
        TIMESTAMP_HEADER: str(now - 3600),
        SIGNATURE_HEADER: SenderAuth.sign(settings_secret, body, now - 3600),
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{collector}/kong", data=body, headers=good) as resp:
            assert resp.status == 200 and (await resp.json())["accepted"] == 1
        async with http.post(f"{collector}/kong", data=body + b" ", headers=tampered) as resp:
            assert resp.status == 401
        async with http.post(f"{collector}/kong", data=body, headers=stale) as resp:
            assert resp.status == 401
        async with http.get(f"{collector}/metrics") as resp:
            metrics = await resp.text()
    assert (
        'gatewatch_ingest_unauthorized_total{reason="bad signature",source="kong"} 1.0' in metrics
    )
    assert (
        'gatewatch_ingest_unauthorized_total{reason="stale timestamp",source="kong"} 1.0' in metrics
    )


async def test_kong_retry_of_a_landed_batch_is_deduplicated(
    collector: str, settings: Settings
) -> None:
    body = b"[" + b",".join(f.read_bytes() for f in KONG_FILES) + b"]"
    async with aiohttp.ClientSession(headers=auth(settings)) as http:
        async with http.post(f"{collector}/kong", data=body) as resp:
            first = await resp.json()
        async with http.post(f"{collector}/kong", data=body) as resp:
            retry = await resp.json()
    # Two of the four Kong versions carry a request id; the others cannot be told apart.
    assert first["accepted"] == 4 and first["duplicates"] == 0
    assert retry["accepted"] == 2 and retry["duplicates"] == 2
    records = await read_topic(settings.kafka, settings.topics.events, expect=2)
    ids = [e.request_id for _, v, _ in records for e in envelopes.decode(v) if e.request_id]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 2


async def test_too_many_entries_and_a_flooding_source_are_refused(settings: Settings) -> None:
    settings.max_entries_per_request = 3
    settings.source_rate_limit = 1
    settings.source_burst = 3
    entry = json.loads(KONG_FILES[2].read_text())
    async with collector_app(settings) as app:
        runner, base = await serve(app)
        try:
            async with aiohttp.ClientSession(headers=auth(settings)) as http:
                async with http.post(f"{base}/kong", data=orjson.dumps([entry] * 4)) as resp:
                    assert resp.status == 413
                async with http.post(f"{base}/kong", data=orjson.dumps([entry] * 3)) as resp:
                    assert resp.status == 200
                async with http.post(f"{base}/kong", data=orjson.dumps([entry] * 3)) as resp:
                    assert resp.status == 429
                    assert int(resp.headers["Retry-After"]) >= 1
        finally:
            await runner.cleanup()


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set (VmHWM, Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_concurrent_chunked_uploads_stay_within_the_inflight_limit(
    settings: Settings, tmp_path: Path
) -> None:
    """12 concurrent 7 MiB chunked uploads to a real collector process: the bodies it holds at
    once stay near its 16 MiB limit (the rest are answered 503 mid-stream), so its peak memory
    grows by a fraction of the 84 MiB they add up to."""
    port = free_port()
    log = open(tmp_path / "collector.log", "wb")  # noqa: ASYNC230 - the child writes to it
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the measurement
        [PYTHON, "-m", "pipeline", "collector", "--port", str(port)],
        env=gatewatch_env(settings),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc, 60)
        headers = auth(settings)
        entry = KONG_FILES[2].read_bytes()
        async with aiohttp.ClientSession(headers=headers) as http:  # warm up: one real POST
            async with http.post(f"http://127.0.0.1:{port}/kong", data=entry) as resp:
                assert resp.status == 200
        before = peak_rss_bytes(proc.pid)
        body = b"[" + b" " * (7 * 1024 * 1024 - len(entry) - 2) + entry + b"]"
        results = await asyncio.gather(
            *(chunked_upload(port, headers, body, pace_s=0.002) for _ in range(12))
        )
        growth = peak_rss_bytes(proc.pid) - before
    finally:
        stop_process(proc)
        log.close()
    statuses = sorted(status for status, _ in results)
    print(f"statuses={statuses} peak_rss_growth={growth / 2**20:.1f} MiB")
    assert statuses.count(200) >= 1 and statuses.count(503) >= 6
    assert set(statuses) <= {200, 503}
    assert growth < 40 * 2**20


async def test_implausible_entries_go_to_the_dlq_with_their_reason(settings: Settings) -> None:
    """The production event-time window on: a status of 99999 and a negative or far-future
    timestamp are dead letters with a reason; their neighbours go through."""
    settings.event_max_future_s = 86_400
    settings.event_max_age_s = 30 * 86_400
    now = int(time.time() * 1000)
    good = json.loads(KONG_FILES[2].read_text()) | {"started_at": now}
    bad_status = json.loads(json.dumps(good))
    bad_status["response"]["status"] = 99999
    body = orjson.dumps(
        [good, bad_status, good | {"started_at": -1}, good | {"started_at": now + 3 * 86_400_000}]
    )
    async with collector_app(settings) as app:
        runner, base = await serve(app)
        try:
            async with aiohttp.ClientSession(headers=auth(settings)) as http:
                async with http.post(f"{base}/kong", data=body) as resp:
                    answer = await resp.json()
        finally:
            await runner.cleanup()
    assert answer["accepted"] == 1 and answer["rejected"] == 3
    dead = await read_topic(settings.kafka, settings.topics.dlq, expect=3)
    assert sorted(headers["gatewatch.reason"].decode() for _, _, headers in dead) == [
        "response.status: 99999 is not an HTTP status (100-599)",
        "started_at: -1 is not an epoch-millisecond timestamp",
        "started_at: 3 days in the future (limit 1 day)",
    ]
