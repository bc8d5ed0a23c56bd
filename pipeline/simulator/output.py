"""`simulate`: a run written to a directory as the files gatewatch's tools read.

- `traffic.ndjson`: one request per line: a Kong log-serializer JSON object (`format="kong"`), or
  the RFC 5424 syslog line Apigee's MessageLogging sends (`format="apigee-syslog"`);
- `labels.json`: the episodes and their subjects (consumers named as that format's parser names
  them), the auth routes, the shadow endpoints and the benign subject count;
- `openapi.json`: the API's OpenAPI 3.0 document (shadow endpoints left out).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.simulator.apigee import syslog_line
from pipeline.simulator.engine import Simulation
from pipeline.simulator.labels import FORMATS

__all__ = ["Summary", "simulate"]

FLUSH_LINES = 2000
PROGRESS_EVERY = 5000


@dataclass
class Summary:
    out_dir: str
    format: str
    seed: int
    minutes: float
    consumers: int
    start_ms: int
    end_ms: int
    entries: int
    attack_entries: int
    bytes: int
    episodes: int
    episodes_by_scenario: dict[str, int]
    benign_subjects: int
    cpu_s: float
    files: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def simulate(
    out_dir: Path,
    *,
    seed: int = 7,
    minutes: float = 30.0,
    format: str = "kong",
    consumers: int = 2000,
    start_hour: float = 9.0,
    episodes_per_hour: float = 3.0,
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """Play a run and write its files into `out_dir` (created if missing). `progress`, when
    given, is called now and then with the simulated milliseconds played so far."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; one of {', '.join(FORMATS)}")
    sim = Simulation(
        seed=seed,
        minutes=minutes,
        consumers=consumers,
        start_hour=start_hour,
        episodes_per_hour=episodes_per_hour,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cpu0 = time.process_time()
    render: Callable[[dict[str, Any]], bytes] = (
        orjson.dumps if format == "kong" else syslog_line  # type: ignore[assignment]
    )
    written = 0
    buffer: list[bytes] = []
    with (out / "traffic.ndjson").open("wb") as fh:
        for n, entry in enumerate(sim.kong_entries(), 1):
            buffer.append(render(entry))
            if len(buffer) >= FLUSH_LINES:
                chunk = b"\n".join(buffer) + b"\n"
                fh.write(chunk)
                written += len(chunk)
                buffer.clear()
            if progress is not None and n % PROGRESS_EVERY == 0:
                progress(entry["started_at"] - sim.start_ms)
        if buffer:
            chunk = b"\n".join(buffer) + b"\n"
            fh.write(chunk)
            written += len(chunk)
    labels = sim.labels(format)
    (out / "labels.json").write_bytes(orjson.dumps(labels, option=orjson.OPT_INDENT_2))
    (out / "openapi.json").write_bytes(orjson.dumps(sim.openapi(), option=orjson.OPT_INDENT_2))
    if progress is not None:
        progress(sim.end_ms - sim.start_ms)
    return Summary(
        out_dir=str(out),
        format=format,
        seed=seed,
        minutes=float(minutes),
        consumers=consumers,
        start_ms=sim.start_ms,
        end_ms=sim.end_ms,
        entries=sim.entries,
        attack_entries=sim.attack_entries,
        bytes=written,
        episodes=len(labels["episodes"]),
        episodes_by_scenario=dict(
            sorted(Counter(e["scenario"] for e in labels["episodes"]).items())
        ),
        benign_subjects=labels["benign_subjects"],
        cpu_s=round(time.process_time() - cpu0, 3),
        files=["traffic.ndjson", "labels.json", "openapi.json"],
    )
