"""Small logs to learn baselines from: steady consumers in Kong http-log NDJSON and in Apigee
MessageLogging JSON lines (what `gatewatch recommend --from` replays)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from .conftest import kong_entry

T0_MS = 1_700_000_000_000


def kong_log(path: Path, consumers: dict[str, int], seconds: int = 120) -> Path:
    """`consumers`: Kong consumer id -> requests per second, each from its own address."""
    base = kong_entry("3.8")
    lines = []
    for n, (consumer, rate) in enumerate(sorted(consumers.items())):
        for s in range(seconds):
            for i in range(rate):
                e: dict[str, Any] = orjson.loads(orjson.dumps(base))
                e["started_at"] = T0_MS + s * 1000 + i * (1000 // rate) + n
                e["consumer"] = {"id": consumer}
                e["client_ip"] = f"198.51.100.{n + 1}"
                e["request"]["id"] = f"{consumer}-{s}-{i}"
                e["request"]["uri"] = e["request"]["url"] = f"/v1/items/{i}"
                lines.append(orjson.dumps(e))
    lines.sort(key=lambda line: orjson.loads(line)["started_at"])
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def apigee_log(path: Path, apps: dict[str, int], seconds: int = 120) -> Path:
    """`apps`: developer app name -> requests per second (bare MessageLogging JSON lines)."""
    lines = []
    for s in range(seconds):
        for n, (app, rate) in enumerate(sorted(apps.items())):
            for i in range(rate):
                ts = T0_MS + s * 1000 + i * (1000 // rate) + n
                lines.append(orjson.dumps({
                    "messageid": f"{n}-{s}-{i}", "client.ip": f"203.0.113.{n + 1}",
                    "developer.app.name": app, "request.verb": "GET",
                    "request.path": f"/v1/items/{i}", "message.status.code": "200",
                    "client.received.start.timestamp": str(ts),
                    "client.sent.end.timestamp": str(ts + 20),
                }))  # fmt: skip
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path
