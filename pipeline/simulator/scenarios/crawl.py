"""Automated crawling: a catalogue scraper, a bot announcing itself with a bad user agent, and a
stealth bot with a browser user agent but a machine's habits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.simulator import queries as Q
from pipeline.simulator.payloads import BAD_BOT_AGENTS, SCANNER_AGENTS
from pipeline.simulator.scenarios.base import CURRENT_CHROME, Attack, poisson, regular

__all__ = ["BadUaBot", "Scraping", "StealthBot"]

SCRAPER_AGENTS = (
    "python-requests/2.31.0",
    "Scrapy/2.11.0 (+https://scrapy.org)",
    "Go-http-client/1.1",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
)


class Scraping(Attack):
    """A competitor copying the catalogue: listing pages, then every product (sequential ids
    or the ids the listings gave), reviews, at 5-30 requests/s from one address or a few in one
    /24; a browser-like or a scripting user agent."""

    def plan(self) -> None:
        rng, ep = self.rng, self.episode
        self.rate = rng.uniform(5.0, 30.0)
        net = self.world.attacker_ips.attacker_subnet()
        n_ips = 1 if rng.random() < 0.6 else rng.randint(3, 8)
        self.ips = self.world.attacker_ips.attacker_subnet_hosts(net, n_ips)
        if rng.random() < 0.5:
            ua = CURRENT_CHROME
            self.headers: dict[str, Any] = {
                "user-agent": ua,
                "accept": "application/json",
                "accept-language": "en-US,en;q=0.9",
                "accept-encoding": "gzip, deflate, br",
            }
        else:
            ua = rng.choice(SCRAPER_AGENTS)
            self.headers = {"user-agent": ua, "accept": "*/*", "accept-encoding": "gzip, deflate"}
        self.sequential = rng.random() < 0.5
        ep.params = {
            "ips": self.ips,
            "rate_per_s": round(self.rate, 2),
            "user_agent": ua,
            "sequential_ids": self.sequential,
        }
        where = self.ips[0] if n_ips == 1 else f"{n_ips} IPs in {net}.0/24"
        ep.description = f"catalogue walk from {where}, {self.rate:.0f} req/s, " + (
            "sequential product ids" if self.sequential else "ids from listings"
        )

    def run(self) -> Iterator[dict[str, Any]]:
        rng, cat = self.rng, self.world.catalogue
        e_list = cat.endpoint("GET", "/v1/products")
        e_item = cat.endpoint("GET", "/v1/products/{productId}")
        e_reviews = cat.endpoint("GET", "/v1/products/{productId}/reviews")
        next_id = rng.randint(1, 20_000)
        page = 1
        for n, t in enumerate(poisson(rng, self.start_ms, self.end_ms, self.rate)):
            ip = self.ips[n % len(self.ips)]
            r = rng.random()
            if r < 0.06:
                query = [("page", str(page)), ("limit", "100"), ("sort", "newest")]
                page += 1
                yield self.handle(
                    t, ip, "GET", "/v1/products", query, self.headers, endpoint=e_list
                )
                continue
            if self.sequential:
                pid = next_id
                next_id += 1
            else:
                pid = rng.randint(1, 62_000)
            if r < 0.2:
                yield self.handle(
                    t,
                    ip,
                    "GET",
                    f"/v1/products/{pid}/reviews",
                    [("page", str(rng.randint(1, 3)))],
                    self.headers,
                    endpoint=e_reviews,
                )
            else:
                yield self.handle(
                    t,
                    ip,
                    "GET",
                    f"/v1/products/{pid}",
                    None,
                    self.headers,
                    endpoint=e_item,
                    status=404 if pid > Q.MAX_PRODUCT else None,
                )


class BadUaBot(Attack):
    """A scanner or an aggressive bot that says what it is: a CRS scanner user agent (or a
    self-declared SEO/AI crawler ignoring robots.txt), fingerprinting then crawling at 1-8/s."""

    FIRST = (
        "/",
        "/robots.txt",
        "/favicon.ico",
        "/sitemap.xml",
        "/api",
        "/v1",
        "/swagger.json",
        "/.well-known/security.txt",
        "/v1/products",
        "/v1/categories",
    )

    def plan(self) -> None:
        rng, ep = self.rng, self.episode
        self.ip = self.world.attacker_ips.attacker()
        self.rate = rng.uniform(1.0, 8.0)
        self.scanner = rng.random() < 0.65
        ua = rng.choice(SCANNER_AGENTS if self.scanner else BAD_BOT_AGENTS)
        self.headers = {"user-agent": ua, "accept": "*/*"}
        if not self.scanner:
            self.headers["accept-encoding"] = "gzip, deflate"
        ep.params = {
            "ip": self.ip,
            "user_agent": ua,
            "rate_per_s": round(self.rate, 2),
            "kind": "scanner" if self.scanner else "bad_bot",
        }
        ep.description = f"user agent {ua[:60]!r} from {self.ip}, {self.rate:.1f} req/s"

    def run(self) -> Iterator[dict[str, Any]]:
        rng, cat = self.rng, self.world.catalogue
        e_item = cat.endpoint("GET", "/v1/products/{productId}")
        e_category = cat.endpoint("GET", "/v1/categories/{slug}/products")
        for n, t in enumerate(poisson(rng, self.start_ms, self.end_ms, self.rate)):
            if n < len(self.FIRST):
                yield self.handle(t, self.ip, "GET", self.FIRST[n], None, self.headers)
            elif rng.random() < 0.75:
                pid = Q.product_id(rng)
                yield self.handle(
                    t, self.ip, "GET", f"/v1/products/{pid}", None, self.headers, endpoint=e_item
                )
            else:
                slug = rng.choice(Q.CATEGORIES)
                yield self.handle(
                    t,
                    self.ip,
                    "GET",
                    f"/v1/categories/{slug}/products",
                    [("page", str(rng.randint(1, 40)))],
                    self.headers,
                    endpoint=e_category,
                )


class StealthBot(Attack):
    """A crawler passing as Chrome: a current browser user agent on an HTTP library, one request
    every 0.5-3 s to within 2%, walking product and category pages. Most send the library's own
    headers besides (no accept-language, referer, origin, fetch metadata); some copy a
    browser's accept-language, accept and referer into the script, as scraping guides advise,
    but not the fetch metadata and client hints a browser adds by itself."""

    def plan(self) -> None:
        rng, ep = self.rng, self.episode
        self.ip = self.world.attacker_ips.attacker()
        self.period = rng.uniform(0.5, 3.0)
        self.headers = {
            "user-agent": CURRENT_CHROME,
            "accept": rng.choice(("*/*", "application/json")),
            "accept-encoding": "gzip, deflate",
            "connection": "keep-alive",
        }
        copied = rng.random() < 0.35
        if copied:
            self.headers.update(
                {
                    "accept": "application/json, text/plain, */*",
                    "accept-language": "en-US,en;q=0.9",
                    "accept-encoding": "gzip, deflate, br",
                    "referer": "https://shop.example/",
                }
            )
        ep.params = {
            "ip": self.ip,
            "period_s": round(self.period, 3),
            "jitter": 0.02,
            "user_agent": CURRENT_CHROME,
            "copied_browser_headers": copied,
        }
        headers = "copied browser headers, no fetch metadata" if copied else "no browser headers"
        ep.description = (
            f"browser UA with {headers} from {self.ip}, one request every "
            f"{self.period:.2f} s ± 2%, crawling products"
        )

    def run(self) -> Iterator[dict[str, Any]]:
        rng, cat = self.rng, self.world.catalogue
        e_item = cat.endpoint("GET", "/v1/products/{productId}")
        e_category = cat.endpoint("GET", "/v1/categories/{slug}/products")
        for t in regular(rng, self.start_ms, self.end_ms, self.period, 0.02):
            if rng.random() < 0.8:
                pid = rng.randint(1, Q.MAX_PRODUCT)
                yield self.handle(
                    t, self.ip, "GET", f"/v1/products/{pid}", None, self.headers, endpoint=e_item
                )
            else:
                slug = rng.choice(Q.CATEGORIES)
                yield self.handle(
                    t,
                    self.ip,
                    "GET",
                    f"/v1/categories/{slug}/products",
                    [("page", str(rng.randint(1, 25)))],
                    self.headers,
                    endpoint=e_category,
                )
