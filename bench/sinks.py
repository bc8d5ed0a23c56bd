"""Alerts per second each sink delivers to a local receiver (target: 5,000/s per sink).

Pre-loads the alerts topic with `--alerts` alerts, then for each sink runs the real command,
`gatewatch sink NAME`, as a child process reading the topic from the start (each sink its own
consumer group) and times it at the receiver, from the first alert in to the last, with the child's
CPU over that window. Receivers, in this process: the HEC and `_bulk` contract servers of the tests
(Splunk and Elasticsearch cannot run here), another topic on the broker for the Kafka sink, and a
decision-ingest stub for Apigee (one POST per decision alert, as the proxy takes them).

    .venv/bin/python bench/sinks.py [--alerts 30000] [--sink splunk ...] [--json]

Uses the embedded broker unless --kafka is given. A sink of the registry without a receiver here
is listed under `no_receiver`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import Settings, TopicNames, to_environment  # noqa: E402
from pipeline.kafka import ensure_topics  # noqa: E402
from pipeline.stack import EmbeddedStack, free_port  # noqa: E402
from sinks.registry import SINKS  # noqa: E402
from tests.receivers.bulk import BulkServer  # noqa: E402
from tests.receivers.hec import HecServer  # noqa: E402
from tests.sinklib import make_alert  # noqa: E402

TARGET = 5_000


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Receiver:
    """Where one sink delivers: its settings, and how to tell it has everything."""

    settings: dict[str, Any]
    expect: int
    done: asyncio.Event
    window: Callable[[], tuple[float, float]]  # (first, last) arrival, monotonic


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def splunk(settings: Settings, n: int, _: int) -> AsyncIterator[Receiver]:
    server = HecServer(expect=n)
    runner, base = await _serve(server.app())
    try:
        yield Receiver(
            {"sink_splunk_url": base, "sink_splunk_token": server.token},
            n,
            server.indexed,
            lambda: (server.first_at, server.last_at),
        )
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def elastic(settings: Settings, n: int, _: int) -> AsyncIterator[Receiver]:
    server = BulkServer(expect=n, check_documents=False)  # ids and statuses: a fast receiver
    runner, base = await _serve(server.app())
    try:
        yield Receiver(
            {"sink_elastic_url": base, "sink_elastic_api_key": server.api_key},
            n,
            server.indexed,
            lambda: (server.first_at, server.last_at),
        )
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def kafka(settings: Settings, n: int, _: int) -> AsyncIterator[Receiver]:
    topic = f"{settings.topics.alerts}.out"
    done = asyncio.Event()
    times: list[float] = []
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka,
        auto_offset_reset="earliest",
        metadata_max_age_ms=500,
    )
    await consumer.start()

    async def count() -> None:
        seen = 0
        while seen < n:
            batch = await consumer.getmany(timeout_ms=200)
            got = sum(len(records) for records in batch.values())
            if got:
                times.append(time.monotonic())
                seen += got
        done.set()

    task = asyncio.create_task(count())
    try:
        # Tansu's memory store grants no producer ids: idempotence off here (on by default).
        yield Receiver(
            {"sink_kafka_topic": topic, "sink_kafka_idempotent": False},
            n,
            done,
            lambda: (times[0], times[-1]) if times else (0.0, 0.0),
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()


@contextlib.asynccontextmanager
async def apigee(settings: Settings, n: int, decisions: int) -> AsyncIterator[Receiver]:
    done = asyncio.Event()
    times = [0.0, 0.0]
    received = 0

    async def ingest(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        times[1] = time.monotonic()
        times[0] = times[0] or times[1]
        if received >= decisions:
            done.set()
        return web.json_response({"stored": True})

    app = web.Application()
    app.router.add_post("/gatewatch/decisions", ingest)
    runner, base = await _serve(app)
    try:
        yield Receiver(
            {"apigee_ingest_url": f"{base}/gatewatch/decisions", "apigee_ingest_token": "t"},
            decisions,
            done,
            lambda: (times[0], times[1]),
        )
    finally:
        await runner.cleanup()


RECEIVERS = {"apigee": apigee, "elastic": elastic, "kafka": kafka, "splunk": splunk}


async def preload(settings: Settings, n: int) -> int:
    """`n` distinct alerts on the alerts topic (decisions expiring in an hour); returns how many
    are decisions."""
    await ensure_topics(settings)
    expires = int(time.time() * 1000) + 3_600_000
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, linger_ms=20)
    await producer.start()
    decisions = 0
    try:
        futures = []
        for i in range(n):
            alert = make_alert(i).model_copy(update={"expires_at": expires})
            decisions += alert.kind == "decision"
            futures.append(await producer.send(settings.topics.alerts, alert.to_json()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return decisions


async def run_sink(name: str, settings: Settings, n: int, decisions: int) -> dict[str, Any]:
    async with RECEIVERS[name](settings, n, decisions) as receiver:
        env = os.environ | to_environment(
            Settings.model_validate(settings.model_dump() | receiver.settings)
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipeline",
            "sink",
            name,
            "--json",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            cpu: list[float] = []
            own: list[float] = []
            started = time.monotonic()
            while not receiver.done.is_set():
                first, _ = receiver.window()
                if first and not cpu:
                    cpu.append(_cpu_s(proc.pid))
                    own.append(time.process_time())
                if time.monotonic() - started > 300:
                    raise TimeoutError(f"{name}: not all {receiver.expect} alerts in 300 s")
                await asyncio.sleep(0.005)  # sampling the child's CPU near the first arrival
            cpu.append(_cpu_s(proc.pid))
            own.append(time.process_time())
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = await proc.communicate()
    first, last = receiver.window()
    seconds = max(last - first, 1e-6)
    summary = orjson.loads(out.splitlines()[-1])["sinks"][0] if out.strip() else {}
    rate = receiver.expect / seconds
    cpu_us = (cpu[-1] - cpu[0]) * 1e6 / receiver.expect
    return {
        "alerts": receiver.expect,
        "seconds": round(seconds, 3),
        "alerts_per_s": round(rate),
        "cpu_us_per_alert": round(cpu_us, 1),
        # What the sink process could sustain on a core of its own (robust to a busy machine).
        "alerts_per_cpu_s": round(1e6 / cpu_us) if cpu_us else None,
        # The receiver and the broker client of this process: what the sink waits on here.
        "receiver_cpu_us_per_alert": round((own[-1] - own[0]) * 1e6 / receiver.expect, 1),
        "keeps_up": rate >= TARGET,
        "retried": summary.get("retried"),
        "rejected": summary.get("rejected"),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        kafka_url = args.kafka or stack.enter_context(EmbeddedStack()).kafka
        suffix = secrets.token_hex(4)
        settings = Settings(
            kafka=kafka_url,
            topics=TopicNames(
                events=f"b{suffix}.events",
                raw_kong=f"b{suffix}.raw.kong",
                decisions=f"b{suffix}.decisions",
                alerts=f"b{suffix}.alerts",
                dlq=f"b{suffix}.dlq",
            ),
        )
        decisions = await preload(settings, args.alerts)
        wanted = args.sink or sorted(SINKS)
        results: dict[str, Any] = {}
        for name in wanted:
            if name in RECEIVERS:
                Console(stderr=True).print(f"{name}: {args.alerts:,} alerts ...")
                results[name] = await run_sink(name, settings, args.alerts, decisions)
        return {
            "alerts": args.alerts,
            "target_alerts_per_s": TARGET,
            "sinks": results,
            "no_receiver": [n for n in wanted if n not in RECEIVERS],
        }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=30_000)
    parser.add_argument("--sink", action="append", help="Only this sink (repeatable)")
    parser.add_argument("--kafka", help="Use this Kafka instead of the embedded broker")
    parser.add_argument("--json", action="store_true", help="One JSON line")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return
    table = Table(title=f"sinks: {result['alerts']:,} alerts, target {TARGET:,}/s")
    columns = ("sink", "alerts/s", "CPU us/alert", "alerts/CPU-s", "receiver us/alert", "keeps up")
    for column in (*columns, "retried", "rejected"):
        table.add_column(column)
    for name, r in result["sinks"].items():
        table.add_row(
            name,
            f"{r['alerts_per_s']:,}",
            str(r["cpu_us_per_alert"]),
            f"{r['alerts_per_cpu_s']:,}",
            str(r["receiver_cpu_us_per_alert"]),
            "yes" if r["keeps_up"] else "NO",
            str(r["retried"]),
            str(r["rejected"]),
        )
    Console().print(table)
    if result["no_receiver"]:
        Console().print(f"no local receiver in this bench: {', '.join(result['no_receiver'])}")


if __name__ == "__main__":
    cli()
