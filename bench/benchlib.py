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

__all__ = ["benign_events", "cpu_us"]


def benign_events(n: int, seed: int) -> list[GatewayEvent]:
    """`n` events of the demo's benign traffic (consumers, browsers, NATs), parsed like Kong's."""
    model = TrafficModel(seed=seed, consumers=600, browsers=1000, nats=6)
    parser = KongParser(Redactor(b"bench"))
    events: list[GatewayEvent] = []
    now_ms = 1_700_000_000_000
    while len(events) < n:
        now_ms += 100
        for entry in model.tick(now_ms, 0.1):
            events.extend(parser.parse_body(orjson.dumps(entry)).events)
    return events[:n]


def cpu_us(fn: Callable[[], int], repeat: int) -> float:
    """Best CPU time per item over `repeat` runs of `fn` (which returns how many items it did)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        items = fn()
        best = min(best, (time.process_time() - start) / items * 1e6)
    return best
