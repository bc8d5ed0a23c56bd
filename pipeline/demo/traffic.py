"""Realistic Kong traffic for the demo: consumers with their own pace and endpoint mix, anonymous
browsers logging in (and mistyping), carrier-NAT addresses shared by many users, normal 4xx/5xx, and
two attacks that can be switched on: credential stuffing from one IP and a consumer flood.

Entries have the shape of Kong 3.x's log serializer (what http-log POSTs), deterministic by seed.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Actor", "TrafficModel"]

BROWSER_UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/129.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
)
SDK_UAS = (
    "okhttp/4.12.0",
    "python-requests/2.32.3",
    "axios/1.7.7",
    "Go-http-client/2.0",
    "acme-sdk-java/3.4.1",
    "Dart/3.5 (dart:io)",
)
LOGIN = "/v1/auth/login"
# (method, path template, weight) of what an API consumer does.
CONSUMER_MIX = (
    ("GET", "/v1/products", 20),
    ("GET", "/v1/products/{id}", 30),
    ("GET", "/v1/orders", 10),
    ("POST", "/v1/orders", 5),
    ("GET", "/v1/orders/{id}", 10),
    ("GET", "/v1/users/{id}/profile", 8),
    ("GET", "/v1/search", 12),
    ("PUT", "/v1/users/{id}/profile", 2),
    ("DELETE", "/v1/orders/{id}", 1),
)
BROWSER_MIX = (
    ("GET", "/v1/products", 40),
    ("GET", "/v1/products/{id}", 40),
    ("GET", "/v1/search", 15),
    ("POST", LOGIN, 5),
)
SEARCH_TERMS = ("shoes", "red dress", "laptop", "usb-c cable", "garden chair", "coffee")


@dataclass
class Actor:
    """One source of requests: a consumer, an anonymous browser, a NAT address or an attacker."""

    name: str
    kind: str  # consumer | browser | nat | stuffer | flooder
    ips: list[str]
    user_agent: str
    rate: float  # requests per second
    consumer_id: str | None = None
    username: str | None = None
    api_key: str | None = None
    mix: tuple[tuple[str, str, int], ...] = CONSUMER_MIX
    login_typo_rate: float = 0.1
    active: bool = True
    weights: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.weights = [w for _, _, w in self.mix]


class TrafficModel:
    def __init__(self, *, seed: int = 7, consumers: int = 400, browsers: int = 600, nats: int = 4):
        self.rng = random.Random(seed)
        self.actors: list[Actor] = []
        for i in range(consumers):
            self.actors.append(
                Actor(
                    name=f"consumer-{i}",
                    kind="consumer",
                    ips=[self._ip() for _ in range(self.rng.randint(1, 2))],
                    user_agent=self.rng.choice(SDK_UAS + BROWSER_UAS),
                    rate=self.rng.uniform(0.3, 4.0),
                    consumer_id=str(uuid.UUID(int=self.rng.getrandbits(128))),
                    username=f"partner-{i}",
                    api_key=f"key-{self.rng.getrandbits(64):016x}",
                )
            )
        for i in range(browsers):
            self.actors.append(
                Actor(
                    name=f"browser-{i}",
                    kind="browser",
                    ips=[self._ip()],
                    user_agent=self.rng.choice(BROWSER_UAS),
                    rate=self.rng.uniform(0.1, 1.0),
                    mix=BROWSER_MIX,
                )
            )
        for i in range(nats):
            # A mobile carrier's NAT: many users behind one address, busier and with more logins.
            self.actors.append(
                Actor(
                    name=f"carrier-nat-{i}",
                    kind="nat",
                    ips=[f"100.64.{i}.1"],
                    user_agent=BROWSER_UAS[3],
                    rate=self.rng.uniform(15, 30),
                    mix=BROWSER_MIX,
                    login_typo_rate=0.15,
                )
            )
        # The flooder is an ordinary, steady consumer until the attack begins.
        self.flooder = next(a for a in self.actors if a.kind == "consumer" and 1.5 < a.rate < 4.0)
        self.flood_rate = 200.0
        self.stuffer = Actor(
            name="stuffer",
            kind="stuffer",
            ips=["185.220.101.47"],
            user_agent=SDK_UAS[1],
            rate=25.0,
            mix=(("POST", LOGIN, 1),),
            active=False,
        )
        self.actors.append(self.stuffer)

    def _ip(self) -> str:
        r = self.rng
        first = r.choice((23, 45, 66, 81, 92, 104, 151, 178, 203))
        return f"{first}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def start_attack(self) -> None:
        self.stuffer.active = True
        self.flooder.rate = self.flood_rate
        self.flooder.mix = (("GET", "/v1/products/{id}", 1),)
        self.flooder.weights = [1]

    def stop_attack(self) -> None:
        self.stuffer.active = False
        self.flooder.rate = 2.0
        self.flooder.mix = CONSUMER_MIX
        self.flooder.weights = [w for _, _, w in CONSUMER_MIX]

    def tick(self, now_ms: int, dt_s: float) -> list[dict[str, Any]]:
        """Entries for the `dt_s` seconds ending at `now_ms`."""
        out = []
        for actor in self.actors:
            if not actor.active:
                continue
            expected = actor.rate * dt_s
            n = int(expected) + (self.rng.random() < expected - int(expected))
            for _ in range(n):
                ts = now_ms - int(self.rng.random() * dt_s * 1000)
                out.append(self.entry(actor, ts))
        out.sort(key=lambda e: e["started_at"])
        return out

    def entry(self, actor: Actor, ts_ms: int) -> dict[str, Any]:
        r = self.rng
        method, template, _ = r.choices(actor.mix, actor.weights)[0]
        path = template.replace("{id}", str(r.randint(1, 50_000)))
        query: dict[str, Any] = {}
        if template == "/v1/search":
            query = {"q": r.choice(SEARCH_TERMS), "page": str(r.randint(1, 5))}
        elif template == "/v1/products":
            query = {"limit": "20"}
        status = self._status(actor, template)
        # Behind a carrier NAT every request may be another phone: many app builds and OSes.
        agent = (
            f"MyShop/5.{r.randint(0, 9)} (iPhone; iOS 17.{r.randint(0, 6)})"
            if actor.kind == "nat"
            else actor.user_agent
        )
        headers = {
            "host": "api.shop.example",
            "user-agent": agent,
            "accept": "application/json",
            "x-forwarded-for": actor.ips[0],
        }
        if agent in BROWSER_UAS:
            headers |= {"accept-language": "en-US,en;q=0.9", "referer": "https://shop.example/"}
        if actor.api_key:
            headers["apikey"] = actor.api_key
        upstream = status != 429 and r.random() > 0.002
        upstream_latency = int(r.lognormvariate(3.2, 0.5)) if upstream else -1
        kong_latency = r.randint(0, 3)
        request_id = uuid.UUID(int=r.getrandbits(128)).hex
        entry: dict[str, Any] = {
            "request": {
                "id": request_id,
                "method": method,
                "uri": path + _qs(query),
                "url": f"https://api.shop.example{path}{_qs(query)}",
                "querystring": query,
                "headers": headers,
                "size": r.randint(180, 900),
            },
            "response": {
                "status": status,
                "size": r.randint(300, 12_000),
                "headers": {"content-type": "application/json", "x-kong-request-id": request_id},
            },
            "latencies": {
                "kong": kong_latency,
                "proxy": upstream_latency,
                "request": kong_latency + max(0, upstream_latency),
                "receive": 0,
            },
            "client_ip": r.choice(actor.ips),
            "started_at": ts_ms,
            "source": "upstream" if upstream else "kong",
            "upstream_status": str(status) if upstream else "",
            "service": {"id": "5f3c0e1a-2b4d-4c6e-8f90-a1b2c3d4e5f6", "name": "shop-api"},
            "route": {
                "id": "0d4a9c57-3f1e-4b2a-9c8d-7e6f5a4b3c2d",
                "name": "shop",
                "paths": ["/v1"],
            },
            "tries": [{"ip": "10.0.3.7", "port": 8080, "balancer_latency": 0}] if upstream else [],
            "workspace_name": "default",
        }
        if actor.consumer_id:
            entry["consumer"] = {"id": actor.consumer_id, "username": actor.username}
        return entry

    def _status(self, actor: Actor, template: str) -> int:
        r = self.rng.random()
        if template == LOGIN:
            if actor.kind == "stuffer":
                return 200 if r < 0.02 else 401
            return 401 if r < actor.login_typo_rate else 200
        if r < 0.02:
            return 404
        if r < 0.03:
            return 400
        if r < 0.033:
            return 500
        return 201 if template == "/v1/orders" and actor.kind == "consumer" and r > 0.9 else 200


def _qs(query: dict[str, Any]) -> str:
    return (
        ("?" + "&".join(f"{k}={v}" for k, v in query.items())).replace(" ", "%20") if query else ""
    )
