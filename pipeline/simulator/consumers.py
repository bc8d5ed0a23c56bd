"""API consumers: partner systems calling the commerce API with an API key.

Each consumer has its own endpoint mix, rate, addresses and client, follows the business-hours
curve, and behaves in one of a few real ways: requests at random (Poisson), polling one endpoint
on a fixed period (machine-regular and perfectly legitimate), or a batch job that wakes on a
schedule and pages through a collection or walks its own objects as fast as the rate limit lets
it (sequential ids, high cardinality, the occasional 429 and backoff). Some move to `/v2` after
the run's deploy; some refresh OAuth tokens; one developer pokes at the API by hand.
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.simulator import queries as Q
from pipeline.simulator.catalogue import Endpoint
from pipeline.simulator.kong import Consumer, Query, new_uuid
from pipeline.simulator.world import BUSINESS, Actor, World

__all__ = ["MIXES", "ApiConsumer", "BatchJob", "BrokenIntegration", "ConsumerState", "Developer"]

# (endpoint, path, query, upstream status or None, request body bytes)
Req = tuple[Endpoint, str, Any, int | None, int]


@dataclass(eq=False)
class ConsumerState:
    """A consumer's identity and the objects it owns, shared by all its actors."""

    consumer: Consumer
    ips: list[str]
    headers: dict[str, Any]
    tls: dict[str, str]
    accounts: list[int]
    orders: list[str] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)
    shipments: list[str] = field(default_factory=list)
    v2_at_ms: int | None = None  # when this consumer moved to /v2 (None: never)
    kind: str = "commerce"

    def auth(self) -> dict[str, Any]:
        return {**self.headers, "apikey": self.consumer.key}


def _own(rng: random.Random, pool: list[str], make: Callable[[], str], cap: int = 400) -> str:
    if not pool or (len(pool) < cap and rng.random() < 0.05):
        pool.append(make())
    return rng.choice(pool)


def _ep(world: World, method: str, template: str) -> Endpoint:
    return world.catalogue.endpoint(method, template)


class Makers:
    """Request makers by name: each returns one request of a consumer, given its state."""

    def __init__(self, world: World) -> None:
        ep = lambda m, t: _ep(world, m, t)  # noqa: E731 - a local shorthand
        self.e = {
            "orders_list": ep("GET", "/v1/orders"),
            "orders_list2": ep("GET", "/v2/orders"),
            "order_get": ep("GET", "/v1/orders/{orderId}"),
            "order_get2": ep("GET", "/v2/orders/{orderId}"),
            "order_create": ep("POST", "/v1/orders"),
            "order_create2": ep("POST", "/v2/orders"),
            "order_patch": ep("PATCH", "/v1/orders/{orderId}"),
            "order_cancel": ep("DELETE", "/v1/orders/{orderId}"),
            "account_get": ep("GET", "/v1/accounts/{accountId}"),
            "invoices": ep("GET", "/v1/accounts/{accountId}/invoices"),
            "customers_find": ep("GET", "/v1/customers"),
            "customer_get": ep("GET", "/v1/customers/{customerId}"),
            "inventory": ep("GET", "/v1/inventory"),
            "inventory_put": ep("PUT", "/v1/inventory/{itemId}"),
            "tracking": ep("GET", "/v1/shipments/{shipmentId}/tracking"),
            "webhooks": ep("GET", "/v1/webhooks"),
            "products_list": ep("GET", "/v1/products"),
            "products_list2": ep("GET", "/v2/products"),
            "product_get": ep("GET", "/v1/products/{productId}"),
            "product_get2": ep("GET", "/v2/products/{productId}"),
            "search": ep("GET", "/v1/search"),
            "categories": ep("GET", "/v1/categories"),
            "stores": ep("GET", "/v1/stores"),
            "reports": ep("GET", "/v1/admin/reports"),
            "admin_users": ep("GET", "/v1/admin/users"),
            "partner_login": ep("POST", "/v1/auth/token"),
        }

        self._makers: dict[str, Callable[[random.Random, ConsumerState, bool], Req]] = {
            "orders_list": self._orders_list,
            "order_get": self._order_get,
            "order_patch": self._order_patch,
            "order_cancel": self._order_cancel,
            "order_create": self._order_create,
            "account_get": self._account_get,
            "invoices": self._invoices,
            "customers_find": self._customers_find,
            "customer_get": self._customer_get,
            "inventory": self._inventory,
            "inventory_put": self._inventory_put,
            "tracking": self._tracking,
            "webhooks": lambda rng, st, v2: (self.e["webhooks"], "/v1/webhooks", None, None, 0),
            "products_list": self._products_list,
            "product_get": self._product_get,
            "search": lambda rng, st, v2: (
                self.e["search"],
                "/v1/search",
                Q.search_query(rng),
                None,
                0,
            ),
            "categories": lambda rng, st, v2: (
                self.e["categories"],
                "/v1/categories",
                None,
                None,
                0,
            ),
            "stores": self._stores,
            "reports": self._reports,
            "admin_users": self._admin_users,
            "partner_login": self._partner_login,
        }

    def make(self, name: str, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        """One request of maker `name` for this consumer (`v2`: it has moved to /v2)."""
        return self._makers[name](rng, st, v2)

    def maker(self, name: str) -> Callable[[random.Random, ConsumerState, bool], Req]:
        """The maker itself, for a caller that makes many requests of it."""
        return self._makers[name]

    def _orders_list(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        if v2:
            q: list[tuple[str, str | None]] = [("limit", "50")]
            if rng.random() < 0.5:
                q.append(("created_after", Q.iso_date(rng, days_back=3)))
            if rng.random() < 0.3:
                q.append(("cursor", Q.cursor(rng)))
            return self.e["orders_list2"], "/v2/orders", q, None, 0
        q = []
        if rng.random() < 0.5:
            q.append(("status", rng.choice(("open", "paid", "shipped"))))
        if rng.random() < 0.5:
            q += [("from", Q.iso_date(rng, days_back=30)), ("to", "2023-11-14T23:59:59Z")]
        q += [("page", str(1 + int(rng.random() * 3))), ("limit", "100")]
        return self.e["orders_list"], "/v1/orders", q, None, 0

    def _order_id(self, rng: random.Random, st: ConsumerState) -> tuple[str, int | None]:
        if rng.random() < 0.01:
            return new_uuid(rng), 404  # a stale id from the partner's own database
        return _own(rng, st.orders, lambda: new_uuid(rng)), None

    def _order_get(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        oid, status = self._order_id(rng, st)
        if v2:
            return self.e["order_get2"], f"/v2/orders/{oid}", None, status, 0
        return self.e["order_get"], f"/v1/orders/{oid}", None, status, 0

    def _order_patch(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        oid, status = self._order_id(rng, st)
        return self.e["order_patch"], f"/v1/orders/{oid}", None, status, rng.randint(60, 400)

    def _order_cancel(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        oid, status = self._order_id(rng, st)
        return self.e["order_cancel"], f"/v1/orders/{oid}", None, status, 0

    def _order_create(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        st.orders.append(new_uuid(rng))
        if len(st.orders) > 400:
            del st.orders[0]
        body = rng.randint(400, 2400)
        if v2:
            return self.e["order_create2"], "/v2/orders", None, None, body
        return self.e["order_create"], "/v1/orders", None, None, body

    def _account(self, rng: random.Random, st: ConsumerState) -> tuple[int, int | None]:
        if rng.random() < 0.004:
            return rng.randint(1_000_000, 1_450_000), 403  # not one of its own
        return st.accounts[int(rng.random() * len(st.accounts))], None

    def _account_get(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        acct, status = self._account(rng, st)
        return self.e["account_get"], f"/v1/accounts/{acct}", None, status, 0

    def _invoices(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        acct, status = self._account(rng, st)
        q = [("from", Q.iso_date(rng, days_back=90, with_time=False)), ("to", "2023-11-14")]
        return self.e["invoices"], f"/v1/accounts/{acct}/invoices", q, status, 0

    def _customers_find(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        if rng.random() < 0.7:
            return self.e["customers_find"], "/v1/customers", [("email", Q.email(rng))], None, 0
        q = [("updated_since", Q.iso_date(rng, days_back=2)), ("page", "1"), ("limit", "100")]
        return self.e["customers_find"], "/v1/customers", q, None, 0

    def _customer_get(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        cid = _own(rng, st.customers, lambda: new_uuid(rng))
        return self.e["customer_get"], f"/v1/customers/{cid}", None, None, 0

    def _inventory(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        q = [("sku", f"SKU-{rng.randint(100, 99999):05d}") for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.5:
            q.append(("warehouse", rng.choice(("ams-1", "fra-2", "lon-1", "nyc-3"))))
        return self.e["inventory"], "/v1/inventory", q, None, 0

    def _inventory_put(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        item = rng.randint(1, 99999)
        return self.e["inventory_put"], f"/v1/inventory/{item}", None, None, rng.randint(40, 120)

    def _tracking(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        sid = _own(rng, st.shipments, lambda: new_uuid(rng), cap=800)
        return self.e["tracking"], f"/v1/shipments/{sid}/tracking", None, None, 0

    def _products_list(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        if v2:
            q = [("limit", "100"), ("category", rng.choice(Q.CATEGORIES))]
            return self.e["products_list2"], "/v2/products", q, None, 0
        return self.e["products_list"], "/v1/products", Q.products_query(rng), None, 0

    def _product_get(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        pid = Q.product_id(rng)
        if v2:
            return self.e["product_get2"], f"/v2/products/{pid}", None, None, 0
        return self.e["product_get"], f"/v1/products/{pid}", None, None, 0

    def _stores(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        lat, lon = rng.uniform(40.0, 55.0), rng.uniform(-10.0, 15.0)
        q = [("lat", f"{lat:.4f}"), ("lon", f"{lon:.4f}"), ("radius", str(rng.choice((5, 10, 25))))]
        return self.e["stores"], "/v1/stores", q, None, 0

    def _reports(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        q = [
            ("from", Q.iso_date(rng, days_back=30)),
            ("to", "2023-11-14T00:00:00Z"),
            ("format", rng.choice(("csv", "json"))),
        ]
        return self.e["reports"], "/v1/admin/reports", q, None, 0

    def _admin_users(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        q = [("q", rng.choice((Q.email(rng), rng.choice(Q.LAST)))), ("page", "1")]
        return self.e["admin_users"], "/v1/admin/users", q, None, 0

    def _partner_login(self, rng: random.Random, st: ConsumerState, v2: bool) -> Req:
        status = 401 if rng.random() < 0.07 else None
        return self.e["partner_login"], "/v1/auth/token", None, status, rng.randint(80, 160)


# Endpoint mixes by consumer kind: (maker, weight). A consumer uses a random subset.
MIXES: dict[str, tuple[tuple[str, float], ...]] = {
    "commerce": (
        ("orders_list", 12),
        ("order_get", 25),
        ("order_create", 6),
        ("order_patch", 3),
        ("order_cancel", 1),
        ("account_get", 10),
        ("invoices", 3),
        ("customers_find", 6),
        ("customer_get", 6),
        ("tracking", 8),
        ("inventory", 6),
        ("product_get", 8),
        ("products_list", 4),
        ("webhooks", 0.5),
        ("search", 2),
    ),
    "catalog": (
        ("products_list", 30),
        ("product_get", 50),
        ("search", 10),
        ("categories", 5),
        ("inventory", 5),
        ("stores", 2),
    ),
    "logistics": (("tracking", 60), ("order_get", 20), ("orders_list", 10), ("order_patch", 5)),
    "partner_app": (
        ("partner_login", 20),
        ("account_get", 30),
        ("invoices", 10),
        ("order_get", 20),
        ("orders_list", 5),
        ("customer_get", 10),
    ),
    "staff": (
        ("reports", 10),
        ("admin_users", 20),
        ("customers_find", 20),
        ("order_get", 20),
        ("account_get", 15),
    ),
}
MIX_SIZE = {
    "commerce": (4, 9),
    "catalog": (3, 5),
    "logistics": (2, 4),
    "partner_app": (4, 6),
    "staff": (3, 5),
}
# Which consumer kinds exist and how often.
KINDS = (("commerce", 62), ("catalog", 18), ("logistics", 12), ("partner_app", 8))


def pick_mix(rng: random.Random, kind: str) -> tuple[list[str], list[float]]:
    """A consumer's own mix: a random subset of its kind's endpoints, weights jittered."""
    items = list(MIXES[kind])
    lo, hi = MIX_SIZE[kind]
    chosen = rng.sample(items, min(len(items), rng.randint(lo, hi)))
    names = [n for n, _ in chosen]
    weights = [w * rng.uniform(0.3, 3.0) for _, w in chosen]
    total = 0.0
    cum = []
    for w in weights:
        total += w
        cum.append(total)
    return names, cum


class ApiConsumer(Actor):
    """A consumer's steady traffic: Poisson at `rate` (scaled by the business-hours curve), or
    one call every `poll_s` seconds (±1%), with OAuth token refreshes when it uses OAuth."""

    def __init__(
        self,
        world: World,
        makers: Makers,
        st: ConsumerState,
        *,
        rate: float,
        mix: tuple[list[str], list[float]],
        poll_s: float | None = None,
        oauth: bool = False,
        name: str = "",
    ) -> None:
        self.world, self.makers, self.st = world, makers, st
        self.rate, self.mix, self.poll_s, self.oauth = rate, mix, poll_s, oauth
        self.name = name or f"consumer:{st.consumer.username}"
        self.rng = world.rng(self.name)

    def run(self) -> Iterator[dict[str, Any]]:
        w, rng, st, gw = self.world, self.rng, self.st, self.world.gateway
        names, cum = self.mix
        end = w.end_ms
        if self.poll_s:
            t = w.start_ms + int(rng.uniform(0, self.poll_s * 1000))
        else:
            t = w.start_ms + int(
                rng.expovariate(self.rate * w.activity(BUSINESS, w.start_ms)) * 1000
            )
        token_at = t if self.oauth and rng.random() < 0.15 else t + rng.randint(0, 3_600_000)
        token_ep = w.catalogue.endpoint("POST", "/oauth/token")
        headers = st.auth()
        ips = st.ips
        total = cum[-1]
        random_ = rng.random
        makers = [self.makers.maker(n) for n in names]
        while t < end:
            ip = ips[0] if len(ips) == 1 else ips[int(random_() * len(ips))]
            if self.oauth and t >= token_at:
                yield gw.handle(
                    rng,
                    t,
                    ip,
                    "POST",
                    "/oauth/token",
                    None,
                    st.headers,
                    extra=_BASIC,
                    endpoint=token_ep,
                    body=rng.randint(60, 120),
                    tls=st.tls,
                )
                token_at = t + 3_600_000 - rng.randint(0, 120_000)
                t += rng.randint(40, 300)
            v2 = st.v2_at_ms is not None and t >= st.v2_at_ms
            make = makers[bisect(cum, random_() * total)]
            ep, path, query, status, body = make(rng, st, v2)
            yield gw.handle(
                rng,
                t,
                ip,
                ep.method,
                path,
                query,
                headers,
                endpoint=ep,
                status=status,
                body=body,
                tls=st.tls,
            )
            if self.poll_s:
                t += int(self.poll_s * 1000 * (0.99 + 0.02 * random_()))
            else:
                rate = self.rate * w.activity(BUSINESS, t)
                t += 1 + int(rng.expovariate(rate) * 1000)


_BASIC = {"authorization": "REDACTED", "content-type": "application/x-www-form-urlencoded"}


class BatchJob(Actor):
    """A scheduled job: every `period_s`, walks a collection as fast as the API answers, backing
    off until the next minute on a 429. Kinds: `pages` (`?page=1..N`), `accounts` (its own
    accounts in id order), `products` (product ids in a range), `inventory` (writes)."""

    def __init__(
        self,
        world: World,
        st: ConsumerState,
        *,
        job: str,
        period_s: float,
        size: int,
        pace_ms: tuple[int, int] = (60, 400),
    ) -> None:
        self.world, self.st, self.job = world, st, job
        self.period_s, self.size, self.pace_ms = period_s, size, pace_ms
        self.name = f"batch:{st.consumer.username}:{job}"
        self.rng = world.rng(self.name)

    def _requests(self, rng: random.Random) -> Iterator[tuple[Endpoint, str, Any, int]]:
        cat = self.world.catalogue
        st = self.st
        if self.job == "pages":
            e = cat.endpoint("GET", "/v1/orders")
            since = Q.iso_date(rng, days_back=1)
            for page in range(1, self.size + 1):
                yield e, "/v1/orders", [("from", since), ("page", str(page)), ("limit", "100")], 0
        elif self.job == "catalog_pages":
            e = cat.endpoint("GET", "/v1/products")
            for page in range(1, self.size + 1):
                yield (
                    e,
                    "/v1/products",
                    [("page", str(page)), ("limit", "100"), ("sort", "newest")],
                    0,
                )
        elif self.job == "accounts":
            e = cat.endpoint("GET", "/v1/accounts/{accountId}")
            for acct in sorted(st.accounts)[: self.size]:
                yield e, f"/v1/accounts/{acct}", None, 0
        elif self.job == "products":
            e = cat.endpoint("GET", "/v1/products/{productId}")
            first = rng.randint(1, 50_000)
            for pid in range(first, first + self.size):
                yield e, f"/v1/products/{pid}", None, 0
        elif self.job == "inventory":
            e = cat.endpoint("PUT", "/v1/inventory/{itemId}")
            for _ in range(self.size):
                yield e, f"/v1/inventory/{rng.randint(1, 99999)}", None, rng.randint(40, 120)
        else:
            raise ValueError(f"unknown batch job {self.job!r}")

    def run(self) -> Iterator[dict[str, Any]]:
        w, rng, st, gw = self.world, self.rng, self.st, self.world.gateway
        period = int(self.period_s * 1000)
        # Cron jobs run at a fixed phase of their period (e.g. every 15 min at :07).
        phase = rng.randint(0, period - 1)
        t = w.start_ms - (w.start_ms % period) + phase
        if t < w.start_ms:
            t += period
        headers = st.auth()
        ip = st.ips[0]
        lo, hi = self.pace_ms
        while t < w.end_ms:
            run_t = t
            for ep, path, query, body in self._requests(rng):
                if run_t >= w.end_ms:
                    return
                entry = gw.handle(
                    rng,
                    run_t,
                    ip,
                    ep.method,
                    path,
                    query,
                    headers,
                    endpoint=ep,
                    body=body,
                    tls=st.tls,
                )
                yield entry
                if entry["response"]["status"] == 429:
                    run_t += int(entry["response"]["headers"]["retry-after"]) * 1000 + rng.randint(
                        0, 500
                    )
                else:
                    run_t += entry["latencies"]["request"] + rng.randint(lo, hi)
            t += period
            while t <= run_t:
                t += period


class BrokenIntegration(Actor):
    """A misconfigured client retrying `/oauth/token` with a rotated secret: a 401 every
    `retry_s` seconds for a while, then fixed. Benign, and a classic false positive."""

    def __init__(
        self, world: World, st: ConsumerState, *, start_ms: int, duration_s: float, retry_s: float
    ) -> None:
        self.world, self.st = world, st
        self.start_ms, self.duration_s, self.retry_s = start_ms, duration_s, retry_s
        self.name = f"broken-oauth:{st.consumer.username}:{start_ms}"
        self.rng = world.rng(self.name)

    def run(self) -> Iterator[dict[str, Any]]:
        w, rng, st, gw = self.world, self.rng, self.st, self.world.gateway
        ep = w.catalogue.endpoint("POST", "/oauth/token")
        t = self.start_ms
        fixed_at = t + int(self.duration_s * 1000)
        while t < w.end_ms:
            status = 401 if t < fixed_at else 200
            yield gw.handle(
                rng,
                t,
                st.ips[0],
                "POST",
                "/oauth/token",
                None,
                st.headers,
                extra=_BASIC,
                endpoint=ep,
                status=status,
                body=96,
                tls=st.tls,
            )
            if status == 200:
                return
            t += int(self.retry_s * 1000 * rng.uniform(0.97, 1.03))


class Developer(Actor):
    """A developer exploring the API by hand (Postman or curl): bursts of calls minutes apart,
    typos in paths (Kong 404s), bad parameters (400), a look at the staff-only back office
    (403)."""

    def __init__(self, world: World, makers: Makers, st: ConsumerState) -> None:
        self.world, self.makers, self.st = world, makers, st
        self.name = f"developer:{st.consumer.username}"
        self.rng = world.rng(self.name)

    def run(self) -> Iterator[dict[str, Any]]:
        w, rng, st, gw = self.world, self.rng, self.st, self.world.gateway
        headers = st.auth()
        t = w.start_ms + rng.randint(0, 600_000)
        mistakes: tuple[tuple[str, str, Query], ...] = (
            ("GET", "/v1/order/123", None),
            ("GET", "/v1/orders/latest", None),
            ("GET", "/v1/admin/reports", [("from", "2023-11-01")]),
            ("GET", "/v1/products", [("limit", "1000")]),
            ("GET", "/v1/customer", [("email", Q.email(rng))]),
            ("POST", "/v1/orders", None),
        )
        while t < w.end_ms:
            for _ in range(rng.randint(3, 10)):
                if t >= w.end_ms:
                    return
                if rng.random() < 0.25:
                    method, path, query = rng.choice(mistakes)
                    status = 400 if path in ("/v1/products", "/v1/orders") else None
                    yield gw.handle(
                        rng, t, st.ips[0], method, path, query, headers, status=status, tls=st.tls
                    )
                else:
                    name = rng.choice(
                        ("order_get", "orders_list", "product_get", "account_get", "customers_find")
                    )
                    ep, path, query, status, body = self.makers.make(name, rng, st, False)
                    yield gw.handle(
                        rng,
                        t,
                        st.ips[0],
                        ep.method,
                        path,
                        query,
                        headers,
                        endpoint=ep,
                        status=status,
                        body=body,
                        tls=st.tls,
                    )
                t += rng.randint(2_000, 25_000)
            t += rng.randint(300_000, 1_500_000)
