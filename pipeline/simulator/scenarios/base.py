"""What every attack scenario shares: its actor base, timing helpers and attacker identities."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from pipeline.simulator.kong import Consumer, new_uuid
from pipeline.simulator.labels import Episode
from pipeline.simulator.world import Actor, World

__all__ = ["Attack", "attacker_consumer", "poisson", "regular"]

# Old browser strings of the kind `sqlmap --random-agent` and credential-stuffing configs carry.
OLD_BROWSERS = (
    "Mozilla/5.0 (Windows; U; Windows NT 6.1; en-US) AppleWebKit/534.16 (KHTML, like Gecko) "
    "Chrome/10.0.648.127 Safari/534.16",
    "Mozilla/5.0 (Windows NT 6.1; WOW64; rv:40.0) Gecko/20100101 Firefox/40.1",
    "Opera/9.80 (Windows NT 6.0; U; en) Presto/2.8.99 Version/11.10",
    "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.1; Trident/4.0)",
)
CURRENT_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.0.0 Safari/537.36"
)
SCRIPT_AGENTS = (
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "curl/8.4.0",
    "python-httpx/0.25.1",
    "axios/1.6.2",
)
PARTNER_WORDS = ("nova", "apex", "blue", "swift", "cloud", "data", "mint", "peak", "orbit", "zen")


def poisson(rng: random.Random, start_ms: int, end_ms: int, rate: float) -> Iterator[int]:
    """Arrival times of a Poisson process at `rate` per second."""
    t = start_ms + int(rng.expovariate(rate) * 1000)
    while t < end_ms:
        yield t
        t += 1 + int(rng.expovariate(rate) * 1000)


def regular(
    rng: random.Random, start_ms: int, end_ms: int, period_s: float, jitter: float
) -> Iterator[int]:
    """A machine's clock: every `period_s` seconds, within ±`jitter` of it."""
    t = start_ms
    while t < end_ms:
        yield t
        t += max(1, int(period_s * 1000 * (1 + rng.uniform(-jitter, jitter))))


def attacker_consumer(world: World, rng: random.Random, episode: Episode) -> Consumer:
    """A partner account the attacker signed up for (or bought): a real, working API key."""
    username = f"{rng.choice(PARTNER_WORDS)}{rng.choice(PARTNER_WORDS)}-{rng.randint(100, 9999)}"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    consumer = Consumer(
        id=new_uuid(rng),
        username=username,
        key="".join(rng.choice(alphabet) for _ in range(32)),
        credential_id=new_uuid(rng),
        limit_per_min=1200,
        email=f"ops@{username}.example",
    )
    world.gateway.register(consumer)
    episode.consumers[consumer.id] = consumer.username
    return consumer


class Attack(Actor):
    """An attack actor: its own random stream, its episode (every request it sends is counted
    for the episode by the engine) and a window it never leaves."""

    def __init__(self, world: World, episode: Episode, part: str = "") -> None:
        self.world = world
        self.episode = episode
        self.name = f"{episode.id}:{episode.scenario}{':' + part if part else ''}"
        self.rng = world.rng(self.name)
        self.start_ms = episode.start_ms
        self.end_ms = min(episode.end_ms, world.end_ms)
        self.plan()

    def plan(self) -> None:
        """Choose the attack's parameters and identities; describe them on the episode."""

    def handle(
        self,
        t: int,
        ip: str,
        method: str,
        path: str,
        query: Any,
        headers: dict[str, Any],
        **kw: Any,
    ) -> dict[str, Any]:
        self.episode.ips.add(ip)
        return self.world.gateway.handle(self.rng, t, ip, method, path, query, headers, **kw)
