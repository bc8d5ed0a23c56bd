"""CPU time per Kong entry of each step the collector runs, in this process (no network).

The steps of one POST: decode the body, build the events, drop retried request ids, route each
event to its partition, encode the envelopes. Timed for the reference path (orjson, one
`GatewayEvent` per entry, msgpack) and for the fast path the collector uses (msgspec structs,
field dicts built directly, msgspec's msgpack), on the same simulated bodies as bench/ingest.py.

Process CPU time, best of `--repeat` runs, with the garbage collector frozen and tuned as in the
collector: other processes on the machine change it far less than they change wall-clock figures.
What this leaves out (HTTP, the Kafka client, the socket) is what bench/ingest.py adds.

    .venv/bin/python bench/ingest_cpu.py [--entries 40000] [--repeat 7] [--json]
"""

from __future__ import annotations

import argparse
import gc
import operator
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import build_bodies  # noqa: E402
from pipeline import envelopes  # noqa: E402
from pipeline.ingest import kong_wire  # noqa: E402
from pipeline.ingest.guards import Deduplicator  # noqa: E402
from pipeline.ingest.kong import KongParser  # noqa: E402
from pipeline.ingest.normalize import TimeWindow  # noqa: E402
from pipeline.ingest.redaction import Redactor  # noqa: E402

PARTITIONS = 4
ENVELOPE = 125  # events per envelope: a 500-entry POST over four partitions


def best_of(repeat: int, step: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        step()
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=40_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    bodies = [raw for _, raw in build_bodies(args.entries, seed=5)]
    # As the collector runs it: with the event-time window checked on every entry.
    parser = KongParser(Redactor(b"bench-key"), window=TimeWindow())
    dedupe = Deduplicator(window_s=300, max_ids=200_000)
    results = [parser.parse_body(raw) for raw in bodies]  # also warms the parser's caches
    records = [parser.parse_records(raw) for raw in bodies]
    assert all(r.fast for r in records), "the simulated bodies must take the fast path"
    events = [e for r in results for e in r.events]
    flat = [rec for r in records for rec in r.records]
    n = len(events)
    request_id = operator.itemgetter("request_id")

    def chunks(items: list) -> list:  # type: ignore[type-arg]
        return [items[i : i + ENVELOPE] for i in range(0, len(items), ENVELOPE)]

    steps: dict[str, dict[str, Callable[[], object]]] = {
        "decode JSON": {
            "reference": lambda: [orjson.loads(raw) for raw in bodies],
            "fast": lambda: [kong_wire.decode(raw) for raw in bodies],
        },
        "decode + build events": {
            "reference": lambda: [parser.parse_body(raw) for raw in bodies],
            "fast": lambda: [parser.parse_records(raw) for raw in bodies],
        },
        "dedupe request ids": {
            "reference": lambda: [dedupe.filter(r.events) for r in results],
            "fast": lambda: [dedupe.filter(r.records, request_id) for r in records],
        },
        "route to partitions": {
            "reference": lambda: [
                envelopes.partition_for(e.partition_subject(), PARTITIONS) for e in events
            ],
            # What EnvelopeProducer.submit_records does per record (remembered per subject).
            "fast": lambda: _route_records(flat),
        },
        "encode envelopes": {
            "reference": lambda: [
                msgpack.packb({"v": 1, "events": [vars(e) for e in c]}) for c in chunks(events)
            ],
            "fast": lambda: [envelopes.encode_records(c) for c in chunks(flat)],
        },
    }

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
    table: dict[str, dict[str, float]] = {}
    for name, paths in steps.items():
        table[name] = {
            path: round(best_of(args.repeat, step) / n * 1e6, 2) for path, step in paths.items()
        }
    total = {
        path: round(sum(v[path] for k, v in table.items() if k != "decode JSON"), 2)
        for path in ("reference", "fast")
    }
    table["total (without 'decode JSON', inside the next row)"] = total
    report = {"entries": n, "us_per_entry": table}
    if args.json:
        print(orjson.dumps(report).decode())
        return
    out = Table(title=f"CPU us per entry ({n:,} entries, best of {args.repeat})")
    out.add_column("step")
    out.add_column("reference", justify="right")
    out.add_column("fast", justify="right")
    for name, row in table.items():
        out.add_row(name, f"{row['reference']:.2f}", f"{row['fast']:.2f}")
    Console().print(out)


def _route_records(records: list[envelopes.EventRecord]) -> None:
    cache: dict[str, int] = {}
    for record in records:
        key = record["consumer"] or record["client_ip"]
        if cache.get(key) is None:
            subject = (
                f"consumer:{record['consumer']}"
                if record["consumer"]
                else f"ip:{record['client_ip']}"
            )
            cache[key] = envelopes.partition_for(subject, PARTITIONS)


if __name__ == "__main__":
    main()
