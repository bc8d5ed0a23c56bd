"""Kill a sink mid-stream and restart it: `gatewatch sink splunk` as a child process, SIGKILLed
while a batch is out at the receiver (the HEC contract server holds it), then started again; every
alert reaches the receiver at least once and none is skipped (distinct ids counted there). The
restarted process serves /metrics and prints its summary as JSON when stopped."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import IO

import aiohttp
import orjson

from pipeline.config import Settings
from pipeline.stack import free_port
from tests.receivers.hec import HecServer
from tests.sinklib import make_alert, produce, with_settings

from .conftest import PYTHON, ROOT, gatewatch_env, serve


async def start_sink(settings: Settings, log: IO[bytes], *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "pipeline",
        "sink",
        "splunk",
        *extra,
        cwd=ROOT,
        env=gatewatch_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )


async def test_a_killed_sink_resumes_without_losing_or_skipping(
    settings: Settings, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    server = HecServer(expect=3000, gate=gate, gate_after=500)
    web_runner, base = await serve(server.app())
    settings = with_settings(
        settings,
        sink_splunk_url=base,
        sink_splunk_token=server.token,
        sink_batch_max_alerts=100,
        sink_batch_linger_ms=20,
        sink_backoff_initial_s=0.05,
        sink_backoff_max_s=0.5,
    )
    log = (tmp_path / "sink.log").open("ab")
    first = second = None
    try:
        await produce(settings, [make_alert(i).to_json() for i in range(2000)])
        first = await start_sink(settings, log)
        async with asyncio.timeout(60):
            await server.held.wait()  # 500+ indexed, the next batch is out and unanswered
        before = len(set(server.ids()))
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        await produce(settings, [make_alert(i).to_json() for i in range(2000, 3000)])
        gate.set()  # the receiver is fine again; the dead process's last batch is not committed

        metrics_port = free_port()
        second = await start_sink(settings, log, "--metrics-port", str(metrics_port), "--json")
        async with asyncio.timeout(120):  # the group waits out the killed member's session
            await server.indexed.wait()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                metrics = await resp.text()
        second.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 0
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
        await web_runner.cleanup()
        log.close()

    ids = server.ids()
    assert 500 <= before < 3000
    assert set(ids) == {make_alert(i).id for i in range(3000)}  # none lost, none skipped
    duplicates = len(ids) - 3000
    assert 0 <= duplicates <= 2 * 100  # at most the batches that were out when it died
    [summary] = orjson.loads(out.splitlines()[-1])["sinks"]
    assert summary["sink"] == "splunk"
    assert summary["delivered"] >= 3000 - before
    assert summary["rejected"] == summary["malformed"] == 0
    assert 'gatewatch_sink_alerts_total{outcome="delivered",sink="splunk"}' in metrics
    assert "gatewatch_sink_lag" in metrics
