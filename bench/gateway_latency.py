"""Latency the gatewatch Kong plugin adds to a request: real nginx, real Redis, wrk on loopback.

Writes --decisions decisions into Redis with the pipeline's own writer (RedisDecisions), starts
the nginx harness (the plugin through the PDK shim, one worker), waits until its cache holds them
all, then runs wrk against the same upstream through `/base/` (no plugin) and `/gw/` (plugin on,
consumer + ip + ip range looked up), alternating, --rounds times each. Requests come from 2,000
client addresses and 1,000 consumers; half of each carry a `tag` decision (the upstream gets
X-Risk-Score), the rest are unknown to the cache: every request takes the full lookup path and
none is refused. Latencies are wrk's exact percentiles (its `done()` hook); per route the median
over rounds is reported, and the added p99 is the difference of those medians. nginx and wrk
share one CPU (see `pin`), one connection: the figure is the latency one request gains.

The details line (before the last) also has the plugin's access phase alone, timed inside nginx
with a nanosecond clock (`handler_p50_us`, `handler_p99_us`): what the plugin costs without the
network and scheduling noise of the loopback round trip.

    .venv/bin/python bench/gateway_latency.py [--decisions N] [--duration S] [--rounds R] [--json]

The last line with --json: {"p50_ms_base", "p99_ms_base", "p50_ms_plugin", "p99_ms_plugin",
"added_p99_ms"}. The bar (issue 5) is added_p99_ms <= 0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.decisions import Decision, RedisDecisions  # noqa: E402
from tests.gateway.harness import Nginx, RedisServer, redis_config  # noqa: E402

PREFIX = "gwbench:"
CLIENTS = 2_000
CONSUMERS = 1_000
SENTINEL_IP = "198.18.0.1"
WRITE_BATCH = 1_000

WRK_SCRIPT = """
local ips = {%(ips)s}
local consumers = {%(consumers)s}
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, nil, {
    ["X-Forwarded-For"] = ips[i %% #ips + 1],
    ["X-Harness-Consumer"] = consumers[i %% #consumers + 1],
  })
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"p50_us": %%d, "p99_us": %%d, "requests": %%d, "non2xx": %%d, "errors": %%d}\\n',
    latency:percentile(50), latency:percentile(99), summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""


def client_ip(i: int) -> str:
    return f"172.16.{i // 256}.{i % 256}"


def decisions(total: int) -> list[Decision]:
    """Tags for half the clients and consumers of the load; blocks on addresses never used."""
    now = int(time.time() * 1000)

    def make(subject: str, action: str) -> Decision:
        return Decision(
            subject=subject,
            score=0.75,
            action=action,
            reasons=["bench"],
            detector="bench",
            model_version="bench",
            mode="enforce",
            updated_at=now,
            expires_at=now + 3_600_000,
        )

    out = [make(f"ip:{client_ip(i)}", "tag") for i in range(0, CLIENTS, 2)]
    out += [make(f"consumer:bench-{i}", "tag") for i in range(0, CONSUMERS, 2)]
    i = 0
    while len(out) < total - 1:
        out.append(make(f"ip:10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", "block"))
        i += 1
    out.append(make(f"ip:{SENTINEL_IP}", "block"))  # last: once enforced, all are loaded
    return out


async def load(redis_url: str, items: list[Decision]) -> None:
    client = Redis.from_url(redis_url)
    try:
        await client.delete(*[k async for k in client.scan_iter(f"{PREFIX}*")] or ["-"])
        writer = RedisDecisions(client, PREFIX)
        for start in range(0, len(items), WRITE_BATCH):
            await writer.write(items[start : start + WRITE_BATCH])
    finally:
        await client.aclose()


async def wait_loaded(gateway: Nginx, timeout_s: float = 60.0) -> float:
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - started < timeout_s:
            headers = {"X-Forwarded-For": SENTINEL_IP}
            async with http.get(gateway.url("gw", "ok"), headers=headers) as resp:
                if resp.status == 403:
                    return time.monotonic() - started
            await asyncio.sleep(0.05)
    raise RuntimeError(f"the gateway did not load the decisions within {timeout_s} s")


def handler_timing(gateway: Nginx) -> dict[str, float]:
    """The plugin's own access-phase time since the last call (and reset it), in µs."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.port}/__timing", timeout=10) as r:
        timing: dict[str, float] = json.loads(r.read())
    return timing


def pin(gateway: Nginx, cpu: int) -> None:
    """Put the nginx workers on `cpu` (wrk runs there too).

    On a small VM a wake-up across CPUs costs tens of µs and comes and goes with the neighbours'
    load: client and gateway on one CPU make the two routes comparable run after run.
    """
    master = int((gateway.prefix / "nginx.pid").read_text())
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    for pid in children:
        os.sched_setaffinity(int(pid), {cpu})


def wrk(url: str, script: Path, duration: int, connections: int, cpu: int) -> dict[str, int]:
    cmd = [
        "taskset",
        "-c",
        str(cpu),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=duration + 30
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK "))
    result: dict[str, int] = json.loads(line[4:])
    if result["non2xx"] or result["errors"]:
        raise RuntimeError(f"{url}: {result['non2xx']} non-2xx, {result['errors']} errors")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--duration", type=int, default=2, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=7, help="alternating base/plugin runs")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument(
        "--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="CPU for nginx and wrk"
    )
    parser.add_argument("--redis", help="redis:// URL (default: a redis-server on a free port)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")

    server = None if args.redis else RedisServer().start()
    redis_url = args.redis or (server.url if server else "")
    gateway = None
    try:
        t0 = time.monotonic()
        asyncio.run(load(redis_url, decisions(args.decisions)))
        write_s = time.monotonic() - t0
        conf = {
            "subjects": ["consumer", "ip", "ip_range"],
            "redis": redis_config(redis_url, PREFIX),
        }
        gateway = Nginx(
            routes={"gw": conf}, workers=1, log_level="warn", audit_log=False, timing=True
        ).start()
        load_s = asyncio.run(wait_loaded(gateway))
        pin(gateway, args.cpu)

        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "bench.lua"
            script.write_text(
                WRK_SCRIPT
                % {
                    "ips": ", ".join(f'"{client_ip(i)}"' for i in range(CLIENTS)),
                    "consumers": ", ".join(f'"bench-{i}"' for i in range(CONSUMERS)),
                }
            )
            urls = {"base": gateway.url("base", "ok"), "plugin": gateway.url("gw", "ok")}
            for url in urls.values():  # warm-up: connections, Lua code, upstream keepalive
                wrk(url, script, 1, args.connections, args.cpu)
            runs: dict[str, list[dict[str, int]]] = {"base": [], "plugin": []}
            handler: list[dict[str, float]] = []
            for _ in range(args.rounds):
                for name, url in urls.items():
                    handler_timing(gateway)
                    runs[name].append(wrk(url, script, args.duration, args.connections, args.cpu))
                handler.append(handler_timing(gateway))
    finally:
        if gateway is not None:
            gateway.close()
        if server is not None:
            server.close()

    def median_ms(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name]) / 1000

    report = {
        "p50_ms_base": median_ms("base", "p50_us"),
        "p99_ms_base": median_ms("base", "p99_us"),
        "p50_ms_plugin": median_ms("plugin", "p50_us"),
        "p99_ms_plugin": median_ms("plugin", "p99_us"),
    }
    report["added_p99_ms"] = round(report["p99_ms_plugin"] - report["p99_ms_base"], 3)
    details = {
        "decisions": args.decisions,
        "connections": args.connections,
        "cpu": args.cpu,
        "write_s": round(write_s, 2),
        "gateway_load_s": round(load_s, 2),
        "requests": {name: sum(r["requests"] for r in rs) for name, rs in runs.items()},
        "p99_us_per_round": {name: [r["p99_us"] for r in rs] for name, rs in runs.items()},
        # The plugin's access phase alone, timed inside nginx (no network, no scheduling noise).
        "handler_p50_us": statistics.median(h["p50_us"] for h in handler),
        "handler_p99_us": statistics.median(h["p99_us"] for h in handler),
    }
    if args.json:
        print(json.dumps(details))
        print(json.dumps(report))
    else:
        for key, value in (details | report).items():
            print(f"{key:>18}: {value}")


if __name__ == "__main__":
    main()
