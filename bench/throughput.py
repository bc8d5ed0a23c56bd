"""Events per second through one worker process, all detectors on, decisions written.

Pre-loads the events topic with envelopes of simulated Kong traffic (parsed and redacted by the
same code as the collector, attacks included so decisions are written), then starts one
`gatewatch worker` and times it from its first processed event to the last, reading the counters
the worker keeps in Redis. Also reports the detection step alone, in process, without I/O
(events/s and CPU microseconds per event).

    .venv/bin/python bench/throughput.py [--events 200000] [--json]
    .venv/bin/python bench/throughput.py --checkpoints both --json   # their cost: on vs off
    .venv/bin/python bench/throughput.py --alerts both --json        # what alerts cost

Uses the embedded stack unless --kafka and --redis are given. `--checkpoints both` runs the worker
twice over the same pre-loaded topic (a consumer group and a Redis prefix each), once with
checkpoints on (the default configuration) and once off, and reports the CPU per event they add.
With checkpoints on it also times them in process (`in_process`): the detection step and, once
per second of the worker's measured pace, the checkpoint it would write, on CPU time.
Alerts are on as in production (`alerts_written` counts them from the worker's /metrics);
`--alerts both` also runs the worker without them, over the same topic, and reports the CPU per
event they add, end to end and for the detection step in process.
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
import msgpack
import orjson
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from redis.connection import Connection
from rich.console import Console
from rich.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import demo_events  # noqa: E402

from detectors import Fusion, default_detectors  # noqa: E402
from detectors.state_codec import StateCodec  # noqa: E402
from pipeline import envelopes  # noqa: E402
from pipeline.config import Settings, to_environment  # noqa: E402
from pipeline.decisions import RedisDecisions  # noqa: E402
from pipeline.events import GatewayEvent  # noqa: E402
from pipeline.kafka import ensure_topics  # noqa: E402
from pipeline.stack import EmbeddedStack, free_port, stop_process  # noqa: E402
from pipeline.worker.alerting import AlertCollector  # noqa: E402
from pipeline.worker.processor import GC_THRESHOLDS, Processor, StateStore  # noqa: E402
from pipeline.worker.store import SubjectBudget  # noqa: E402

PARTITIONS = 4
ENVELOPE = 500


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processor_eps(events: list[GatewayEvent], alerts: bool = True) -> tuple[float, float]:
    """Events/s of the detection step alone, and its CPU microseconds per event (what another
    load on the machine changes least), with the collector thresholds a worker runs with; with
    `alerts`, the alerts are built and serialised as a worker does, not sent."""
    processor = Processor(detectors=default_detectors(), fusion=Fusion(), mode="enforce")
    stores: dict[int, StateStore] = {}
    by_partition: dict[int, list[GatewayEvent]] = {}
    for e in events:
        by_partition.setdefault(
            envelopes.partition_for(e.partition_subject(), PARTITIONS), []
        ).append(e)
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        start = time.perf_counter()
        cpu = time.process_time()
        for p, evs in by_partition.items():
            store = stores.setdefault(p, StateStore(500_000))
            collector = AlertCollector(processor, store, partition=p) if alerts else None
            for i in range(0, len(evs), ENVELOPE):
                batch = evs[i : i + ENVELOPE]
                if collector is None:
                    processor.process(batch, store)
                    continue
                collector.begin(batch)
                processor.process(batch, store, report=collector)
                for alert in collector.take():
                    alert.to_json()
        cpu_us = (time.process_time() - cpu) / len(events) * 1e6
        return len(events) / (time.perf_counter() - start), cpu_us
    finally:
        gc.set_threshold(*thresholds)


def checkpoint_cost(events: list[GatewayEvent], flush_every: int) -> dict[str, float]:
    """CPU per event of the detection step and of the checkpoints a worker writes while running it
    (every `flush_every` events, about a second of the worker's pace): every changed state
    encoded and the write command built as redis-py sends it (the network and Redis not counted).
    In process and on CPU time, so other load on the machine hardly moves the ratio."""
    processor = Processor(detectors=default_detectors(), fusion=Fusion(), mode="enforce")
    codec = StateCodec(processor.detectors)
    budget = SubjectBudget(500_000)
    stores: dict[int, StateStore] = {}
    batches: list[tuple[int, list[GatewayEvent]]] = []
    by_partition: dict[int, list[GatewayEvent]] = {}
    for e in events:
        by_partition.setdefault(
            envelopes.partition_for(e.partition_subject(), PARTITIONS), []
        ).append(e)
    for p, evs in by_partition.items():
        stores[p] = StateStore(budget=budget, track_changes=True)
        batches += [(p, evs[i : i + ENVELOPE]) for i in range(0, len(evs), ENVELOPE)]
    batches.sort(key=lambda b: b[1][0].ts_ms)  # as the partitions interleave in a worker
    command = Connection().pack_command
    pack = msgpack.Packer(use_bin_type=False).pack
    detect_s = checkpoint_s = 0.0
    since = states = 0
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        for p, batch in batches:
            started = time.process_time()
            processor.process(batch, stores[p])
            detect_s += time.process_time() - started
            since += len(batch)
            if since < flush_every:
                continue
            since = 0
            started = time.process_time()
            for store in stores.values():
                changed, dropped = store.take_changes()
                flat: list[str | bytes] = []
                for subject in changed:
                    state = store.peek(subject)
                    if state is not None:
                        flat += (subject, codec.encode(state))
                states += len(flat) // 2
                command("EVALSHA", "0" * 40, 1, "key", 1, 1, pack(list(dropped)), pack(flat))
            checkpoint_s += time.process_time() - started
    finally:
        gc.set_threshold(*thresholds)
    n = len(events)
    return {
        "detect_cpu_us_per_event": round(detect_s / n * 1e6, 2),
        "checkpoint_cpu_us_per_event": round(checkpoint_s / n * 1e6, 3),
        "checkpoint_cpu_share": round(checkpoint_s / (detect_s + checkpoint_s), 4),
        "checkpoint_states_written": states,
        "flush_every_events": flush_every,
    }


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
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--checkpoints", choices=["on", "off", "both"], default="on",
        help="run the worker with checkpoints on (default), off, or both to compare",
    )  # fmt: skip
    ap.add_argument(
        "--alerts", choices=["on", "off", "both"], default="on",
        help="run the worker with alerts on (default), off, or both to compare",
    )  # fmt: skip
    args = ap.parse_args()
    console = Console(stderr=True)

    with console.status("simulating traffic"):
        events = demo_events(args.events, args.seed, attacks=True, key=b"bench-key")
    alerts = args.alerts != "off"
    with console.status("timing the detection step in process"):
        in_process, in_process_cpu_us = processor_eps(events, alerts)
        if args.alerts == "both":
            _, in_process_cpu_us_off = processor_eps(events, alerts=False)

    stack = None if args.kafka and args.redis else EmbeddedStack().start()
    try:
        suffix = secrets.token_hex(3)
        settings = Settings(
            kafka=args.kafka or stack.kafka,
            redis_url=args.redis or stack.redis_url,
            redis_prefix=f"gwbench:{suffix}:",
            partitions=PARTITIONS,
            worker_id=f"gatewatch-bench-{suffix}",
            alerts_enabled=alerts,
        )
        settings.topics.events = f"bench-{suffix}.events"
        settings.topics.alerts = f"bench-{suffix}.alerts"
        with console.status("pre-loading the events topic"):
            records = await preload(settings, events)
        modes = ["on", "off"] if args.checkpoints == "both" else [args.checkpoints]
        runs: dict[str, dict[str, Any]] = {}
        for mode in modes:
            # Its own consumer group and Redis keys: each run reads the topic from the start.
            run_settings = settings.model_copy(
                update={
                    "checkpoints": mode == "on",
                    "worker_id": f"{settings.worker_id}-{mode}",
                    "redis_prefix": f"{settings.redis_prefix}{mode}:",
                }
            )
            runs[mode] = await run_worker(run_settings, len(events), console)
        if args.alerts == "both":
            off_settings = settings.model_copy(
                update={
                    "checkpoints": modes[0] == "on",
                    "alerts_enabled": False,
                    "worker_id": f"{settings.worker_id}-alerts-off",
                    "redis_prefix": f"{settings.redis_prefix}alerts-off:",
                }
            )
            alerts_off = await run_worker(off_settings, len(events), console)
    finally:
        if stack:
            stack.stop()

    figures: dict[str, Any] = dict(runs[modes[0]])
    figures["checkpoints"] = modes[0]
    figures["alerts"] = "on" if alerts else "off"
    if args.alerts == "both":
        on = runs[modes[0]]["worker_cpu_us_per_event"]
        off = alerts_off["worker_cpu_us_per_event"]
        figures["alerts_off"] = alerts_off
        # End to end: on a busy machine this difference is mostly noise (see the in-process one).
        figures["worker_alert_cpu_share"] = round((on - off) / on, 3) if on else None
        figures["processor_cpu_us_per_event_alerts_off"] = round(in_process_cpu_us_off, 2)
    if "on" in modes:
        # Once per second of this worker's pace, as it flushes.
        flush_every = max(ENVELOPE, int(runs["on"]["worker_eps"]))
        with console.status("timing checkpoints in process"):
            figures["in_process"] = checkpoint_cost(events, flush_every)
    if len(modes) == 2:
        on = runs["on"]["worker_cpu_us_per_event"]
        off = runs["off"]["worker_cpu_us_per_event"]
        figures["checkpoints_off"] = runs["off"]
        # End to end: on a busy machine this difference is mostly noise (see in_process).
        figures["worker_checkpoint_cpu_share"] = round((on - off) / on, 3) if on else None
    result = {
        "events": len(events),
        "envelopes": records,
        "processor_eps": round(in_process, 1),
        "processor_cpu_us_per_event": round(in_process_cpu_us, 2),
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
