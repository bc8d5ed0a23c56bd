"""Events per second through one worker process, all detectors on, decisions written.

Pre-loads the events topic with envelopes of simulated Kong traffic (parsed and redacted by the
same code as the collector, attacks included so decisions are written), then starts one
`gatewatch worker` and times it from its first processed event to the last, reading the counters
the worker keeps in Redis. Also reports the detection step alone, in process, without I/O.
Alerts are on as in production (counted from the worker's /metrics); `--alerts off` runs the
same worker without them, to measure what they cost.

    .venv/bin/python bench/throughput.py [--events 200000] [--alerts on|off] [--json]

Uses the embedded stack unless --kafka and --redis are given.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from rich.console import Console
from rich.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import demo_events  # noqa: E402
from detectors import Fusion, default_detectors  # noqa: E402
from pipeline import envelopes  # noqa: E402
from pipeline.config import Settings, to_environment  # noqa: E402
from pipeline.decisions import RedisDecisions  # noqa: E402
from pipeline.events import GatewayEvent  # noqa: E402
from pipeline.kafka import ensure_topics  # noqa: E402
from pipeline.stack import EmbeddedStack, free_port, stop_process  # noqa: E402
from pipeline.worker.alerting import AlertCollector  # noqa: E402
from pipeline.worker.processor import GC_THRESHOLDS, Processor, StateStore  # noqa: E402

PARTITIONS = 4
ENVELOPE = 500


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processor_eps(events: list[GatewayEvent], alerts: bool) -> float:
    """Events/s of the detection step alone (alerts built when on, not sent), with the collector
    thresholds a worker runs with."""
    processor = Processor(detectors=default_detectors(), fusion=Fusion(), mode="enforce")
    stores: dict[int, StateStore] = {}
    collectors: dict[int, AlertCollector] = {}
    by_partition: dict[int, list[GatewayEvent]] = {}
    for e in events:
        by_partition.setdefault(
            envelopes.partition_for(e.partition_subject(), PARTITIONS), []
        ).append(e)
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        start = time.perf_counter()
        for p, evs in by_partition.items():
            store = stores.setdefault(p, StateStore(500_000))
            collector = collectors.setdefault(p, AlertCollector(processor, store, partition=p))
            for i in range(0, len(evs), ENVELOPE):
                batch = evs[i : i + ENVELOPE]
                if alerts:
                    collector.begin(batch)
                    processor.process(batch, store, report=collector)
                    collector.take()
                else:
                    processor.process(batch, store)
        return len(events) / (time.perf_counter() - start)
    finally:
        gc.set_threshold(*thresholds)


async def preload(settings: Settings, events: list[GatewayEvent]) -> int:
    await ensure_topics(settings)
    by_partition: dict[int, list[GatewayEvent]] = {}
    for e in events:
        by_partition.setdefault(
            envelopes.partition_for(e.partition_subject(), PARTITIONS), []
        ).append(e)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, max_request_size=16 << 20)
    await producer.start()
    records = 0
    try:
        for p, evs in by_partition.items():
            for i in range(0, len(evs), ENVELOPE):
                await producer.send(
                    settings.topics.events,
                    envelopes.encode(evs[i : i + ENVELOPE]),
                    key=f"p{p}".encode(),
                    partition=p,
                )
                records += 1
        await producer.flush()
    finally:
        await producer.stop()
    return records


async def alerts_emitted(web_port: int) -> dict[str, int]:
    """`gatewatch_alerts_emitted_total` by kind, from the worker's /metrics."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{web_port}/metrics") as resp:
            text = await resp.text()
    out = {}
    for line in text.splitlines():
        if line.startswith("gatewatch_alerts_emitted_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('kind="', 1)[1].split('"', 1)[0]] = int(float(value))
    return out


async def run_worker(settings: Settings, total: int, console: Console) -> dict[str, Any]:
    web_port = free_port()
    # PYTHONPATH: the worker must run this checkout's code, not whichever one is installed.
    env = os.environ | to_environment(
        settings.model_copy(update={"mode": "enforce", "web_port": web_port})
    ) | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before timing begins
        [sys.executable, "-m", "pipeline", "worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    decisions = RedisDecisions(redis, settings.redis_prefix)
    first = None
    processed = 0
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("worker processing", total=total)
            deadline = time.monotonic() + 600
            while processed < total and time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.returncode}")
                processed = (await decisions.stats()).get("events_processed", 0)
                if processed and first is None:
                    first = (time.monotonic(), processed, _cpu_s(proc.pid))
                progress.update(task, completed=processed)
                await asyncio.sleep(0.05)
        done = time.monotonic()
        done_cpu = _cpu_s(proc.pid)
        stats = await decisions.stats()
        alerts = await alerts_emitted(web_port)
    finally:
        stop_process(proc, timeout_s=30)
        await redis.aclose()
    if first is None or processed < total:
        raise RuntimeError(f"worker processed {processed} of {total} events")
    t0, n0, cpu0 = first
    return {
        "worker_eps": round((processed - n0) / max(done - t0, 1e-9), 1),
        # CPU time the worker spent per event: what the machine's other load does not change.
        "worker_cpu_us_per_event": round((done_cpu - cpu0) / max(processed - n0, 1) * 1e6, 2),
        "events_processed": processed,
        "decisions_written": stats.get("decisions_written", 0),
        "alerts_written": alerts,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--kafka")
    ap.add_argument("--redis")
    ap.add_argument("--alerts", choices=("on", "off"), default="on",
                    help="write alerts (as in production) or not, to measure what they cost")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    console = Console(stderr=True)

    with console.status("simulating traffic"):
        events = demo_events(args.events, args.seed, attacks=True, key=b"bench-key")
    with console.status("timing the detection step in process"):
        in_process = processor_eps(events, alerts=args.alerts == "on")

    stack = None if args.kafka and args.redis else EmbeddedStack().start()
    try:
        suffix = secrets.token_hex(3)
        settings = Settings(
            kafka=args.kafka or stack.kafka,
            redis_url=args.redis or stack.redis_url,
            redis_prefix=f"gwbench:{suffix}:",
            partitions=PARTITIONS,
            worker_id=f"gatewatch-bench-{suffix}",
            alerts_enabled=args.alerts == "on",
        )
        settings.topics.events = f"bench-{suffix}.events"
        settings.topics.alerts = f"bench-{suffix}.alerts"
        with console.status("pre-loading the events topic"):
            records = await preload(settings, events)
        figures = await run_worker(settings, len(events), console)
    finally:
        if stack:
            stack.stop()

    result = {
        "alerts": args.alerts,
        "events": len(events),
        "envelopes": records,
        "processor_eps": round(in_process, 1),
        **figures,
    }
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        for key, value in result.items():
            shown = f"{value:,}" if isinstance(value, int | float) else str(value)
            console.print(f"{key:>18}: {shown}")


if __name__ == "__main__":
    asyncio.run(main())
