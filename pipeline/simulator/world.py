"""What every actor of a run shares: the clock and day curves, the gateway, the address space, the
run's happenings (a deploy, a popular-content spike, an upstream incident) and its random streams.

Every actor draws from its own `random.Random`, seeded from the run seed and the actor's name, so
a run is reproducible byte for byte and one actor's behaviour does not depend on how many others
there are.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.simulator.catalogue import Catalogue
from pipeline.simulator.kong import Incident, KongGateway
from pipeline.simulator.network import IpSpace

__all__ = ["Actor", "Happenings", "Spawn", "World"]

# Relative activity by hour of day (local time): partner systems follow business hours, shoppers
# peak in the evening.
BUSINESS = (
    0.32,
    0.25,
    0.22,
    0.2,
    0.21,
    0.26,
    0.38,
    0.58,
    0.8,
    0.94,
    1.0,
    1.0,
    0.96,
    0.98,
    1.0,
    0.98,
    0.93,
    0.85,
    0.72,
    0.6,
    0.52,
    0.46,
    0.41,
    0.36,
)
SHOPPERS = (
    0.35,
    0.22,
    0.14,
    0.1,
    0.09,
    0.12,
    0.22,
    0.38,
    0.52,
    0.6,
    0.66,
    0.72,
    0.78,
    0.75,
    0.72,
    0.72,
    0.76,
    0.84,
    0.93,
    1.0,
    1.0,
    0.92,
    0.74,
    0.52,
)


@dataclass(frozen=True, slots=True)
class Happenings:
    """Run-wide events benign traffic reacts to."""

    deploy_ms: int  # the /v2 rollout: adopting consumers switch after this
    spike_start_ms: int  # a featured product: many users on one item
    spike_end_ms: int
    spike_product: int
    incident: Incident


class World:
    """The shared context of one run."""

    def __init__(
        self,
        *,
        seed: int,
        start_ms: int,
        end_ms: int,
        start_hour: float,
        catalogue: Catalogue,
    ) -> None:
        self.seed = seed
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.start_hour = start_hour
        self.catalogue = catalogue
        r = self.rng("happenings")
        span = end_ms - start_ms
        incident_len = int(min(180_000, max(30_000, span * 0.08)))
        incident_at = start_ms + int(span * r.uniform(0.55, 0.85))
        spike_at = start_ms + int(span * r.uniform(0.2, 0.6))
        self.happenings = Happenings(
            deploy_ms=start_ms + int(span * r.uniform(0.35, 0.6)),
            spike_start_ms=spike_at,
            spike_end_ms=spike_at + int(min(360_000, max(45_000, span * 0.12))),
            spike_product=r.randint(1000, 9999),
            incident=Incident("commerce", incident_at, incident_at + incident_len),
        )
        self.gateway = KongGateway(catalogue, (self.happenings.incident,))
        self.ips = IpSpace(self.rng("ips:benign"))
        self.attacker_ips = IpSpace(self.rng("ips:attackers"))
        # The phone app's API keys by platform (set by the population; attackers lift them).
        self.app_keys: dict[str, str] = {}

    def rng(self, name: str) -> random.Random:
        """A random stream of its own for `name` (string seeds are hashed with SHA-512, so the
        stream does not depend on PYTHONHASHSEED)."""
        return random.Random(f"{self.seed}/{name}")

    def activity(self, curve: tuple[float, ...], ts_ms: int) -> float:
        """The curve's value at `ts_ms`, interpolated between hours."""
        hour = (self.start_hour + (ts_ms - self.start_ms) / 3_600_000) % 24
        i = int(hour)
        frac = hour - i
        return curve[i] * (1 - frac) + curve[(i + 1) % 24] * frac

    def in_spike(self, ts_ms: int) -> bool:
        h = self.happenings
        return h.spike_start_ms <= ts_ms < h.spike_end_ms


class Actor:
    """One source of requests. `run()` yields Kong entries in time order and stops at the end of
    the run; it may also yield a `Spawn` to start another actor (a new session) at that time.
    `episode` is the attack episode the actor belongs to (None: benign)."""

    name: str = "actor"
    episode: Any = None

    def run(self) -> Iterator[dict[str, Any] | Spawn]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start `actor` at `ts_ms` (its first request is no earlier)."""

    ts_ms: int
    actor: Actor
