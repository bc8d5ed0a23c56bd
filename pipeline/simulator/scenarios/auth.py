"""Attacks on authentication: credential stuffing from one address, distributed stuffing from
thousands, and brute force against one account."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any

from pipeline.simulator.scenarios.base import (
    CURRENT_CHROME,
    OLD_BROWSERS,
    Attack,
    attacker_consumer,
    poisson,
)

__all__ = ["BruteForce", "CredentialStuffing", "DistributedStuffing"]

FORM = "application/x-www-form-urlencoded"


def _target(attack: Attack, app_key_share: float) -> tuple[str, dict[str, Any]]:
    """The web login, or the app login with the key lifted from the phone app: Kong then
    attributes every attempt to the app's consumer, which thousands of real users share."""
    rng = attack.rng
    if rng.random() < app_key_share:
        return "/v1/auth/token", {"apikey": rng.choice(sorted(attack.world.app_keys.values()))}
    return "/login", {}


class CredentialStuffing(Attack):
    """One address replaying a breached list: many accounts, 2-10 attempts/s, ~95% failing."""

    def plan(self) -> None:
        rng, ep = self.rng, self.episode
        self.ip = self.world.attacker_ips.attacker()
        self.rate = rng.uniform(2.0, 10.0)
        self.success = rng.uniform(0.01, 0.06)
        self.path, self.key = _target(self, 0.3)
        tool = rng.random()
        if tool < 0.5:  # an OpenBullet-style config: a browser UA, a tool's header set
            self.headers = {
                "user-agent": CURRENT_CHROME,
                "accept": "*/*",
                "content-type": FORM,
                "accept-encoding": "gzip, deflate",
            }
        elif tool < 0.8:
            self.headers = {
                "user-agent": "python-requests/2.31.0",
                "accept": "*/*",
                "accept-encoding": "gzip, deflate",
                "connection": "keep-alive",
                "content-type": FORM,
            }
        else:
            self.headers = {
                "user-agent": rng.choice(OLD_BROWSERS),
                "accept": "*/*",
                "content-type": FORM,
            }
        self.headers.update(self.key)
        ep.params = {
            "ip": self.ip,
            "rate_per_s": round(self.rate, 2),
            "route": self.path,
            "success_rate": round(self.success, 3),
            "app_key": bool(self.key),
            "user_agent": self.headers["user-agent"],
        }
        ep.description = (
            f"single IP {self.ip}, {self.rate:.1f} logins/s on {self.path}, "
            f"{self.success:.0%} success"
        )

    def run(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        endpoint = self.world.catalogue.endpoint("POST", self.path)
        for t in poisson(rng, self.start_ms, self.end_ms, self.rate):
            status = 200 if rng.random() < self.success else 401
            yield self.handle(
                t,
                self.ip,
                "POST",
                self.path,
                None,
                self.headers,
                endpoint=endpoint,
                status=status,
                body=rng.randint(45, 90),
            )


class DistributedStuffing(Attack):
    """A botnet or residential-proxy pool: thousands of addresses from a few dozen /24s, one or
    two attempts each, same tool so same UA and header shape, low and slow per address."""

    def plan(self) -> None:
        rng, ep = self.rng, self.episode
        duration = (self.end_ms - self.start_ms) / 1000
        self.rate = rng.uniform(8.0, 20.0)
        attempts = max(40, int(self.rate * duration))
        n_ips = max(30, min(6000, int(attempts / 1.35)))
        nets = [self.world.attacker_ips.attacker_subnet() for _ in range(rng.randint(20, 40))]
        per_net = -(-n_ips // len(nets))
        pool: list[str] = []
        for net in nets:
            pool += self.world.attacker_ips.attacker_subnet_hosts(net, min(254, per_net))
        rng.shuffle(pool)
        self.ips = pool[:n_ips]
        self.success = rng.uniform(0.005, 0.03)
        self.path, key = _target(self, 0.3)
        self.headers = {
            "user-agent": CURRENT_CHROME,
            "accept": "application/json",
            "content-type": "application/json",
            "accept-encoding": "gzip, deflate, br",
            **key,
        }
        ep.params = {
            "ips": len(self.ips),
            "subnets": len(nets),
            "rate_per_s": round(self.rate, 2),
            "route": self.path,
            "success_rate": round(self.success, 3),
            "app_key": bool(key),
        }
        ep.description = (
            f"{len(self.ips)} IPs in {len(nets)} /24s, {self.rate:.1f} logins/s in "
            f"total on {self.path}, 1-2 per IP, {self.success:.1%} success"
        )

    def run(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        endpoint = self.world.catalogue.endpoint("POST", self.path)
        heap: list[tuple[int, int, str]] = []
        ips = iter(self.ips)
        n = 0
        for t in poisson(rng, self.start_ms, self.end_ms, self.rate):
            while heap and heap[0][0] <= t:
                yield self._attempt(heapq.heappop(heap), endpoint)
            ip = next(ips, None)
            if ip is None:
                break
            n += 1
            if rng.random() < 0.35:  # a second try from the same address, later
                later = t + rng.randint(5_000, 90_000)
                if later < self.end_ms:
                    heapq.heappush(heap, (later, n, ip))
            yield self._attempt((t, n, ip), endpoint)
        while heap:
            yield self._attempt(heapq.heappop(heap), endpoint)

    def _attempt(self, item: tuple[int, int, str], endpoint: Any) -> dict[str, Any]:
        t, _, ip = item
        status = 200 if self.rng.random() < self.success else 401
        return self.handle(
            t,
            ip,
            "POST",
            self.path,
            None,
            self.headers,
            endpoint=endpoint,
            status=status,
            body=self.rng.randint(60, 110),
        )


class BruteForce(Attack):
    """Password guessing against ONE account, slower than stuffing: from one address on the web
    login, or through a partner account (its key) on the partner login."""

    def plan(self) -> None:
        rng, ep = self.rng, self.episode
        self.ip = self.world.attacker_ips.attacker()
        self.rate = rng.uniform(0.3, 2.0)
        self.via_consumer = rng.random() < 0.45
        ua = rng.choice(
            ("Mozilla/4.0 (Hydra)", "python-requests/2.31.0", "curl/8.4.0", CURRENT_CHROME)
        )
        self.headers: dict[str, Any] = {"user-agent": ua, "accept": "*/*", "content-type": FORM}
        if self.via_consumer:
            consumer = attacker_consumer(self.world, rng, ep)
            self.headers["apikey"] = consumer.key
            self.path = "/v1/auth/token"
        else:
            self.path = "/login"
        user = rng.choice(("admin", "j.smith", "finance", "ceo"))
        account = f"{user}@{rng.choice(('shop.example', 'gmail.com'))}"
        self.cracked = rng.random() < 0.2
        ep.params = {
            "ip": self.ip,
            "rate_per_s": round(self.rate, 2),
            "route": self.path,
            "account": account,
            "via_consumer": self.via_consumer,
            "user_agent": ua,
            "cracked": self.cracked,
        }
        who = (
            f"consumer {next(iter(ep.consumers.values()))} from {self.ip}"
            if (self.via_consumer)
            else f"IP {self.ip}"
        )
        ep.description = (
            f"{who} guessing the password of {account} on {self.path}, "
            f"{self.rate:.1f} attempts/s" + (", cracked at the end" if self.cracked else "")
        )

    def run(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        endpoint = self.world.catalogue.endpoint("POST", self.path)
        times = list(poisson(rng, self.start_ms, self.end_ms, self.rate))
        for i, t in enumerate(times):
            status = 200 if self.cracked and i == len(times) - 1 else 401
            yield self.handle(
                t,
                self.ip,
                "POST",
                self.path,
                None,
                self.headers,
                endpoint=endpoint,
                status=status,
                body=rng.randint(50, 80),
            )
