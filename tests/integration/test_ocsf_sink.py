"""The OCSF sink under the runner on the real broker: findings written to a rotating JSON-lines
file, each one valid OCSF 1.8.0, every alert there once; and POSTed as
NDJSON to an HTTP collector that answers 503 with Retry-After and refuses one bad line with 400
(halved until only that alert is dead-lettered)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer

from pipeline.alerts import Alert
from pipeline.config import Settings
from sinks.ocsf import OcsfSink, build
from tests.alert_samples import alert
from tests.sinklib import produce, runner_for, with_settings
from tests.unit.test_ocsf import SCHEMAS

from .conftest import serve


def findings_in(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(directory.iterdir(), key=lambda p: p.name, reverse=True)
        for line in path.read_bytes().splitlines()
    ]


@contextlib.asynccontextmanager
async def a_runner(settings: Settings) -> AsyncIterator[Any]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    sink = build(settings)
    await sink.start()
    runner = runner_for(settings, sink, producer)
    await runner.consumer.start()
    try:
        yield runner
    finally:
        await runner.consumer.stop()
        await sink.close()
        await producer.stop()


async def steps(runner: Any, records: int) -> int:
    """Whole batches until at least `records` records were handled; how many were."""
    handled = 0
    async with asyncio.timeout(30):
        while handled < records:
            handled += await runner.step(idle_s=0.2)
    return handled


async def test_findings_reach_a_rotating_file_valid_and_complete(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "ocsf"
    settings = with_settings(
        settings,
        sink_ocsf_path=str(out / "findings.jsonl"),
        sink_ocsf_rotate_bytes=64 * 1024,
        sink_ocsf_keep=50,
        sink_batch_max_alerts=50,
        sink_batch_linger_ms=20,
    )
    alerts = [alert(n) for n in range(300)]
    await produce(settings, [a.to_json() for a in alerts])
    async with a_runner(settings) as runner:
        await steps(runner, len(alerts))
    findings = findings_in(out)
    assert sorted(f["finding_info"]["uid"] for f in findings) == sorted(a.id for a in alerts)
    assert len(list(out.iterdir())) > 2  # rotated on the way
    for finding in findings:
        assert SCHEMAS["pinned"].validate(finding, "detection_finding") == []


class Collector:
    """An NDJSON endpoint: Bearer token, gzip, a scripted answer or 400 for a line it refuses."""

    def __init__(self, token: str, refuse: str) -> None:
        self.token = token
        self.refuse = refuse
        self.script: list[web.Response] = []
        self.findings: list[dict[str, Any]] = []
        self.statuses: list[int] = []

    async def handle(self, request: web.Request) -> web.Response:
        response = await self._answer(request)
        self.statuses.append(response.status)
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401)
        if request.headers.get("Content-Encoding") != "gzip":
            return web.Response(status=415, text="gzip expected")
        body = await request.read()  # aiohttp has decompressed it
        if self.script:
            return self.script.pop(0)
        lines = [json.loads(line) for line in body.splitlines()]
        if any(self.refuse in line["message"] for line in lines):
            return web.Response(status=400, text="mapping error in line")
        self.findings += lines
        return web.Response(status=200)


async def test_ndjson_endpoint_retries_and_halves_to_the_refused_alert(
    settings: Settings,
) -> None:
    collector = Collector("ocsf-token", refuse="REFUSE")
    collector.script.append(web.Response(status=503, headers={"Retry-After": "4"}))
    app = web.Application()
    app.router.add_post("/ingest", collector.handle)
    server, base = await serve(app)
    settings = with_settings(settings, sink_ocsf_url=f"{base}/ingest", sink_ocsf_token="ocsf-token")
    sink: OcsfSink = build(settings)
    await sink.start()
    alerts: list[Alert] = [alert(n) for n in range(10)]
    alerts[6] = alert(6, title="REFUSE me")
    try:
        busy = await sink.send(alerts)
        delivery = await sink.send(alerts)
    finally:
        await sink.close()
        await server.cleanup()
    assert busy.retry == [a.id for a in alerts] and busy.retry_after == 4.0
    assert delivery.rejected == {alerts[6].id: "HTTP 400: mapping error in line"}
    assert not delivery.retry
    got = sorted(f["finding_info"]["uid"] for f in collector.findings)
    assert got == sorted(a.id for a in alerts if a is not alerts[6])
    # 503, then 10 -> 5 + 5 -> the refused five halved down to the one at fault
    assert collector.statuses[:2] == [503, 400] and collector.statuses.count(400) == 4
