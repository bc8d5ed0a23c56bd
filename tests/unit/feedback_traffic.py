"""A partner's benign nightly export that the rate detector challenges, and attackers next to it:
the traffic the feedback tests replay through a `Processor` before and after a false positive."""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.events import GatewayEvent
from pipeline.worker.processor import Processor, StateStore, build_processor

__all__ = ["EXPORT", "SEARCH", "export_night", "flood", "processor", "run", "verdicts"]

T0_MS = 1_700_000_000_000
EXPORT = "/v1/export"
SEARCH = "/v1/search"
DAY_S = 86_400


def _event(t_ms: int, consumer: str, ip: str, route: str, path: str) -> GatewayEvent:
    return GatewayEvent(
        ts_ms=t_ms, gateway="kong", consumer=consumer, client_ip=ip, method="GET", path=path,
        route=route, status=200, latency_ms=20.0,
    )  # fmt: skip


def export_night(
    day: int, consumer: str, app_ip: str, batch_ip: str, *, burst: int = 40
) -> list[GatewayEvent]:
    """Five minutes of order reads at 3/s from the partner's app servers, then the nightly export
    from its batch host: `burst` requests/s for 20 s."""
    start = T0_MS + day * DAY_S * 1000
    out = [
        _event(start + s * 1000 + i * 333, consumer, app_ip, "/v1/orders/{id}", f"/v1/orders/{i}")
        for s in range(300)
        for i in range(3)
    ]
    out += [
        _event(start + (300 + s) * 1000 + i * (1000 // burst), consumer, batch_ip, EXPORT, EXPORT)
        for s in range(20)
        for i in range(burst)
    ]
    return out


def flood(day: int, consumer: str, ip: str, route: str, rate: int = 40) -> list[GatewayEvent]:
    """The same shape from one address, with a flood of `rate`/s on `route` for the export."""
    return [
        e if e.route != EXPORT else e.model_copy(update={"route": route, "path": route})
        for e in export_night(day, consumer, ip, ip, burst=rate)
    ]


def processor() -> Processor:
    return build_processor(Settings(mode="enforce"), event_clock=True)


def run(proc: Processor, store: StateStore, *streams: list[GatewayEvent]) -> dict[str, str]:
    """Replay the streams merged in time order, envelope-sized batches; the strongest action
    decided per subject."""
    events = sorted((e for s in streams for e in s), key=lambda e: e.ts_ms)
    rank = {"allow": 0, "tag": 1, "challenge": 2, "block": 3}
    strongest: dict[str, str] = {}
    for i in range(0, len(events), 200):
        for d in proc.process(events[i : i + 200], store):
            if rank[d.action] > rank[strongest.get(d.subject, "allow")]:
                strongest[d.subject] = d.action
    return strongest


def verdicts(decided: dict[str, str], *subjects: str) -> list[str]:
    return [decided.get(s, "allow") for s in subjects]
