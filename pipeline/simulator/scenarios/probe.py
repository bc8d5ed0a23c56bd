"""Probing: object-id enumeration (BOLA), injection payloads, sensitive files and undocumented
endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.simulator.payloads import SCANNER_AGENTS, crs_payloads, probe_paths
from pipeline.simulator.queries import CATEGORIES
from pipeline.simulator.scenarios.base import (
    CURRENT_CHROME,
    OLD_BROWSERS,
    SCRIPT_AGENTS,
    Attack,
    attacker_consumer,
    poisson,
)

__all__ = ["BolaEnumeration", "InjectionProbing", "SensitiveFileProbing", "ShadowDiscovery"]


class BolaEnumeration(Attack):
    """A partner account walking other customers' accounts: ids one after another (or drawn at
    random over a wide range), mostly 403 (not yours) and 404 (no such account), and the odd
    200 where the ownership check is missing."""

    def plan(self) -> None:
        rng, ep = self.rng, self.episode
        self.consumer = attacker_consumer(self.world, rng, ep)
        net = self.world.attacker_ips.attacker_subnet()
        self.ips = self.world.attacker_ips.attacker_subnet_hosts(net, rng.choice((1, 1, 2, 3)))
        self.rate = rng.uniform(2.0, 15.0)
        self.sequential = rng.random() < 0.6
        self.leak = rng.uniform(0.01, 0.05)
        self.own = [rng.randint(1_000_000, 1_450_000) for _ in range(rng.randint(2, 5))]
        ua = rng.choice(SCRIPT_AGENTS)
        self.headers = {
            "user-agent": ua,
            "accept": "application/json",
            "accept-encoding": "gzip",
            "apikey": self.consumer.key,
        }
        self.invoices = rng.random() < 0.3
        path = "/v1/accounts/{id}" + ("/invoices" if self.invoices else "")
        ep.params = {
            "ips": self.ips,
            "rate_per_s": round(self.rate, 2),
            "path": path,
            "sequential": self.sequential,
            "leak_rate": round(self.leak, 3),
            "user_agent": ua,
        }
        ep.description = (
            f"consumer {self.consumer.username} walking {path} "
            + ("sequentially" if self.sequential else "at random")
            + f", {self.rate:.1f} req/s, mostly 403/404"
        )

    def run(self) -> Iterator[dict[str, Any]]:
        rng, cat = self.rng, self.world.catalogue
        template = "/v1/accounts/{accountId}" + ("/invoices" if self.invoices else "")
        endpoint = cat.endpoint("GET", template)
        next_id = self.own[0] - rng.randint(0, 50)
        for n, t in enumerate(poisson(rng, self.start_ms, self.end_ms, self.rate)):
            if n < 3:
                acct = self.own[n % len(self.own)]  # first, its own accounts: the baseline
            elif self.sequential:
                next_id += 1 if rng.random() < 0.9 else rng.randint(2, 5)
                acct = next_id
            else:
                acct = rng.randint(100_000, 9_999_999)
            if acct in self.own:
                status = 200
            elif 1_000_000 <= acct <= 1_450_000 and rng.random() < 0.85:
                status = 200 if rng.random() < self.leak else 403
            else:
                status = 404
            suffix = "/invoices" if self.invoices else ""
            yield self.handle(
                t,
                self.ips[n % len(self.ips)],
                "GET",
                f"/v1/accounts/{acct}{suffix}",
                None,
                self.headers,
                endpoint=endpoint,
                status=status,
            )


# Where probes put their payloads: (method, path, parameter, the other arguments sent along).
Target = tuple[str, str, list[tuple[str, str]]]
INJECTION_TARGETS: tuple[Target, ...] = (
    ("/v1/search", "q", [("page", "1")]),
    ("/v1/products", "sort", [("page", "1"), ("limit", "24")]),
    ("/v1/products", "category", [("page", "1")]),
    ("/v1/stores", "lat", [("lon", "-0.1278"), ("radius", "10")]),
    ("/v1/products/{pid}/reviews", "page", []),
    # (Not secret-named parameters: redaction fingerprints `token=` and the like before any
    # detector sees them, so a payload there would be unobservable.)
    ("/v1/categories/{slug}/products", "sort", [("page", "2")]),
)
AUTH_TARGETS: tuple[Target, ...] = (
    ("/v1/customers", "email", []),
    ("/v1/orders", "status", [("page", "1")]),
    ("/v1/inventory", "sku", []),
)
_STATUS_BY_FAMILY = {
    "sqli": ((500, 0.12), (400, 0.2)),
    "xss": ((400, 0.15),),
    "lfi": ((400, 0.3), (404, 0.1)),
    "rce": ((400, 0.2),),
    "java": ((400, 0.2), (500, 0.05)),
}


class InjectionProbing(Attack):
    """Injection payloads from the CRS regression tests in query arguments: sqlmap's cadence on
    one parameter (SQLi, bursts, slow time-based probes), or a scanner's sweep of many
    parameters and families; some through a partner key on authenticated endpoints."""

    def plan(self) -> None:
        rng, ep = self.rng, self.episode
        self.ip = self.world.attacker_ips.attacker()
        self.sqlmap = rng.random() < 0.5
        self.authenticated = rng.random() < 0.25
        payloads = crs_payloads()
        self.families: tuple[str, ...]
        if self.sqlmap:
            self.families = ("sqli",) * 8 + ("generic",)
            self.rate = rng.uniform(3.0, 12.0)
            ua = rng.choice(("sqlmap/1.7.11#stable (https://sqlmap.org)", *OLD_BROWSERS))
        else:
            self.families = tuple(f for f in payloads if f != "session_fixation")
            self.rate = rng.uniform(8.0, 25.0)
            ua = rng.choice((*SCANNER_AGENTS[:3], CURRENT_CHROME, "python-requests/2.31.0"))
        self.payloads = payloads
        self.headers: dict[str, Any] = {
            "user-agent": ua,
            "accept": "*/*",
            "accept-encoding": "gzip,deflate",
        }
        if self.sqlmap:
            self.headers["cache-control"] = "no-cache"
        targets = list(INJECTION_TARGETS)
        if self.authenticated:
            consumer = attacker_consumer(self.world, rng, ep)
            self.headers["apikey"] = consumer.key
            targets += AUTH_TARGETS
        self.targets = [rng.choice(targets)] if self.sqlmap else targets
        ep.params = {
            "ip": self.ip,
            "tool": "sqlmap" if self.sqlmap else "scanner",
            "rate_per_s": round(self.rate, 2),
            "user_agent": ua,
            "targets": [f"{p}?{n}=" for p, n, _ in self.targets],
            "authenticated": self.authenticated,
        }
        what = (
            f"sqlmap cadence on {self.targets[0][0]}?{self.targets[0][1]}="
            if self.sqlmap
            else f"scanner sweep of {len(self.targets)} parameters"
        )
        ep.description = f"{what} from {self.ip}, {self.rate:.0f} req/s, CRS payloads"

    def run(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        t = self.start_ms
        while t < self.end_ms:
            # Bursts of payloads, then a pause (sqlmap switching technique, a scanner its
            # module); a time-based blind SQLi probe holds the connection for seconds.
            for _ in range(rng.randint(10, 60)):
                if t >= self.end_ms:
                    return
                entry = self._probe(t)
                yield entry
                t += 1 + int(rng.expovariate(self.rate) * 1000)
                if self.sqlmap and rng.random() < 0.04:
                    t += rng.randint(5_000, 10_000)
            t += rng.randint(1_000, 8_000)

    def _probe(self, t: int) -> dict[str, Any]:
        rng = self.rng
        path, param, others = rng.choice(self.targets)
        if "{pid}" in path:
            path = path.replace("{pid}", str(rng.randint(1, 50_000)))
        elif "{slug}" in path:
            path = path.replace("{slug}", rng.choice(CATEGORIES))
        family = rng.choice(self.families)
        payload = rng.choice(self.payloads[family])
        pieces = [f"{n}={v}" for n, v in others]
        if payload.value:
            pieces.insert(0, f"{param}={payload.value}")
        else:
            pieces.insert(0, payload.name)  # the payload is the argument's name
        status = None
        r = rng.random()
        for code, p in _STATUS_BY_FAMILY.get(family, ()):
            if r < p:
                status = code
                break
            r -= p
        return self.handle(t, self.ip, "GET", path, "&".join(pieces), self.headers, status=status)


class SensitiveFileProbing(Attack):
    """A sweep for secrets and admin panels: `/.env`, `/.git/config`, `/wp-admin/`, backups and
    the other entries of CRS restricted-files, at 2-20/s; nearly all 404 (Kong has no route),
    some reaching the upstream under real prefixes."""

    def plan(self) -> None:
        rng, ep = self.rng, self.episode
        self.ip = self.world.attacker_ips.attacker()
        self.rate = rng.uniform(2.0, 20.0)
        ua = rng.choice(
            (
                CURRENT_CHROME,
                "Go-http-client/1.1",
                "python-requests/2.28.1",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Firefox/115.0",
                *SCANNER_AGENTS[:2],
            )
        )
        self.headers = {"user-agent": ua, "accept": "*/*", "accept-encoding": "gzip"}
        paths = list(probe_paths())
        common, crs = paths[:40], paths[40:]
        rng.shuffle(crs)
        self.paths = common + crs
        ep.params = {"ip": self.ip, "rate_per_s": round(self.rate, 2), "user_agent": ua}
        ep.description = (
            f"secret-file sweep from {self.ip}, {self.rate:.0f} req/s (/.env, /.git/config, ...)"
        )

    def run(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        prefixes = ("", "", "", "/api", "/v1", "/internal", "/debug", "/api/v0")
        for n, t in enumerate(poisson(rng, self.start_ms, self.end_ms, self.rate)):
            path = self.paths[n % len(self.paths)]
            if n >= len(self.paths) or rng.random() < 0.15:
                path = rng.choice(prefixes) + path
            yield self.handle(t, self.ip, "GET", path, None, self.headers)


SHADOW_PREFIXES = (
    "/internal",
    "/api/v0",
    "/admin",
    "/debug",
    "/api/internal",
    "/v1/admin",
    "/private",
    "/management",
    "/actuator",
    "/api/v1",
    "/v3",
    "/api",
    "/v1/internal",
)
SHADOW_WORDS = (
    "users",
    "user",
    "accounts",
    "orders",
    "config",
    "metrics",
    "health",
    "status",
    "export",
    "import",
    "admin",
    "vars",
    "pprof/",
    "env",
    "settings",
    "keys",
    "tokens",
    "logs",
    "backup",
    "graphql",
    "swagger.json",
    "openapi.json",
    "docs",
    "test",
    "dev",
    "beta",
    "customers",
    "reports",
    "jobs",
    "queue",
    "cache",
    "flags",
    "sessions",
    "health/deep",
    "users/1",
    "debug",
    "console",
    "info",
    "version",
    "billing",
)


class ShadowDiscovery(Attack):
    """Fuzzing for undocumented endpoints (kiterunner or ffuf with an API wordlist): prefix x
    word, mostly 404, a 200 whenever it hits a real shadow endpoint (`/internal/metrics`,
    `/api/v0/users`, `/debug/vars`, ...), 401 on keyed routes."""

    def plan(self) -> None:
        rng, ep = self.rng, self.episode
        self.ip = self.world.attacker_ips.attacker()
        self.rate = rng.uniform(5.0, 40.0)
        ua = rng.choice(
            (
                "Chrome. Kiterunner",
                "Fuzz Faster U Fool v2.1.0-dev",
                CURRENT_CHROME,
                "python-requests/2.31.0",
            )
        )
        self.headers: dict[str, Any] = {"user-agent": ua, "accept": "*/*"}
        words = [f"{p}/{w}" for p in SHADOW_PREFIXES for w in SHADOW_WORDS]
        rng.shuffle(words)
        shadow = [e.template.replace("{userId}", "1") for e in self.world.catalogue.shadow]
        for path in shadow:  # the wordlist knows them: that is how shadow endpoints are found
            words.insert(rng.randrange(len(words) // 4), path)
        self.words = words
        self.authenticated = rng.random() < 0.3
        if self.authenticated:
            self.headers["apikey"] = attacker_consumer(self.world, rng, ep).key
        ep.params = {
            "ip": self.ip,
            "rate_per_s": round(self.rate, 2),
            "user_agent": ua,
            "authenticated": self.authenticated,
            "shadow_endpoints": sorted(set(shadow)),
        }
        ep.description = (
            f"undocumented-path fuzzing from {self.ip}, {self.rate:.0f} req/s, "
            f"{len(words)}-entry API wordlist"
        )

    def run(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        for n, t in enumerate(poisson(rng, self.start_ms, self.end_ms, self.rate)):
            path = self.words[n % len(self.words)]
            method = "GET" if rng.random() < 0.9 else rng.choice(("POST", "PUT", "DELETE"))
            yield self.handle(t, self.ip, method, path, None, self.headers)
