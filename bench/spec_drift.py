"""CPU cost per event of the API-spec drift detector, on documented traffic and under a flood.

Benign events come from the demo traffic model, parsed by the real `KongParser`, matched against an
OpenAPI document of the demo API (every operation it calls, with its query parameters). Measured
with `time.process_time` (CPU, not wall clock: the machine is shared), best of `--repeat` runs:

- `SpecDrift.inspect` per event (warm cache, as in a worker);
- `SpecDrift.update` per event, all of its subjects, and `score` per subject;
- what an attacker can force: a never-seen undocumented path on every request (a cache miss, a
  finding, evictions), and the same against a document of `--big-paths` templated paths.

    .venv/bin/python bench/spec_drift.py [--events 50000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import cpu_us, demo_events  # noqa: E402

from detectors.base import SubjectContext  # noqa: E402
from detectors.spec_drift import SpecDrift  # noqa: E402
from detectors.spec_index import SpecIndex  # noqa: E402
from detectors.state import SubjectState  # noqa: E402
from pipeline.demo.traffic import BROWSER_MIX, CONSUMER_MIX  # noqa: E402
from pipeline.events import GatewayEvent  # noqa: E402
from pipeline.ingest.normalize import route_template  # noqa: E402

QUERY = {"/v1/search": ["q", "page"], "/v1/products": ["limit"]}


def demo_spec() -> dict[str, Any]:
    """The demo API as an OpenAPI document: every operation its clients call."""
    paths: dict[str, Any] = {}
    for method, template, _ in (*CONSUMER_MIX, *BROWSER_MIX):
        item = paths.setdefault(template, {})
        params: list[dict[str, Any]] = [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
        ]
        params = params if "{id}" in template else []
        params += [{"name": q, "in": "query"} for q in QUERY.get(template, [])]
        item[method.lower()] = {"operationId": f"{method.lower()}{template}", "parameters": params}
    return {"openapi": "3.0.3", "info": {"title": "demo", "version": "1"}, "paths": paths}


def big_spec(n: int, seed: int) -> dict[str, Any]:
    """`n` templated paths three to five segments deep, like a large public API."""
    rng = random.Random(seed)
    words = [f"res{i}" for i in range(max(8, n // 10))]
    paths: dict[str, Any] = {}
    while len(paths) < n:
        parts = []
        for depth in range(rng.randint(3, 5)):
            parts.append(rng.choice(words) if depth % 2 == 0 else f"{{p{depth}}}")
        paths["/" + "/".join(parts)] = {"get": {}, "post": {}}
    return {"openapi": "3.1.0", "info": {"title": "big", "version": "1"}, "paths": paths}


def flood(template_event: GatewayEvent, n: int, prefix: str) -> list[GatewayEvent]:
    rng = random.Random(5)
    out = []
    for i in range(n):
        path = f"{prefix}/{rng.getrandbits(40):x}/{rng.getrandbits(24):x}q"
        out.append(
            template_event.model_copy(
                update={"path": path, "route": route_template(path), "status": 404, "ts_ms": i}
            )
        )
    return out


def measure(events: Sequence[GatewayEvent], repeat: int, big_paths: int) -> dict[str, Any]:
    drift = SpecDrift(SpecIndex([demo_spec()]))
    for e in events:  # warm the cache, as a running worker has it
        drift.inspect(e)

    def inspect() -> int:
        for e in events:
            drift.inspect(e)
        return len(events)

    states: dict[str, SubjectState] = {}
    pairs = [
        (e, s, SubjectContext(s, s.partition(":")[0], e.ts_ms / 1000))
        for e in events
        for s in e.subjects()
    ]

    def update() -> int:
        last = None
        for e, s, ctx in pairs:
            if e is not last:
                drift.inspect(e)  # as the processor does: update reuses the event's match
                last = e
            state = states.get(s)
            if state is None:
                state = states[s] = SubjectState()
            drift.update(state, e, ctx)
        return len(events)

    def score() -> int:
        for _, s, ctx in pairs:
            drift.score(states[s], ctx)
        return len(pairs)

    inspect_us = cpu_us(inspect, repeat)
    update_us = max(0.0, cpu_us(update, repeat) - inspect_us)
    score_us = cpu_us(score, repeat)

    probes = flood(events[0], 20_000, "/v1")

    def cold(index_specs: list[dict[str, Any]], batch: list[GatewayEvent]) -> Callable[[], int]:
        def run() -> int:
            fresh = SpecDrift(SpecIndex(index_specs, cache_size=2_000), max_findings_per_kind=256)
            for e in batch:
                fresh.inspect(e)
            return len(batch)

        return run

    big = big_spec(big_paths, 3)
    big_probes = flood(events[0], 20_000, "/res1")
    return {
        "inspect_us": inspect_us,
        "update_us_per_event": update_us,
        "score_us_per_subject": score_us,
        "cold_probe_us": cpu_us(cold([demo_spec()], probes), repeat),
        "cold_probe_big_spec_us": cpu_us(cold([big], big_probes), repeat),
        "findings": len(drift.findings()),
        "distinct_paths": len({e.path for e in events}),
        "subjects_with_memo": sum(1 for s in states.values() if s.memo),
        "subjects": len(states),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--big-paths", type=int, default=2_000)
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()
    if args.events < 1 or args.repeat < 1 or args.big_paths < 1:
        ap.error("--events, --repeat and --big-paths must be at least 1")
    events = demo_events(args.events, args.seed)
    result = {"events": len(events), **measure(events, args.repeat, args.big_paths)}
    if args.json:
        print(orjson.dumps(result).decode())
        return
    table = Table(title=f"spec drift, {len(events):,} benign events (CPU time)")
    table.add_column("what")
    table.add_column("µs", justify="right")
    for key, label in (
        ("inspect_us", "SpecDrift.inspect per event (warm cache)"),
        ("update_us_per_event", "SpecDrift.update per event (all subjects)"),
        ("score_us_per_subject", "SpecDrift.score per subject"),
        ("cold_probe_us", "a never-seen undocumented path (cache miss, finding)"),
        ("cold_probe_big_spec_us", f"the same against {args.big_paths:,} documented paths"),
    ):
        table.add_row(label, f"{result[key]:.2f}")
    console = Console()
    console.print(table)
    console.print(
        f"{result['distinct_paths']:,} distinct paths; {result['findings']} findings on benign "
        f"traffic; {result['subjects_with_memo']} of {result['subjects']} subjects hold a sketch"
    )


if __name__ == "__main__":
    main()
