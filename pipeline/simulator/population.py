"""The benign population of a run: who calls the API, how often, from where, with what.

`build_population` makes, deterministically from the run seed:
- `consumers` partner consumers (commerce, catalogue, logistics, partner apps; a few staff with
  back-office access and a developer), each with 1-3 stable addresses, one client, its own mix and
  rate; some poll, some run batch jobs, some refresh OAuth tokens, some move to `/v2` after the
  deploy, one or two integrations are broken for a while;
- browser shoppers (sessions arriving in proportion to `consumers`), phone app users behind
  carrier NATs or on wifi, search engine crawlers, uptime monitors, and two clients of shadow
  endpoints (a Prometheus scraper and a legacy partner).
Consumers that attack scenarios will abuse (a flood, a shared key) are ordinary consumers chosen
from a candidate list that does not depend on how many the scenarios need.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.simulator.agents import sdk_headers
from pipeline.simulator.clients import AppArrivals, BrowserArrivals, crawlers
from pipeline.simulator.consumers import (
    KINDS,
    ApiConsumer,
    BatchJob,
    BrokenIntegration,
    ConsumerState,
    Developer,
    Makers,
    pick_mix,
)
from pipeline.simulator.kong import Consumer, new_uuid
from pipeline.simulator.network import CARRIERS, MONITORS
from pipeline.simulator.queries import token
from pipeline.simulator.world import Actor, World

__all__ = ["Population", "build_population"]

COMPANIES = (
    "acme",
    "northwind",
    "contoso",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "vandelay",
    "wonka",
    "stark",
    "wayne",
    "tyrell",
    "cyberdyne",
    "soylent",
    "oscorp",
    "gringotts",
    "monarch",
    "aperture",
    "massive",
    "blueriver",
    "fjord",
    "kestrel",
    "lumen",
    "pinnacle",
)
SUFFIXES = (
    "logistics",
    "erp",
    "retail",
    "pay",
    "shop",
    "sync",
    "analytics",
    "market",
    "crm",
    "fulfilment",
    "labs",
    "data",
    "apps",
    "trade",
    "connect",
    "commerce",
)
# Browser sessions and app sessions per second at the day's peak, per partner consumer.
BROWSER_SESSIONS_PER_CONSUMER = 0.0097
APP_SESSIONS_PER_CONSUMER = 0.0053
CARRIER_SHARES = {"t-mobile-us": 0.35, "verizon": 0.3, "att": 0.2, "vodafone-de": 0.15}


@dataclass
class Population:
    actors: list[Actor]
    states: list[ConsumerState]
    makers: Makers
    # Consumers set aside for scenarios, by scenario: (state, baseline rate, endpoint mix).
    reserved: dict[str, list[tuple[ConsumerState, float, list[str]]]] = field(default_factory=dict)
    apps: list[Consumer] = field(default_factory=list)


class Poller(Actor):
    """Something that GETs one path on a fixed period: a Prometheus scrape of an undocumented
    metrics endpoint, a legacy partner's export."""

    def __init__(
        self,
        world: World,
        name: str,
        ip: str,
        path: str,
        query: Any,
        headers: dict[str, Any],
        period_s: float,
    ) -> None:
        self.world, self.ip, self.path, self.query = world, ip, path, query
        self.headers, self.period_s = headers, period_s
        self.name = name
        self.rng = world.rng(name)

    def run(self) -> Iterator[dict[str, Any]]:
        w, rng, gw = self.world, self.rng, self.world.gateway
        period = int(self.period_s * 1000)
        t = w.start_ms + rng.randint(0, period - 1)
        while t < w.end_ms:
            yield gw.handle(rng, t, self.ip, "GET", self.path, self.query, self.headers)
            t += period + rng.randint(-20, 20)


def _key(rng: random.Random) -> str:
    return token(rng, 32)


def _username(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = f"{rng.choice(COMPANIES)}-{rng.choice(SUFFIXES)}"
        if rng.random() < 0.5 or name in taken:
            name += f"-{rng.randint(2, 99)}"
        if name not in taken:
            taken.add(name)
            return name


def _consumer(
    rng: random.Random,
    username: str,
    groups: frozenset[str] = frozenset(),
    limit: int | None = None,
) -> Consumer:
    return Consumer(
        id=new_uuid(rng),
        username=username,
        key=_key(rng),
        credential_id=new_uuid(rng),
        groups=groups,
        limit_per_min=limit or rng.choices((600, 1200, 6000), (4, 4, 2))[0],
        email=f"api@{username}.example",
    )


def build_population(world: World, *, consumers: int, reserve: dict[str, int]) -> Population:
    rng = world.rng("population")
    makers = Makers(world)
    gw = world.gateway
    actors: list[Actor] = []
    taken: set[str] = set()

    apps = [
        _consumer(rng, "myshop-ios", limit=10**7),
        _consumer(rng, "myshop-android", limit=10**7),
    ]
    for app in apps:
        gw.register(app)
        taken.add(app.username)
    world.app_keys = {"ios": apps[0].key, "android": apps[1].key}

    n_staff = max(2, consumers // 500)
    n_dev = max(1, consumers // 1000)
    states: list[ConsumerState] = []
    candidates: list[tuple[ConsumerState, float, list[str]]] = []
    oauth_states: list[ConsumerState] = []
    deploy = world.happenings.deploy_ms
    for i in range(consumers):
        if i < n_staff:
            kind = "staff"
        else:
            kind = rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
        consumer = _consumer(
            rng, _username(rng, taken), frozenset({"staff"}) if kind == "staff" else frozenset()
        )
        gw.register(consumer)
        n_ips = rng.choices((1, 2, 3), (50, 35, 15))[0]
        pool = world.ips.cloud if rng.random() < 0.75 else world.ips.corporate
        headers, tls = sdk_headers(rng)
        if n_staff <= i < n_staff + n_dev:
            headers = {
                "user-agent": rng.choice(("PostmanRuntime/7.35.0", "curl/8.4.0")),
                "accept": "*/*",
            }
        n_accounts = max(1, min(2000, int(rng.lognormvariate(2.5, 1.2))))
        st = ConsumerState(
            consumer=consumer,
            ips=[pool() for _ in range(n_ips)],
            headers=headers,
            tls=tls,
            accounts=[rng.randint(1_000_000, 1_450_000) for _ in range(n_accounts)],
            v2_at_ms=deploy + rng.randint(0, 600_000) if rng.random() < 0.3 else None,
            kind=kind,
        )
        states.append(st)
        if n_staff <= i < n_staff + n_dev:
            actors.append(Developer(world, makers, st))
            continue
        rate = min(6.0, rng.lognormvariate(-2.6, 1.15))
        mix = pick_mix(rng, kind)
        poll_s = None
        if kind != "staff" and rng.random() < 0.12:
            poll_s = rng.choice((5.0, 10.0, 15.0, 30.0, 60.0))
            name = rng.choice(mix[0])
            mix = ([name], [1.0])
            rate = 1 / poll_s
        oauth = rng.random() < 0.3
        actors.append(
            ApiConsumer(world, makers, st, rate=rate, mix=mix, poll_s=poll_s, oauth=oauth)
        )
        if oauth:
            oauth_states.append(st)
        batch = None
        if kind != "staff" and rng.random() < 0.08:
            batch = _batch(world, rng, st)
            actors.append(batch)
        if kind == "commerce" and poll_s is None and batch is None:
            candidates.append((st, rate, mix[0]))

    # Consumers the scenarios will abuse: steady commerce consumers, busy ones (0.3-2 req/s, so
    # that 10-50x is a flood) first, each group shuffled.
    rng_reserve = world.rng("reserve")
    busy = [c for c in candidates if 0.3 <= c[1] <= 2.0]
    others = [c for c in candidates if not 0.3 <= c[1] <= 2.0]
    rng_reserve.shuffle(busy)
    rng_reserve.shuffle(others)
    candidates = busy + others
    reserved: dict[str, list[tuple[ConsumerState, float, list[str]]]] = {}
    at = 0
    for scenario in sorted(reserve):
        n = reserve[scenario]
        if at + n > len(candidates):
            raise ValueError(
                f"{consumers} consumers are too few for the scenarios' {at + n} abused consumers"
            )
        reserved[scenario] = candidates[at : at + n]
        at += n

    actors += _others(world, rng, states, oauth_states, consumers, apps)
    return Population(actors=actors, states=states, makers=makers, reserved=reserved, apps=apps)


def _batch(world: World, rng: random.Random, st: ConsumerState) -> BatchJob:
    period = rng.choice((300.0, 600.0, 900.0, 1800.0))
    if st.kind == "catalog":
        job = rng.choice(("catalog_pages", "products"))
    elif st.kind == "logistics":
        job = "pages"
    else:
        job = rng.choice(("pages", "accounts", "inventory")) if len(st.accounts) > 20 else "pages"
    size = {
        "pages": rng.randint(5, 30),
        "catalog_pages": rng.randint(10, 40),
        "accounts": min(len(st.accounts), rng.randint(50, 500)),
        "products": rng.randint(100, 800),
        "inventory": rng.randint(50, 300),
    }[job]
    return BatchJob(
        world,
        st,
        job=job,
        period_s=period,
        size=size,
        pace_ms=(rng.randint(10, 60), rng.randint(100, 400)),
    )


def _others(
    world: World,
    rng: random.Random,
    states: list[ConsumerState],
    oauth_states: list[ConsumerState],
    consumers: int,
    apps: list[Consumer],
) -> list[Actor]:
    from pipeline.simulator.clients import Monitor

    minutes = (world.end_ms - world.start_ms) / 60_000
    out: list[Actor] = []
    out.append(
        BrowserArrivals(
            world, peak_per_s=BROWSER_SESSIONS_PER_CONSUMER * consumers, visitors=12 * consumers
        )
    )
    carriers = tuple((CARRIERS[name], share) for name, share in CARRIER_SHARES.items())
    out.append(
        AppArrivals(
            world,
            peak_per_s=APP_SESSIONS_PER_CONSUMER * consumers,
            users=5 * consumers,
            app_keys=world.app_keys,
            carriers=carriers,
        )
    )
    out += crawlers(world)
    out.append(Monitor(world, "uptimerobot", MONITORS["uptimerobot"], 60.0))
    out.append(Monitor(world, "pingdom", MONITORS["pingdom"], 60.0))
    out.append(Monitor(world, "kube-probe", MONITORS["kube-probe"], 10.0))
    # Benign users of shadow endpoints: they exist, and someone relies on them.
    out.append(
        Poller(
            world,
            "prometheus",
            "10.0.40.12",
            "/internal/metrics",
            None,
            {
                "user-agent": "Prometheus/2.47.2",
                "accept": "text/plain;version=0.0.4",
                "accept-encoding": "gzip",
            },
            15.0,
        )
    )
    legacy = rng.choice(states)
    out.append(
        Poller(
            world,
            f"legacy:{legacy.consumer.username}",
            legacy.ips[0],
            "/api/v0/orders",
            [("page", "1")],
            legacy.auth(),
            300.0,
        )
    )
    for _ in range(max(1, round(minutes / 30))):
        if not oauth_states:
            break
        st = rng.choice(oauth_states)
        start = world.start_ms + int((world.end_ms - world.start_ms) * rng.uniform(0.05, 0.8))
        out.append(
            BrokenIntegration(
                world,
                st,
                start_ms=start,
                duration_s=rng.uniform(180, 720),
                retry_s=rng.uniform(15, 60),
            )
        )
    return out
