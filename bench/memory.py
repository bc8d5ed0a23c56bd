"""Bytes of worker memory per tracked subject, with every detector on.

Replays simulator traffic through the processor (as `gatewatch replay` does), then measures with
tracemalloc what the state store holds: per subject on average, and split by subject kind
(a one-shot address vs an established consumer with its River baselines and detector memos).
Also a million-address distributed attack: each address one failed login, to show the store
stays bounded (`max_subjects`) and what each of those subjects costs. `--alerts` also runs each
replay with the worker's alert collector (its evidence ring and finding windows are bounded
outside the subject states) and reports the bytes per subject with it.

    .venv/bin/python bench/memory.py [--minutes 5] [--attack-ips 1000000] [--alerts] [--json]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from pathlib import Path

import orjson
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import Settings  # noqa: E402
from pipeline.evaluation.replay import ReplayResult, parse_lines  # noqa: E402
from pipeline.events import GatewayEvent  # noqa: E402
from pipeline.ingest.redaction import Redactor  # noqa: E402
from pipeline.simulator import Simulation  # noqa: E402
from pipeline.worker.alerting import AlertCollector  # noqa: E402
from pipeline.worker.processor import StateStore, build_processor  # noqa: E402


def measure_store(
    events: list[GatewayEvent], max_subjects: int, alerts: bool = False
) -> tuple[int, StateStore]:
    processor = build_processor(Settings(), event_clock=True)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = StateStore(max_subjects)
    collector = AlertCollector(processor, store) if alerts else None
    for i in range(0, len(events), 256):
        batch = events[i : i + 256]
        if collector is not None:
            collector.begin(batch)
        processor.process(batch, store, report=collector)
        if collector is not None:
            collector.take(batch[-1].ts_ms)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used, store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--attack-ips", type=int, default=1_000_000)
    parser.add_argument("--max-subjects", type=int, default=500_000)
    parser.add_argument("--alerts", action="store_true", help="with the alert collector too")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    console = Console(stderr=True)

    with console.status("simulating"):
        sim = Simulation(seed=3, minutes=args.minutes)
        result = ReplayResult()
        lines = (orjson.dumps(e) for e in sim.kong_entries())
        events = list(parse_lines(lines, "kong", Redactor(b"bench"), result))
    with console.status(f"replaying {len(events)} events under tracemalloc"):
        used, store = measure_store(events, args.max_subjects, args.alerts)
    # Events are held outside the store and measured before it starts: `used` is the store's.
    kinds: dict[str, int] = {}
    for subject in store._states:
        kind = "range" if "/" in subject else subject.partition(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    figures = {
        "events": len(events),
        "subjects": len(store),
        "bytes_per_subject": round(used / max(1, len(store))),
        "subjects_by_kind": kinds,
        "alerts": args.alerts,
    }
    with console.status(f"{args.attack_ips:,} addresses, one failed login each"):
        base = events[-1].ts_ms
        attack = [
            GatewayEvent(ts_ms=base + i // 50, gateway="kong", method="POST", path="/login",
                         route="/login", status=401,
                         client_ip=f"{10 + (i >> 24) % 200}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                         user_agent="python-httpx/0.27",
                         # Kong's request ids (32 hex), for the alert collector's evidence ring.
                         request_id=f"{i:032x}" if args.alerts else None)
            for i in range(args.attack_ips)
        ]
        used_attack, attacked = measure_store(attack, args.max_subjects, args.alerts)
    figures["attack"] = {
        "addresses": args.attack_ips,
        "subjects_kept": len(attacked),
        "max_subjects": args.max_subjects,
        "bytes_per_subject": round(used_attack / max(1, len(attacked))),
        "megabytes": round(used_attack / 1e6, 1),
    }
    if args.json:
        print(orjson.dumps(figures).decode())
    else:
        console.print(figures)


if __name__ == "__main__":
    main()
