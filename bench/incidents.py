"""Alerts per second the incident sink folds, in memory and against a real Redis it starts.

The alerts mix a distributed stuffing campaign (half: one address each from all over the address
space, one route: the worst case, a single incident that grows to its caps), tags on thousands of
benign consumers (dormant incidents) and partner floods on 50 routes, sent in batches as the sink
runner sends them.

    .venv/bin/python bench/incidents.py [--alerts 20000] [--batch 500] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import sys
import time
from pathlib import Path

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.alerts import Alert  # noqa: E402
from pipeline.incidents import IncidentStore, MemoryIncidentStore, RedisIncidentStore  # noqa: E402
from pipeline.incidents.testing import make_alert  # noqa: E402
from pipeline.stack import free_port  # noqa: E402
from sinks.incidents import IncidentSink  # noqa: E402

T0 = 1_700_000_000_000


def make_alerts(n: int, seed: int = 1) -> list[Alert]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = T0 + i * 2
        draw = rng.random()
        if draw < 0.5:
            ip = ".".join(str(rng.randrange(1, 255)) for _ in range(4))
            out.append(
                make_alert(
                    subject=f"ip:{ip}",
                    t=t,
                    mode="shadow",
                    evidence=[f"r{i}"],
                    feature="failed_logins",
                    value=10,
                )
            )
        elif draw < 0.8:
            out.append(
                make_alert(
                    subject=f"consumer:c{rng.randrange(5000)}",
                    action="tag",
                    t=t,
                    detector="anomaly",
                    code="behaviour_anomaly",
                    route=f"/v1/r{rng.randrange(50)}",
                )
            )
        else:
            out.append(
                make_alert(
                    subject=f"consumer:p{rng.randrange(200)}",
                    detector="rate",
                    code="flood",
                    t=t,
                    route=f"/v1/r{rng.randrange(50)}",
                    feature="requests_per_s",
                    value=100,
                    limit=20,
                )
            )
    return out  # fmt: skip


async def measure(store: IncidentStore, alerts: list[Alert], batch: int) -> dict[str, float]:
    sink = IncidentSink(store)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(alerts), batch):
        delivery = await sink.send(alerts[i : i + batch])
        assert delivery.ok, delivery.retry_reason
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "alerts_per_s": round(len(alerts) / wall),
        "cpu_us_per_alert": round(cpu / len(alerts) * 1e6, 1),
        "incidents": len(await store.recent()),
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    alerts = make_alerts(args.alerts)
    result: dict[str, object] = {"alerts": len(alerts), "batch": args.batch}
    result["memory"] = await measure(MemoryIncidentStore(), alerts, args.batch)
    server = shutil.which("redis-server")
    if server is None:
        result["redis"] = "redis-server not on PATH"
        return result
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    redis = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        for _ in range(100):
            try:
                await redis.ping()
                break
            except (OSError, RedisError):  # not listening yet
                await asyncio.sleep(0.05)
        result["redis"] = await measure(RedisIncidentStore(redis, "bench:"), alerts, args.batch)
    finally:
        await redis.aclose()
        proc.terminate()
        await proc.wait()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    out = asyncio.run(main(args))
    if args.json:
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
    else:
        for key, value in out.items():
            print(f"{key}: {value}")
