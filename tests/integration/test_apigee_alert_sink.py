"""`gatewatch sink apigee`: decision alerts from the real broker to an endpoint standing in for the
Apigee decision-ingest proxy (Apigee cannot run here), under the sink runner: decisions pushed
with their remaining TTL, findings and expired decisions not pushed, a busy proxy retried, a
malformed subject dead-lettered with the proxy's answer."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiokafka import AIOKafkaProducer

from pipeline.config import Settings
from sinks.apigee import build
from tests.sinklib import make_alert, produce, runner_for, with_settings

from .conftest import read_topic, serve


async def test_decision_alerts_reach_the_proxy(settings: Settings) -> None:
    now = int(time.time() * 1000)
    live = make_alert(1).model_copy(update={"expires_at": now + 600_000})
    busy = make_alert(2).model_copy(update={"expires_at": now + 300_000})
    bad = make_alert(4).model_copy(update={"subject": "ip:bad", "expires_at": now + 60_000})
    expired = make_alert(7).model_copy(update={"expires_at": now - 1000})
    finding = make_alert(10)  # kind "finding": nothing for Apigee to cache
    assert finding.kind == "finding"
    received: list[dict] = []
    refusals = {busy.subject: 2}
    all_in = asyncio.Event()

    async def ingest(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer proxy-token":
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.json()
        if body["subject"] == "ip:bad":
            return web.json_response({"error": "invalid subject"}, status=400)
        if refusals.get(body["subject"], 0) > 0:
            refusals[body["subject"]] -= 1
            return web.json_response({"error": "cache busy"}, status=503)
        received.append(body)
        if len(received) == 2:
            all_in.set()
        return web.json_response({"stored": True})

    app = web.Application()
    app.router.add_post("/gatewatch/decisions", ingest)
    web_runner, base = await serve(app)
    settings = with_settings(
        settings,
        apigee_ingest_url=f"{base}/gatewatch/decisions",
        apigee_ingest_token="proxy-token",
        sink_backoff_initial_s=0.01,
        sink_backoff_max_s=0.05,
    )
    await produce(settings, [a.to_json() for a in (live, busy, bad, expired, finding)])
    sink = build(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    runner = runner_for(settings, sink, producer)
    await sink.start()
    await runner.consumer.start()
    task = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(30):
            await all_in.wait()
            dlq = await read_topic(settings.kafka, settings.topics.dlq, expect=1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.consumer.stop()
        await sink.close()
        await producer.stop()
        await web_runner.cleanup()
    by_subject = {r["subject"]: r for r in received}
    assert set(by_subject) == {live.subject, busy.subject}
    assert by_subject[live.subject]["action"] == live.action
    assert 590 <= by_subject[live.subject]["ttl_s"] <= 600
    assert refusals[busy.subject] == 0  # retried until the proxy took it
    [(_, value, headers)] = dlq
    assert value == bad.to_json()
    assert headers["gatewatch.reason"].startswith(b"apigee: HTTP 400")
