"""The ingest commands as an operator runs them (`gatewatch tcp-log`, `bridge`, `collector`,
`syslog`): /metrics on `--metrics-port` with their counters, every listener on 127.0.0.1 unless
told otherwise, and an unusable spool directory stopping the command with one line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.config import Settings
from pipeline.kafka import ensure_topics
from pipeline.stack import free_port, stop_process, wait_for_port

from .conftest import FIXTURES, PYTHON, ROOT, gatewatch_env

KONG = FIXTURES / "kong"


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (Linux /proc/net/tcp and tcp6)."""
    found = set()
    for table, size in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if size == 8:
                    found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.add("ipv6:" + address)
    return found


@pytest.fixture
def run(settings: Settings, tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, wait_port: int) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"{args[0]}.log", "ab") as log:
            proc = subprocess.Popen(
                [PYTHON, "-m", "pipeline", *args],
                env=gatewatch_env(settings),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        wait_for_port(wait_port, proc, 60)
        return proc

    yield start
    for proc in procs:
        stop_process(proc, timeout_s=20)


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            return await resp.text()


async def until_metric(port: int, line: str, timeout_s: float = 30) -> str:
    """Scrape until `line` shows (a scrape endpoint has no event to await: it is polled)."""
    for _ in range(int(timeout_s / 0.2)):
        if line in (text := await scrape(port)):
            return text
        await asyncio.sleep(0.2)
    raise AssertionError(f"{line!r} not in /metrics after {timeout_s} s:\n{text}")


async def test_tcp_log_serves_metrics_on_loopback(settings: Settings, run) -> None:  # type: ignore[no-untyped-def]
    port, metrics = free_port(), free_port()
    run("tcp-log", "--port", str(port), "--metrics-port", str(metrics), wait_port=port)
    wait_for_port(metrics, None, 30)
    assert listening_addresses(port) == {"127.0.0.1"}
    assert listening_addresses(metrics) == {"127.0.0.1"}
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    good = orjson.dumps(orjson.loads((KONG / "kong-3.8-docs-200.json").read_bytes()))
    writer.write(good + b"\r\n" + b'{"request": 42}\r\n')
    await writer.drain()
    text = await until_metric(
        metrics, 'gatewatch_syslog_messages_total{outcome="accepted",transport="tcp"} 1.0'
    )
    writer.close()
    assert 'gatewatch_syslog_rejects_total{reason="request",transport="tcp"} 1.0' in text
    assert "gatewatch_spool_records 0.0" in text  # the spool's backlog: its lag


async def test_bridge_serves_metrics_with_its_lag(settings: Settings, run) -> None:  # type: ignore[no-untyped-def]
    await ensure_topics(settings)
    raw = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await raw.start()
    try:
        for path in sorted(KONG.glob("*.json")):
            await raw.send_and_wait(settings.topics.raw_kong, path.read_bytes())
        await raw.send_and_wait(settings.topics.raw_kong, b'{"request": 1}')
    finally:
        await raw.stop()
    metrics = free_port()
    run("bridge", "--group", f"{settings.worker_id}-bridge", "--metrics-port", str(metrics),
        wait_port=metrics)  # fmt: skip
    assert listening_addresses(metrics) == {"127.0.0.1"}
    text = await until_metric(metrics, 'gatewatch_bridge_events_total{outcome="forwarded"} 4.0')
    assert 'gatewatch_bridge_events_total{outcome="rejected"} 1.0' in text
    assert 'gatewatch_bridge_rejects_total{reason="request"} 1.0' in text
    lags = [line for line in text.splitlines() if line.startswith("gatewatch_bridge_lag{")]
    assert lags and all(line.endswith(" 0.0") for line in lags)


async def test_ingest_listeners_and_the_api_listen_on_loopback_by_default(
    settings: Settings,
    run,  # type: ignore[no-untyped-def]
) -> None:
    collector, syslog, metrics, api = free_port(), free_port(), free_port(), free_port()
    run("collector", "--port", str(collector), wait_port=collector)
    run("syslog", "--tcp-port", str(syslog), "--metrics-port", str(metrics), wait_port=syslog)
    run("api", "--port", str(api), wait_port=api)
    wait_for_port(metrics, None, 30)
    for port in (collector, syslog, metrics, api):
        assert listening_addresses(port) == {"127.0.0.1"}, port


def test_an_unusable_spool_directory_stops_the_collector_with_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    settings.spool_dir = str(blocker)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "collector", "--port", str(free_port())],
        env=gatewatch_env(settings),
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "spool directory" in err and "not usable" in err
    assert "Traceback" not in err
