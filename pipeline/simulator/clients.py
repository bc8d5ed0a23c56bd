"""People and friendly machines: shoppers in browsers, the phone app behind carrier NATs, search
engine crawlers and uptime monitors.

Browser shoppers come in sessions of page views with human think time; each page makes one to
three API calls a few hundred milliseconds apart (a single-page app), with the page as referer.
Some sign in, and mistype their password once or twice first; a few give up and ask for a reset.
Phone users share a handful of carrier NAT addresses, so one address carries many users, their
logins and their failures. Googlebot and Bingbot crawl product pages from their published
ranges; monitors poll `/health` on the dot.
"""

from __future__ import annotations

import random
from collections.abc import Generator, Iterator
from typing import Any

from pipeline.simulator import queries as Q
from pipeline.simulator.agents import (
    BINGBOT_UA,
    GOOGLEBOT_UAS,
    MONITOR_UAS,
    browser_headers,
    crawler_headers,
    mobile_headers,
)
from pipeline.simulator.catalogue import Endpoint
from pipeline.simulator.world import SHOPPERS, Actor, Spawn, World

__all__ = ["AppArrivals", "BrowserArrivals", "Crawler", "Monitor", "Shop", "crawlers"]


def _think_ms(rng: random.Random, median_s: float = 7.0) -> int:
    return int(min(120.0, max(1.2, median_s * rng.lognormvariate(0.0, 0.9))) * 1000)


def _session_cookie(rng: random.Random) -> str:
    ga = f"GA1.1.{rng.randint(10**8, 10**9)}.{1699900000 + rng.randint(0, 99999)}"
    return f"sid={rng.getrandbits(128):032x}; _ga={ga}"


Call = tuple[Endpoint, str, Any, "int | None", int]


class Shop:
    """The shop front's pages and the API calls each one makes (shared by browsers and the
    app)."""

    def __init__(self, world: World) -> None:
        self.world = world
        ep = world.catalogue.endpoint
        self.products = ep("GET", "/v1/products")
        self.product = ep("GET", "/v1/products/{productId}")
        self.reviews = ep("GET", "/v1/products/{productId}/reviews")
        self.categories = ep("GET", "/v1/categories")
        self.category = ep("GET", "/v1/categories/{slug}/products")
        self.search = ep("GET", "/v1/search")
        self.me = ep("GET", "/v1/me")
        self.my_orders = ep("GET", "/v1/me/orders")
        self.cart = ep("GET", "/v1/cart")
        self.cart_add = ep("POST", "/v1/cart/items")
        self.checkout = ep("POST", "/v1/checkout")
        self.reset = ep("POST", "/v1/auth/password-reset")
        self.login = ep("POST", "/login")
        self.app_login = ep("POST", "/v1/auth/token")

    def product_id(self, rng: random.Random, t: int) -> int:
        w = self.world
        if w.in_spike(t) and rng.random() < 0.55:
            return w.happenings.spike_product
        return Q.product_id(rng)

    def page(self, rng: random.Random, t: int) -> tuple[str, list[Call]]:
        """A page view: its URL (the referer of its API calls) and the calls it makes."""
        r = rng.random()
        if r < 0.42:
            pid = self.product_id(rng, t)
            calls: list[Call] = [(self.product, f"/v1/products/{pid}", None, None, 0)]
            if rng.random() < 0.5:
                calls.append(
                    (
                        self.reviews,
                        f"/v1/products/{pid}/reviews",
                        [("page", "1")] if rng.random() < 0.5 else None,
                        None,
                        0,
                    )
                )
            return f"/p/{pid}", calls
        if r < 0.62:
            slug = rng.choice(Q.CATEGORIES)
            page = 1 if rng.random() < 0.65 else rng.randint(2, 8)
            query: list[tuple[str, str | None]] = [("page", str(page))]
            if rng.random() < 0.4:
                query.append(("sort", rng.choice(Q.SORTS)))
            return f"/c/{slug}", [
                (self.category, f"/v1/categories/{slug}/products", query, None, 0)
            ]
        if r < 0.8:
            search = Q.search_query(rng, page=1 if rng.random() < 0.8 else 2)
            return "/search", [(self.search, "/v1/search", search, None, 0)]
        if r < 0.9:
            return "/", [
                (self.categories, "/v1/categories", None, None, 0),
                (self.products, "/v1/products", Q.products_query(rng), None, 0),
            ]
        # The cart page re-fetches with a bare flag (`?refresh`, which Kong logs as `true`).
        refresh: list[tuple[str, str | None]] | None = (
            [("refresh", None)] if rng.random() < 0.3 else None
        )
        return "/cart", [(self.cart, "/v1/cart", refresh, None, 0)]


class Visitor:
    """A returning web visitor: one address and browser, remembered between sessions."""

    __slots__ = ("cache_buster", "email", "headers", "ip", "logged_in", "tls")

    def __init__(self, world: World, rng: random.Random, v6_share: float) -> None:
        self.ip = world.ips.residential(v6_share)
        self.headers, self.tls = browser_headers(rng)
        self.logged_in = rng.random() < 0.35
        self.email = Q.email(rng)
        # A few old embedded widgets add a jQuery cache-buster to every GET.
        self.cache_buster = rng.random() < 0.03


class BrowserArrivals(Actor):
    """Shopping sessions arriving at `peak_per_s` (times the shoppers' day curve, more during
    the popular-content spike), each by a visitor from a pool of `visitors`."""

    def __init__(self, world: World, *, peak_per_s: float, visitors: int, v6_share: float = 0.08):
        self.world, self.peak_per_s, self.v6_share = world, peak_per_s, v6_share
        self.name = "browsers"
        self.rng = world.rng(self.name)
        self.shop = Shop(world)
        self.pool: list[Visitor | None] = [None] * visitors

    def visitor(self, i: int) -> Visitor:
        v = self.pool[i]
        if v is None:
            # Drawn from the arrivals' own stream: who comes first is itself deterministic.
            v = self.pool[i] = Visitor(self.world, self.rng, self.v6_share)
        return v

    def run(self) -> Iterator[dict[str, Any] | Spawn]:
        w, rng = self.world, self.rng
        t = w.start_ms
        n = 0
        while True:
            rate = self.peak_per_s * w.activity(SHOPPERS, t) * (2.5 if w.in_spike(t) else 1.0)
            t += 1 + int(rng.expovariate(rate) * 1000)
            if t >= w.end_ms:
                return
            visitor = self.visitor(rng.randrange(len(self.pool)))
            yield Spawn(t, BrowserSession(self.shop, visitor, t, f"browser-session:{n}"))
            n += 1


class BrowserSession(Actor):
    """One visit: the SPA's `/v1/me` check (a 401 for anonymous visitors, routinely), page views
    with think time, sometimes a sign-in with typos, a cart, a checkout."""

    def __init__(self, shop: Shop, visitor: Visitor, start_ms: int, name: str) -> None:
        self.shop, self.v, self.start_ms, self.name = shop, visitor, start_ms, name
        self.rng = shop.world.rng(name)

    def _call(
        self,
        t: int,
        ep: Endpoint,
        path: str,
        query: Any,
        status: int | None,
        body: int,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        v = self.v
        if v.cache_buster and ep.method == "GET":
            query = [*(query or []), ("_", str(t - self.rng.randint(0, 90_000)))]
        return self.shop.world.gateway.handle(
            self.rng,
            t,
            v.ip,
            ep.method,
            path,
            query,
            v.headers,
            extra=extra,
            endpoint=ep,
            status=status,
            body=body,
            tls=v.tls,
        )

    def run(self) -> Iterator[dict[str, Any]]:
        shop, v, rng = self.shop, self.v, self.rng
        end = shop.world.end_ms
        t = self.start_ms
        extra = {"cookie": _session_cookie(rng), "referer": "https://shop.example/"}
        yield self._call(t, shop.me, "/v1/me", None, None if v.logged_in else 401, 0, extra)
        t += rng.randint(30, 300)
        pages = 1 + int(rng.expovariate(1 / 6))
        wants_login = not v.logged_in and rng.random() < 0.18
        for n in range(pages):
            if t >= end:
                return
            if wants_login and n == pages // 2:
                t = yield from self._login(t, extra)
                if not v.logged_in:
                    return
                continue
            page, calls = shop.page(rng, t)
            extra = {**extra, "referer": f"https://shop.example{page}"}
            for ep, path, query, status, body in calls:
                yield self._call(t, ep, path, query, status, body, extra)
                t += 15 + int(rng.random() * 336)
            if rng.random() < 0.06:
                yield self._call(
                    t, shop.cart_add, "/v1/cart/items", None, None, rng.randint(40, 90), extra
                )
                t += rng.randint(100, 600)
            if v.logged_in and rng.random() < 0.02:
                yield self._call(
                    t,
                    shop.checkout,
                    "/v1/checkout",
                    None,
                    None,
                    rng.randint(300, 900),
                    {**extra, "referer": "https://shop.example/checkout"},
                )
            elif v.logged_in and rng.random() < 0.04:
                yield self._call(t, shop.my_orders, "/v1/me/orders", None, None, 0, extra)
            t += _think_ms(rng)

    def _login(self, t: int, extra: dict[str, Any]) -> Generator[dict[str, Any], None, int]:
        """Sign in: a first typo now and then, rarely a second; after three failures, a
        password reset instead."""
        shop, v, rng = self.shop, self.v, self.rng
        page = {
            **extra,
            "referer": "https://shop.example/login",
            "content-type": "application/x-www-form-urlencoded",
        }
        query = [("next", "https://shop.example/account")] if rng.random() < 0.4 else None
        for attempt, p_fail in enumerate((0.14, 0.35, 0.45)):
            failed = rng.random() < p_fail
            yield self._call(
                t, shop.login, "/login", query, 401 if failed else 200, rng.randint(50, 110), page
            )
            t += rng.randint(4_000, 16_000) if failed else rng.randint(200, 900)
            if not failed:
                v.logged_in = True
                yield self._call(t, shop.me, "/v1/me", None, None, 0, extra)
                return t + rng.randint(200, 800)
            if attempt == 2:
                yield self._call(
                    t, shop.reset, "/v1/auth/password-reset", [("email", v.email)], None, 0, page
                )
        return t


class AppUser:
    """A phone app user: platform, network (a carrier's NAT addresses, or home wifi) and
    whether their refresh token still works."""

    __slots__ = ("carrier_ips", "headers", "ip", "tls", "token_ok")

    def __init__(
        self,
        world: World,
        rng: random.Random,
        app_keys: dict[str, str],
        carriers: tuple[tuple[tuple[str, ...], float], ...],
        wifi_share: float,
    ) -> None:
        platform = "ios" if rng.random() < 0.55 else "android"
        base, self.tls = mobile_headers(rng, platform)
        self.headers = {**base, "apikey": app_keys[platform]}
        if rng.random() < wifi_share:
            self.carrier_ips: tuple[str, ...] = ()
            self.ip = world.ips.residential(0.25)
        else:
            self.carrier_ips = rng.choices([c for c, _ in carriers], [w for _, w in carriers])[0]
            self.ip = ""
        self.token_ok = rng.random() < 0.85


class AppArrivals(Actor):
    """App sessions arriving at `peak_per_s` (three times as many during the spike: the push
    notification), each by a user from a pool of `users`."""

    def __init__(
        self,
        world: World,
        *,
        peak_per_s: float,
        users: int,
        app_keys: dict[str, str],
        carriers: tuple[tuple[tuple[str, ...], float], ...],
        wifi_share: float = 0.35,
    ):
        self.world, self.peak_per_s = world, peak_per_s
        self.app_keys, self.carriers, self.wifi_share = app_keys, carriers, wifi_share
        self.name = "app"
        self.rng = world.rng(self.name)
        self.shop = Shop(world)
        self.pool: list[AppUser | None] = [None] * users

    def user(self, i: int) -> AppUser:
        u = self.pool[i]
        if u is None:
            u = self.pool[i] = AppUser(
                self.world,
                self.rng,
                self.app_keys,
                self.carriers,
                self.wifi_share,
            )
        return u

    def run(self) -> Iterator[dict[str, Any] | Spawn]:
        w, rng = self.world, self.rng
        t = w.start_ms
        n = 0
        while True:
            rate = self.peak_per_s * w.activity(SHOPPERS, t) * (3.0 if w.in_spike(t) else 1.0)
            t += 1 + int(rng.expovariate(rate) * 1000)
            if t >= w.end_ms:
                return
            user = self.user(rng.randrange(len(self.pool)))
            yield Spawn(t, AppSession(self.shop, user, t, f"app-session:{n}"))
            n += 1


class AppSession(Actor):
    """One app session: `/v1/me` with the bearer token, a sign-in when the token has expired
    (people on phones mistype more), then browsing."""

    def __init__(self, shop: Shop, user: AppUser, start_ms: int, name: str) -> None:
        self.shop, self.u, self.start_ms, self.name = shop, user, start_ms, name
        self.rng = shop.world.rng(name)

    def run(self) -> Iterator[dict[str, Any]]:
        shop, u, rng = self.shop, self.u, self.rng
        w, gw = shop.world, shop.world.gateway
        t = self.start_ms
        ip = rng.choice(u.carrier_ips) if u.carrier_ips else u.ip
        bearer = {"authorization": "REDACTED"}
        yield gw.handle(
            rng,
            t,
            ip,
            "GET",
            "/v1/me",
            None,
            u.headers,
            extra=bearer,
            endpoint=shop.me,
            status=None if u.token_ok else 401,
            tls=u.tls,
        )
        t += rng.randint(80, 400)
        if not u.token_ok or rng.random() < 0.05:
            for p_fail in (0.2, 0.35, 0.5):
                failed = rng.random() < p_fail
                yield gw.handle(
                    rng,
                    t,
                    ip,
                    "POST",
                    "/v1/auth/token",
                    None,
                    u.headers,
                    endpoint=shop.app_login,
                    status=401 if failed else 200,
                    body=rng.randint(70, 140),
                    tls=u.tls,
                )
                t += rng.randint(5_000, 20_000) if failed else rng.randint(150, 600)
                if not failed:
                    u.token_ok = True
                    break
            if not u.token_ok:
                return
        for _ in range(1 + int(rng.expovariate(1 / 7))):
            if t >= w.end_ms:
                return
            _, calls = shop.page(rng, t)
            for ep, path, query, status, body in calls:
                yield gw.handle(
                    rng,
                    t,
                    ip,
                    ep.method,
                    path,
                    query,
                    u.headers,
                    extra=bearer,
                    endpoint=ep,
                    status=status,
                    body=body,
                    tls=u.tls,
                )
                t += 20 + int(rng.random() * 231)
            if rng.random() < 0.05:
                yield gw.handle(
                    rng,
                    t,
                    ip,
                    "POST",
                    "/v1/cart/items",
                    None,
                    u.headers,
                    extra=bearer,
                    endpoint=shop.cart_add,
                    body=rng.randint(40, 90),
                    tls=u.tls,
                )
            t += _think_ms(rng, 4.0)
        if rng.random() < 0.1:
            u.token_ok = False  # the refresh token expires before the next session


class Crawler(Actor):
    """A search engine crawler from its published range: product and category pages at a polite
    pace, `robots.txt` now and then, stale links included."""

    def __init__(self, world: World, ip: str, ua: str, *, rate: float, name: str) -> None:
        self.world, self.ip, self.rate = world, ip, rate
        self.name = name
        self.rng = world.rng(name)
        self.headers, self.tls = crawler_headers(ua)

    def run(self) -> Iterator[dict[str, Any]]:
        w, rng, gw = self.world, self.rng, self.world.gateway
        cat = w.catalogue
        e_product = cat.endpoint("GET", "/v1/products/{productId}")
        e_category = cat.endpoint("GET", "/v1/categories/{slug}/products")
        e_robots = cat.endpoint("GET", "/robots.txt")
        t = w.start_ms + int(rng.expovariate(self.rate) * 1000)
        robots_at = t
        while t < w.end_ms:
            if t >= robots_at:
                yield gw.handle(
                    rng,
                    t,
                    self.ip,
                    "GET",
                    "/robots.txt",
                    None,
                    self.headers,
                    endpoint=e_robots,
                    tls=self.tls,
                )
                robots_at = t + rng.randint(600_000, 1_800_000)
            elif rng.random() < 0.78:
                pid = Q.product_id(rng, 70_000)  # old sitemaps still list deleted products
                yield gw.handle(
                    rng,
                    t,
                    self.ip,
                    "GET",
                    f"/v1/products/{pid}",
                    None,
                    self.headers,
                    endpoint=e_product,
                    status=404 if pid > Q.MAX_PRODUCT else None,
                    tls=self.tls,
                )
            else:
                slug = rng.choice(Q.CATEGORIES)
                yield gw.handle(
                    rng,
                    t,
                    self.ip,
                    "GET",
                    f"/v1/categories/{slug}/products",
                    [("page", str(rng.randint(1, 30)))],
                    self.headers,
                    endpoint=e_category,
                    tls=self.tls,
                )
            t += 1 + int(rng.expovariate(self.rate) * 1000)


def crawlers(world: World) -> list[Crawler]:
    from pipeline.simulator.network import BINGBOT, GOOGLEBOT

    rng = world.rng("crawlers")
    out = []
    for i, ip in enumerate(rng.sample(GOOGLEBOT, 3)):
        out.append(
            Crawler(
                world, ip, GOOGLEBOT_UAS[i % 2], rate=rng.uniform(0.15, 0.6), name=f"googlebot:{ip}"
            )
        )
    ip = rng.choice(BINGBOT)
    out.append(Crawler(world, ip, BINGBOT_UA, rate=rng.uniform(0.1, 0.3), name=f"bingbot:{ip}"))
    return out


class Monitor(Actor):
    """An uptime check: `GET /health` every `period_s` seconds, to the millisecond, rotating
    through the service's probe addresses."""

    def __init__(self, world: World, service: str, ips: tuple[str, ...], period_s: float) -> None:
        self.world, self.ips, self.period_s = world, ips, period_s
        self.name = f"monitor:{service}"
        self.rng = world.rng(self.name)
        self.headers = {"user-agent": MONITOR_UAS[service], "accept": "*/*"}
        if service == "kube-probe":
            self.headers["connection"] = "close"

    def run(self) -> Iterator[dict[str, Any]]:
        w, rng, gw = self.world, self.rng, self.world.gateway
        ep = w.catalogue.endpoint("GET", "/health")
        period = int(self.period_s * 1000)
        t = w.start_ms + rng.randint(0, period - 1)
        n = 0
        while t < w.end_ms:
            ip = self.ips[n % len(self.ips)]
            yield gw.handle(rng, t, ip, "GET", "/health", None, self.headers, endpoint=ep)
            n += 1
            t += period + rng.randint(-15, 15)
