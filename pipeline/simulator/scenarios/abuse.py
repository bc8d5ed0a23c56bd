"""Abuse of real credentials: a consumer flooding at many times its own rate, and one
consumer's key suddenly used from dozens of unrelated addresses."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any

from pipeline.simulator.agents import browser_headers, sdk_headers
from pipeline.simulator.consumers import ConsumerState, Makers
from pipeline.simulator.labels import Episode
from pipeline.simulator.scenarios.base import Attack, poisson
from pipeline.simulator.world import BUSINESS, World

__all__ = ["ConsumerFlood", "KeySharing"]


def _keyed_mix(makers: Makers, names: list[str]) -> list[str]:
    """The consumer's own endpoints that go through key-auth (the others are anonymous in Kong's
    log, so they would not be the consumer's traffic)."""
    keyed = [n for n in names if makers.e[n].route.key_auth]
    return keyed or ["order_get", "orders_list"]


class ConsumerFlood(Attack):
    """A real consumer at 10-50x its own baseline rate, from its own addresses with its own
    client (a runaway retry loop, a leaked key in a load test, a scraping partner), until Kong's
    rate limit answers most of it with 429."""

    def __init__(
        self,
        world: World,
        episode: Episode,
        st: ConsumerState,
        baseline: float,
        mix: list[str],
        makers: Makers,
    ) -> None:
        self.st, self.baseline, self.makers = st, baseline, makers
        self.names = _keyed_mix(makers, mix)
        super().__init__(world, episode)

    def plan(self) -> None:
        rng, ep, st = self.rng, self.episode, self.st
        # Its baseline now: its own rate on the business-hours curve at this time of day.
        self.baseline *= self.world.activity(BUSINESS, self.start_ms)
        self.rate = max(2.0, self.baseline * rng.uniform(10.0, 50.0))
        ep.consumers[st.consumer.id] = st.consumer.username
        ep.ips.update(st.ips)
        ep.params = {
            "consumer": st.consumer.username,
            "baseline_per_s": round(self.baseline, 3),
            "factor": round(self.rate / self.baseline, 1),
            "rate_per_s": round(self.rate, 2),
            "limit_per_min": st.consumer.limit_per_min,
        }
        ep.description = (
            f"consumer {st.consumer.username} at {self.rate:.1f} req/s, "
            f"{self.rate / self.baseline:.0f}x its baseline of "
            f"{self.baseline:.2f} req/s"
        )

    def run(self) -> Iterator[dict[str, Any]]:
        rng, st = self.rng, self.st
        headers = st.auth()
        for t in poisson(rng, self.start_ms, self.end_ms, self.rate):
            name = rng.choice(self.names)
            v2 = st.v2_at_ms is not None and t >= st.v2_at_ms
            endpoint, path, query, status, body = self.makers.make(name, rng, st, v2)
            yield self.handle(
                t,
                rng.choice(st.ips),
                endpoint.method,
                path,
                query,
                headers,
                endpoint=endpoint,
                status=status,
                body=body,
                tls=st.tls,
            )


class KeySharing(Attack):
    """One consumer's key used from 20-60 addresses across unrelated ranges alongside its owner
    (a key posted in a public repository, resold, or shared across a team's laptops)."""

    def __init__(
        self, world: World, episode: Episode, st: ConsumerState, mix: list[str], makers: Makers
    ) -> None:
        self.st, self.makers = st, makers
        self.names = _keyed_mix(makers, mix)
        super().__init__(world, episode)

    def plan(self) -> None:
        rng, ep, st = self.rng, self.episode, self.st
        n = rng.randint(20, 60)
        self.ips = [self.world.attacker_ips.attacker() for _ in range(n)]
        self.clients: list[tuple[dict[str, Any], dict[str, str]]] = []
        for _ in range(n):
            if rng.random() < 0.3:
                h, tls = browser_headers(rng)
            else:
                h, tls = sdk_headers(rng)
            self.clients.append(({**h, "apikey": st.consumer.key}, tls))
        self.per_ip_rate = rng.uniform(0.02, 0.2)
        ep.consumers[st.consumer.id] = st.consumer.username
        ep.params = {
            "consumer": st.consumer.username,
            "ips": len(self.ips),
            "owner_ips": list(st.ips),
            "per_ip_rate_per_s": round(self.per_ip_rate, 3),
        }
        ep.description = (
            f"key of consumer {st.consumer.username} used from {n} foreign IPs "
            f"across unrelated ranges alongside its {len(st.ips)} own"
        )

    def run(self) -> Iterator[dict[str, Any]]:
        rng, st = self.rng, self.st
        span = self.end_ms - self.start_ms
        # Every address shows up (its first request in the first half), then keeps going.
        firsts = [self.start_ms + rng.randint(0, max(1, span // 2)) for _ in self.ips]
        streams = [poisson(rng, t, self.end_ms, self.per_ip_rate) for t in firsts]
        heap = [(t, i) for i, t in enumerate(firsts) if t < self.end_ms]
        heapq.heapify(heap)
        while heap:
            t, i = heapq.heappop(heap)
            headers, tls = self.clients[i]
            name = rng.choice(self.names)
            v2 = st.v2_at_ms is not None and t >= st.v2_at_ms
            endpoint, path, query, status, body = self.makers.make(name, rng, st, v2)
            yield self.handle(
                t,
                self.ips[i],
                endpoint.method,
                path,
                query,
                headers,
                endpoint=endpoint,
                status=status,
                body=body,
                tls=tls,
            )
            nxt = next(streams[i], None)
            if nxt is not None:
                heapq.heappush(heap, (nxt, i))
