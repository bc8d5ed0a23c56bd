"""Attack scenarios and their schedule.

Every scenario runs at least once per run and about `per_hour` times per simulated hour, its
episodes spread over the run (one per equal slice, after a warm-up that lets baselines form),
each 30 s to 5 min long. Episode ids follow planned start order (the labels give each episode's
planned window and its actual first and last request).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pipeline.simulator.labels import SCENARIOS, Episode
from pipeline.simulator.population import Population
from pipeline.simulator.scenarios.abuse import ConsumerFlood, KeySharing
from pipeline.simulator.scenarios.auth import BruteForce, CredentialStuffing, DistributedStuffing
from pipeline.simulator.scenarios.base import Attack
from pipeline.simulator.scenarios.crawl import BadUaBot, Scraping, StealthBot
from pipeline.simulator.scenarios.probe import (
    BolaEnumeration,
    InjectionProbing,
    SensitiveFileProbing,
    ShadowDiscovery,
)
from pipeline.simulator.world import World

__all__ = ["DURATIONS_S", "episodes_per_scenario", "plan_attacks"]

# Duration range of each scenario's episodes, seconds.
DURATIONS_S: dict[str, tuple[float, float]] = {
    "credential_stuffing": (60, 300),
    "distributed_credential_stuffing": (180, 300),
    "brute_force": (120, 300),
    "scraping": (60, 240),
    "bola_enumeration": (60, 240),
    "injection_probing": (30, 180),
    "bad_ua_bot": (30, 180),
    "stealth_bot": (120, 300),
    "consumer_flood": (60, 240),
    "key_sharing": (120, 300),
    "sensitive_file_probing": (30, 120),
    "shadow_endpoint_discovery": (30, 180),
}
SIMPLE: dict[str, Callable[[World, Episode], Attack]] = {
    "credential_stuffing": CredentialStuffing,
    "distributed_credential_stuffing": DistributedStuffing,
    "brute_force": BruteForce,
    "scraping": Scraping,
    "bola_enumeration": BolaEnumeration,
    "injection_probing": InjectionProbing,
    "bad_ua_bot": BadUaBot,
    "stealth_bot": StealthBot,
    "sensitive_file_probing": SensitiveFileProbing,
    "shadow_endpoint_discovery": ShadowDiscovery,
}
ABUSING_CONSUMERS = ("consumer_flood", "key_sharing")


def episodes_per_scenario(minutes: float, per_hour: float) -> int:
    return max(1, round(per_hour * minutes / 60))


def _windows(
    rng: random.Random, scenario: str, n: int, start_ms: int, end_ms: int
) -> list[tuple[int, int]]:
    span = end_ms - start_ms
    warmup = int(min(300_000, span * 0.15))
    first = start_ms + warmup
    window = end_ms - first
    stratum = window / n
    lo, hi = DURATIONS_S[scenario]
    out = []
    for k in range(n):
        duration = rng.uniform(lo, hi) * 1000
        # Short runs squeeze episodes, but never below 30 s unless the run itself is shorter.
        duration = int(max(min(duration, window * 0.45), min(30_000, window)))
        s0 = first + k * stratum
        latest = max(s0, min(s0 + stratum, end_ms - duration))
        begin = int(rng.uniform(s0, latest))
        out.append((begin, min(end_ms, begin + duration)))
    return out


def plan_attacks(
    world: World, population: Population, *, scenarios: tuple[str, ...], per_hour: float
) -> list[tuple[Episode, list[Attack]]]:
    """The run's episodes (ids in start order) and the actors that play them."""
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    rng = world.rng("schedule")
    minutes = (world.end_ms - world.start_ms) / 60_000
    slots = []
    for scenario in SCENARIOS:
        if scenario not in scenarios:
            continue
        n = episodes_per_scenario(minutes, per_hour)
        for k, (begin, end) in enumerate(_windows(rng, scenario, n, world.start_ms, world.end_ms)):
            slots.append((begin, scenario, k, end))
    slots.sort()
    out: list[tuple[Episode, list[Attack]]] = []
    next_reserved = {s: 0 for s in ABUSING_CONSUMERS}
    for i, (begin, scenario, _, end) in enumerate(slots, 1):
        episode = Episode(id=f"e{i:02d}", scenario=scenario, start_ms=begin, end_ms=end)
        if scenario in SIMPLE:
            actors: list[Attack] = [SIMPLE[scenario](world, episode)]
        else:
            st, rate, mix = population.reserved[scenario][next_reserved[scenario]]
            next_reserved[scenario] += 1
            if scenario == "consumer_flood":
                actors = [ConsumerFlood(world, episode, st, rate, mix, population.makers)]
            else:
                actors = [KeySharing(world, episode, st, mix, population.makers)]
        out.append((episode, actors))
    return out
