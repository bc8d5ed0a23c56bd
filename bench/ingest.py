"""Events per second one collector process accepts from batched Kong http-log POSTs, and the
response time of those POSTs.

Starts the embedded broker (unless --kafka), one `gatewatch collector` process, and from this
process POSTs pre-built bodies of 100-1,000 simulated Kong entries for `--seconds`, counting the
entries the collector answered as accepted (i.e. acked by Kafka). Two ways to send:

- closed loop (default): `--concurrency` senders, each posting its next body as soon as the
  previous one is answered: the most the collector accepts, and the response time at that
  saturation (which grows with the number of senders: at saturation every sender waits for the
  bodies of all the others).
- open loop (`--rate N`): bodies sent on a fixed schedule of N entries/s whatever the answers take
  (as independent Kong nodes do): the response time at that load. It counts from each body's
  scheduled time, so a collector falling behind shows in it.

    .venv/bin/python bench/ingest.py [--seconds 15] [--concurrency 4 | --rate 50000] [--json]

Request-id deduplication is configured to remember nothing (GATEWATCH_DEDUPE_MAX_IDS=0), because
the bodies are replayed; its bookkeeping still runs on every entry.

Latency is measured per POST from just before the request is sent (its scheduled time in the open
loop) to the end of reading the answer. Wall-clock figures depend on whatever else the machine
runs, so the CPU time each process spent during the measurement is reported too (Linux /proc):
`collector_cpu_us_per_event` is the figure to compare between versions; `*_cpu_share` say how
much of the machine's cores the collector, the broker and this client took, and `loadavg_1m` how
busy it was before the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import Settings, TopicNames, to_environment  # noqa: E402
from pipeline.demo.traffic import TrafficModel  # noqa: E402
from pipeline.stack import EmbeddedStack, free_port, stop_process  # noqa: E402

BATCH_SIZES = (100, 250, 500, 1000)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux), None where /proc is not available."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pid(marker: str) -> int | None:
    """A child of this process whose command line contains `marker` (the embedded broker)."""
    me = str(os.getpid())
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            if ppid == me and marker in (proc / "cmdline").read_text():
                return int(proc.name)
        except OSError:
            continue
    return None


def build_bodies(entries_wanted: int, seed: int) -> list[tuple[int, bytes]]:
    """Bodies of simulated Kong entries, timestamped from an hour ago on: a live collector
    rejects entries far from its clock (GATEWATCH_EVENT_MAX_AGE_S)."""
    model = TrafficModel(seed=seed, consumers=600, browsers=1000, nats=6)
    rng = random.Random(seed)
    entries: list[dict[str, object]] = []
    now_ms = (int(time.time()) - 3600) * 1000
    while len(entries) < entries_wanted:
        now_ms += 100
        entries.extend(model.tick(now_ms, 0.1))
    bodies = []
    i = 0
    while i < len(entries):
        n = rng.choice(BATCH_SIZES)
        chunk = entries[i : i + n]
        bodies.append((len(chunk), orjson.dumps(chunk)))
        i += n
    return bodies


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    t0: float,
    latencies: list[float],
    counts: dict[str, int],
) -> None:
    """One POST; its latency counts from `t0` (monotonic seconds) to the answer read."""
    async with http.post(url, data=body) as resp:
        answer = await resp.json()
    latencies.append((time.monotonic() - t0) * 1000)
    if resp.status == 200:
        counts["accepted"] += answer["accepted"]
        counts["posts"] += 1
    else:
        counts["failed_posts"] += 1
        counts[f"http_{resp.status}"] = counts.get(f"http_{resp.status}", 0) + 1


async def sender(
    http: aiohttp.ClientSession,
    url: str,
    bodies: list[tuple[int, bytes]],
    start_at: int,
    stop_at: float,
    latencies: list[float],
    counts: dict[str, int],
) -> None:
    """Closed loop: the next body as soon as the previous one is answered."""
    i = start_at
    while time.monotonic() < stop_at:
        _, body = bodies[i % len(bodies)]
        i += 1
        await post(http, url, body, time.monotonic(), latencies, counts)


async def scheduled_sender(
    http: aiohttp.ClientSession,
    url: str,
    bodies: list[tuple[int, bytes]],
    rate: float,
    stop_at: float,
    latencies: list[float],
    counts: dict[str, int],
) -> None:
    """Open loop: body k is due when the entries before it, sent at `rate`/s, are out."""
    inflight: set[asyncio.Task[None]] = set()
    due = time.monotonic()
    i = 0
    while due < stop_at:
        n, body = bodies[i % len(bodies)]
        i += 1
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        task = asyncio.create_task(post(http, url, body, due, latencies, counts))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        due += n / rate
    await asyncio.gather(*inflight)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--concurrency", type=int, default=4, help="closed loop: senders")
    ap.add_argument("--rate", type=float, help="open loop: entries per second, on a schedule")
    ap.add_argument("--entries", type=int, default=200_000, help="distinct entries to replay")
    ap.add_argument("--kafka")
    ap.add_argument("--log", help="write the collector's log lines to this file")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    console = Console(stderr=True)

    with console.status("building Kong bodies"):
        bodies = build_bodies(args.entries, seed=5)
    stack = None if args.kafka else EmbeddedStack().start()
    kafka = args.kafka or (stack.kafka if stack else "")
    broker_pid = child_pid(f"127.0.0.1:{stack.kafka_port}") if stack else None
    port, token = free_port(), secrets.token_hex(16)
    spool = tempfile.TemporaryDirectory(prefix="bench-ingest-spool-")
    settings = Settings(
        kafka=kafka,
        ingest_token=token,
        dedupe_max_ids=0,
        topics=TopicNames(events=f"bench-ingest-{secrets.token_hex(3)}.events"),
        # Its own spool, gone with the run (the broker is too): the default one would outlive it.
        spool_dir=spool.name,
    )
    env = os.environ | to_environment(settings)
    log = open(args.log, "wb") if args.log else subprocess.DEVNULL  # noqa: ASYNC230
    collector = subprocess.Popen(  # noqa: ASYNC220 - started once, before timing
        [sys.executable, "-m", "pipeline", "collector", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    latencies: list[float] = []
    counts = {"accepted": 0, "posts": 0, "failed_posts": 0}
    try:
        url = f"http://127.0.0.1:{port}/v1/ingest/kong"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        # The open loop opens as many connections as answers are outstanding (Kong nodes each
        # have their own); a cap keeps a stalled collector from exhausting ports.
        connector = aiohttp.TCPConnector(limit=256 if args.rate else args.concurrency)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
            deadline = time.monotonic() + 60
            while True:  # the collector is up once it answers
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    if time.monotonic() > deadline or collector.poll() is not None:
                        raise
                await asyncio.sleep(0.1)
            # Warm up (topic metadata, first envelopes), then measure.
            await sender(http, url, bodies, 0, time.monotonic() + 2, [], dict(counts))
            pids = {"collector": collector.pid, "broker": broker_pid, "client": os.getpid()}
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            with console.status(f"posting for {args.seconds:.0f} s"):
                start = time.monotonic()
                stop_at = start + args.seconds
                if args.rate:
                    await scheduled_sender(http, url, bodies, args.rate, stop_at, latencies, counts)
                else:
                    await asyncio.gather(
                        *(
                            sender(http, url, bodies, k * 97, stop_at, latencies, counts)
                            for k in range(args.concurrency)
                        )
                    )
                elapsed = time.monotonic() - start
            cpu = {
                name: after - before
                for name, before in cpu_before.items()
                if before is not None and (after := cpu_seconds(pids[name])) is not None
            }
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                spooled = _sample(await resp.text(), "gatewatch_spool_spooled_total")
    finally:
        stop_process(collector, timeout_s=30)
        if stack:
            stack.stop()
        spool.cleanup()

    latencies.sort()
    result = {
        "events_per_s": round(counts["accepted"] / elapsed, 1),
        "posts": counts["posts"],
        "failed_posts": counts["failed_posts"],
        **{k: v for k, v in counts.items() if k.startswith("http_")},
        "mean_entries_per_post": round(statistics.mean(n for n, _ in bodies), 1),
        "mode": f"open loop, {args.rate:,.0f} entries/s offered"
        if args.rate
        else f"closed loop, {args.concurrency} senders",
        "p50_ms": round(latencies[len(latencies) // 2], 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
        "max_ms": round(latencies[-1], 2),
        "loadavg_1m": load,
        "cores": os.cpu_count(),
        # Entries that went to the disk spool because Kafka did not confirm in time: 0 while
        # the broker keeps up (the spool costs nothing then).
        "spooled_entries": spooled,
    }
    if counts["accepted"] and "collector" in cpu:
        result["collector_cpu_us_per_event"] = round(cpu["collector"] / counts["accepted"] * 1e6, 2)
    for name, seconds in cpu.items():
        result[f"{name}_cpu_share"] = round(seconds / elapsed, 2)  # 1.0 = one core all the time
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        for key, value in result.items():
            console.print(f"{key:>22}: {value:,}")


def _sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


if __name__ == "__main__":
    asyncio.run(main())
