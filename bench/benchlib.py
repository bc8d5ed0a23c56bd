"""What the detector benches share: benign demo traffic as events, and CPU time per item."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.demo.traffic import TrafficModel  # noqa: E402
from pipeline.events import GatewayEvent  # noqa: E402
from pipeline.ingest.kong import KongParser  # noqa: E402
from pipeline.ingest.redaction import Redactor  # noqa: E402

__all__ = ["cpu_us", "demo_events"]


def demo_events(
    n: int, seed: int, *, attacks: bool = False, key: bytes = b"bench"
) -> list[GatewayEvent]:
    """`n` events of the demo's traffic (consumers, browsers, NATs) in simulated time, parsed like
    Kong's with redaction key `key`; with `attacks`, its attacks run for the middle third."""
    model = TrafficModel(seed=seed, consumers=600, browsers=1000, nats=6)
    parser = KongParser(Redactor(key))
    events: list[GatewayEvent] = []
    now_ms = 1_700_000_000_000
    while len(events) < n:
        if attacks and n // 3 <= len(events) < 2 * n // 3:
            model.start_attack()
        else:
            model.stop_attack()
        now_ms += 100
        events.extend(parser.parse_body(orjson.dumps(model.tick(now_ms, 0.1))).events)
    return events[:n]


def cpu_us(fn: Callable[[], int], repeat: int) -> float:
    """Best CPU time per item over `repeat` runs of `fn` (which returns how many items it did)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        items = fn()
        best = min(best, (time.process_time() - start) / items * 1e6)
    return best
