"""`Simulation`: a deterministic, labelled run of gateway traffic.

The run is a discrete-event merge: every actor (a consumer, a session, a crawler, an attack) is a
generator of Kong entries in its own time order, and a heap hands out the earliest pending entry
of all of them, so the output is in `started_at` order. Ties are broken by the order actors were
started, which is itself deterministic: the same arguments give the same entries, byte for byte.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from pipeline.simulator.catalogue import CATALOGUE
from pipeline.simulator.labels import FORMATS, SCENARIOS, Episode, labels_document
from pipeline.simulator.openapi import openapi_document
from pipeline.simulator.population import build_population
from pipeline.simulator.scenarios import ABUSING_CONSUMERS, episodes_per_scenario, plan_attacks
from pipeline.simulator.world import Actor, World

__all__ = ["DAY_MS", "Simulation"]

DAY_MS = 1_699_920_000_000  # 2023-11-14T00:00:00Z: the simulated day
MAX_MINUTES = 24 * 60


@dataclass
class _Outcome:
    episodes: list[Episode]
    benign_subjects: int
    entries: int
    attack_entries: int


class Simulation:
    """Labelled Kong traffic for `minutes` of a day, from `consumers` partner consumers plus
    browsers, phone apps, crawlers and monitors in proportion, with attack episodes of every
    scenario.

    Parameters
    ----------
    seed
        Everything random derives from it.
    minutes
        Simulated duration.
    consumers
        Partner consumers; browser and app traffic scale with it (2000 gives ~300-500 req/s
        during business hours).
    start_hour
        Time of day the run starts (UTC; the day curves follow it).
    start_ms
        Epoch ms of the first instant; default: 2023-11-14 at `start_hour`.
    episodes_per_hour
        Episodes of each scenario per simulated hour (at least one each per run).
    scenarios
        Which scenarios to play (default: all).
    attacks
        False: benign traffic only.

    Examples
    --------
    >>> sim = Simulation(seed=7, minutes=2, consumers=60)
    >>> entries = list(sim.kong_entries())
    >>> all(a["started_at"] <= b["started_at"] for a, b in zip(entries, entries[1:]))
    True
    >>> labels = sim.labels()
    >>> sorted({e["scenario"] for e in labels["episodes"]}) == sorted(SCENARIOS)
    True
    """

    def __init__(
        self,
        *,
        seed: int = 7,
        minutes: float = 30.0,
        consumers: int = 2000,
        start_hour: float = 9.0,
        start_ms: int | None = None,
        episodes_per_hour: float = 3.0,
        scenarios: tuple[str, ...] | list[str] | None = None,
        attacks: bool = True,
    ) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError("seed must be an integer")
        if not 0.5 <= minutes <= MAX_MINUTES:
            raise ValueError(f"minutes must be between 0.5 and {MAX_MINUTES}")
        if not 20 <= consumers <= 200_000:
            raise ValueError("consumers must be between 20 and 200000")
        if not 0 <= start_hour < 24:
            raise ValueError("start_hour must be in [0, 24)")
        if not 0 < episodes_per_hour <= 60:
            raise ValueError("episodes_per_hour must be in (0, 60]")
        chosen = tuple(SCENARIOS if scenarios is None else scenarios)
        unknown = sorted(set(chosen) - set(SCENARIOS))
        if unknown:
            raise ValueError(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
        self.seed = seed
        self.minutes = float(minutes)
        self.consumers = consumers
        self.start_hour = float(start_hour)
        self.start_ms = int(DAY_MS + start_hour * 3_600_000) if start_ms is None else start_ms
        self.end_ms = self.start_ms + int(self.minutes * 60_000)
        self.episodes_per_hour = episodes_per_hour
        self.scenarios = chosen if attacks else ()
        self._outcome: _Outcome | None = None
        self._consumer_names: dict[str, str] = {}

    def _build(self) -> tuple[World, list[Actor], list[Episode]]:
        world = World(
            seed=self.seed,
            start_ms=self.start_ms,
            end_ms=self.end_ms,
            start_hour=self.start_hour,
            catalogue=CATALOGUE,
        )
        n = episodes_per_scenario(self.minutes, self.episodes_per_hour)
        reserve = {s: n for s in ABUSING_CONSUMERS if s in self.scenarios}
        population = build_population(world, consumers=self.consumers, reserve=reserve)
        plan = plan_attacks(
            world, population, scenarios=self.scenarios, per_hour=self.episodes_per_hour
        )
        actors = list(population.actors)
        for _, attack_actors in plan:
            actors += attack_actors
        self._consumer_names = {s.consumer.id: s.consumer.username for s in population.states}
        return world, actors, [episode for episode, _ in plan]

    def kong_entries(self) -> Iterator[dict[str, Any]]:
        """Every request of the run as a Kong log-serializer entry, in `started_at` order.

        Entries share their route, service and consumer objects: copy before mutating those.
        When the iterator is exhausted, `labels()` describes this run without re-running it.
        """
        return map(itemgetter(1), self.labelled_entries())

    def labelled_entries(self) -> Iterator[tuple[str | None, dict[str, Any]]]:
        """`kong_entries()` with per-request ground truth: `(episode id, entry)` for an attack's
        request, `(None, entry)` for a benign one (a flooding consumer's or a shared key's owner's
        own traffic is benign; only what the attack sent is the episode's)."""
        world, actors, episodes = self._build()
        end = world.end_ms
        heap: list[tuple[int, int, Any, Iterator[Any], Actor]] = []
        seq = 0

        def start(actor: Actor) -> None:
            nonlocal seq
            gen = actor.run()
            item: Any = next(gen, None)
            if item is not None:
                ts = item["started_at"] if item.__class__ is dict else item.ts_ms
                if ts < end:
                    heap.append((ts, seq, item, gen, actor))
                    seq += 1

        for actor in actors:
            start(actor)
        heapq.heapify(heap)
        benign_ips: set[str] = set()
        benign_consumers: set[str] = set()
        entries = attack_entries = 0
        pop, push, replace = heapq.heappop, heapq.heappush, heapq.heapreplace
        add_ip, add_consumer = benign_ips.add, benign_consumers.add
        while heap:
            ts, _, item, gen, actor = heap[0]
            spawned_actor = None
            if item.__class__ is dict:
                episode = actor.episode
                entries += 1
                if episode is None:
                    add_ip(item["client_ip"])
                    consumer = item.get("consumer")
                    if consumer is not None:
                        add_consumer(consumer["id"])
                    yield None, item
                else:
                    episode.count(ts)
                    attack_entries += 1
                    yield episode.id, item
            else:
                spawned_actor = item.actor
            # The actor that just went usually goes on: replace its heap slot in one step.
            nxt = next(gen, None)
            if nxt is not None:
                ts = nxt["started_at"] if nxt.__class__ is dict else nxt.ts_ms
            if nxt is not None and ts < end:
                replace(heap, (ts, seq, nxt, gen, actor))
                seq += 1
            else:
                pop(heap)
            if spawned_actor is not None:
                spawned = spawned_actor.run()
                first = next(spawned, None)
                if first is not None and first["started_at"] < end:
                    push(heap, (first["started_at"], seq, first, spawned, spawned_actor))
                    seq += 1

        attack_subjects = {s for e in episodes for s in e.subjects("kong")}
        benign = {f"ip:{ip}" for ip in benign_ips} | {f"consumer:{c}" for c in benign_consumers}
        self._outcome = _Outcome(
            episodes=episodes,
            benign_subjects=len(benign - attack_subjects),
            entries=entries,
            attack_entries=attack_entries,
        )

    def _run_if_needed(self) -> _Outcome:
        if self._outcome is None:
            for _ in self.kong_entries():
                pass
        assert self._outcome is not None
        return self._outcome

    @property
    def entries(self) -> int:
        """Requests in the run (runs it if it has not run yet)."""
        return self._run_if_needed().entries

    @property
    def attack_entries(self) -> int:
        return self._run_if_needed().attack_entries

    def labels(self, format: str = "kong") -> dict[str, Any]:
        """The labels document of this run. Complete at any time: if `kong_entries()` has not
        been exhausted yet, the run is played (without keeping its entries) first. `format`
        decides how consumers are named: Kong consumer ids, or Apigee developer app names."""
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; one of {', '.join(FORMATS)}")
        outcome = self._run_if_needed()
        return labels_document(
            seed=self.seed,
            minutes=self.minutes,
            start_ms=self.start_ms,
            end_ms=self.end_ms,
            episodes=outcome.episodes,
            benign_subjects=outcome.benign_subjects,
            auth_routes=CATALOGUE.auth_routes,
            shadow_endpoints=[{"method": e.method, "path": e.template} for e in CATALOGUE.shadow],
            fmt=format,
        )

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.0 document of the simulated API (shadow endpoints left out)."""
        return openapi_document(CATALOGUE)
