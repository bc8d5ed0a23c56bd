"""The simulated API: Kong routes and services, the upstream endpoints behind them, and the shadow
endpoints that exist but are missing from the OpenAPI document.

The shop API (`api.shop.example`) has a public catalogue, web and partner authentication, a browser
storefront (session cookie, no Kong consumer), the partner commerce API (key-auth, rate limited,
`/v1` with a deprecated list operation and its `/v2` successor), a staff-only back office (key-auth
+ ACL) and operations routes. Kong matches routes by path prefix; an unmatched path gets Kong's own
404, a matched one reaches the upstream, which answers 404/405 for what it does not know.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

__all__ = ["CATALOGUE", "Catalogue", "Endpoint", "Param", "Route"]

HOST = "api.shop.example"
_NS = uuid.UUID("6f1c2d9e-4b7a-4e53-9c1d-2a8b3f4e5d60")
WORKSPACE_ID = str(uuid.uuid5(_NS, "workspace:default"))
CREATED_AT = 1_693_526_400  # 2023-09-01: when the routes were configured
_PARAM = re.compile(r"\{([A-Za-z]+)\}")
# What a path parameter looks like, by name: the OpenAPI schema and the matching regex.
PATH_KINDS = {
    "productId": ("integer", r"[0-9]+"),
    "accountId": ("integer", r"[0-9]+"),
    "itemId": ("integer", r"[0-9]+"),
    "userId": ("integer", r"[0-9]+"),
    "orderId": ("uuid", r"[0-9a-f-]{36}"),
    "customerId": ("uuid", r"[0-9a-f-]{36}"),
    "shipmentId": ("uuid", r"[0-9a-f-]{36}"),
    "slug": ("string", r"[a-z0-9-]+"),
}


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter as the OpenAPI document declares it."""

    name: str
    kind: str = (
        "string"  # string | integer | number | boolean | date | date-time | email | uri | enum
    )
    required: bool = False
    enum: tuple[str, ...] = ()
    array: bool = False
    description: str = ""


@dataclass(eq=False)
class Route:
    """A Kong route and the service behind it, with the plugins that matter to the log."""

    name: str
    service: str
    paths: tuple[str, ...]
    key_auth: bool = False
    acl_group: str | None = None
    rate_limited: bool = False
    latency_ms: float = 40.0  # the upstream's median
    upstream_ips: tuple[str, ...] = ()
    kong_route: dict = field(init=False, repr=False)
    kong_service: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        service_id = str(uuid.uuid5(_NS, "service:" + self.service))
        self.kong_service = {
            "id": service_id,
            "name": self.service,
            "host": f"{self.service}.shop.svc.cluster.local",
            "port": 8080,
            "protocol": "http",
            "path": "/",
            "retries": 5,
            "connect_timeout": 60000,
            "read_timeout": 60000,
            "write_timeout": 60000,
            "enabled": True,
            "ws_id": WORKSPACE_ID,
            "created_at": CREATED_AT,
            "updated_at": CREATED_AT,
        }
        self.kong_route = {
            "id": str(uuid.uuid5(_NS, "route:" + self.name)),
            "name": self.name,
            "paths": list(self.paths),
            "protocols": ["https"],
            "methods": None,
            "strip_path": False,
            "preserve_host": False,
            "regex_priority": 0,
            "path_handling": "v0",
            "https_redirect_status_code": 426,
            "request_buffering": True,
            "response_buffering": True,
            "service": {"id": service_id},
            "ws_id": WORKSPACE_ID,
            "created_at": CREATED_AT,
            "updated_at": CREATED_AT,
            "tags": [],
        }


@dataclass(eq=False)
class Endpoint:
    """One upstream operation: what it answers (success code, background errors), how big and
    how slow, and whether the OpenAPI document shows it."""

    method: str
    template: str
    route: Route
    summary: str
    params: tuple[Param, ...] = ()
    ok: int = 200
    # Background error statuses and their probabilities when nothing else decides the status.
    errors: tuple[tuple[int, float], ...] = ((500, 0.0008),)
    size: int = 1500  # median response body bytes
    latency_scale: float = 1.0
    documented: bool = True
    deprecated: bool = False
    responses: tuple[int, ...] = ()
    regex: re.Pattern[str] = field(init=False, repr=False)
    key: tuple[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pattern = _PARAM.sub(lambda m: "(" + PATH_KINDS[m.group(1)][1] + ")", self.template)
        self.regex = re.compile("^" + pattern + "$")
        self.key = (self.method, self.template)

    @property
    def has_body(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH")


def _routes() -> dict[str, Route]:
    def ips(n: int, third: int) -> tuple[str, ...]:
        return tuple(f"10.20.{third}.{10 + i}" for i in range(n))

    routes = [
        Route(
            "catalog-v1",
            "catalog",
            ("/v1/products", "/v1/categories", "/v1/search", "/v1/stores"),
            latency_ms=28,
            upstream_ips=ips(4, 1),
        ),
        Route(
            "identity-web",
            "identity",
            ("/login", "/logout", "/oauth/token", "/v1/auth/password-reset"),
            latency_ms=95,
            upstream_ips=ips(2, 2),
        ),
        Route(
            "identity-partner",
            "identity",
            ("/v1/auth/token",),
            key_auth=True,
            latency_ms=110,
            upstream_ips=ips(2, 2),
        ),
        Route(
            "storefront",
            "storefront",
            ("/v1/me", "/v1/cart", "/v1/checkout"),
            latency_ms=45,
            upstream_ips=ips(3, 3),
        ),
        Route(
            "commerce-v1",
            "commerce",
            (
                "/v1/orders",
                "/v1/accounts",
                "/v1/customers",
                "/v1/inventory",
                "/v1/shipments",
                "/v1/webhooks",
            ),
            key_auth=True,
            rate_limited=True,
            latency_ms=55,
            upstream_ips=ips(4, 4),
        ),
        Route(
            "commerce-v2",
            "commerce-v2",
            ("/v2",),
            key_auth=True,
            rate_limited=True,
            latency_ms=38,
            upstream_ips=ips(2, 5),
        ),
        Route(
            "backoffice",
            "backoffice",
            ("/v1/admin",),
            key_auth=True,
            acl_group="staff",
            latency_ms=180,
            upstream_ips=ips(1, 6),
        ),
        Route("ops-health", "ops", ("/health",), latency_ms=3, upstream_ips=ips(1, 7)),
        Route("ops-internal", "ops", ("/internal", "/debug"), latency_ms=6, upstream_ips=ips(1, 7)),
        Route("legacy-v0", "legacy-api", ("/api/v0",), latency_ms=140, upstream_ips=ips(1, 8)),
        Route(
            "web-static",
            "web",
            ("/robots.txt", "/favicon.ico", "/.well-known/security.txt"),
            latency_ms=4,
            upstream_ips=ips(2, 9),
        ),
    ]
    return {r.name: r for r in routes}


def _endpoints(r: dict[str, Route]) -> list[Endpoint]:
    page = Param("page", "integer", description="1-based page number")
    limit = Param("limit", "integer", description="Page size (max 100)")
    sort = Param("sort", "enum", enum=("relevance", "price", "-price", "rating", "newest"))
    date_from = Param("from", "date-time")
    date_to = Param("to", "date-time")
    fields = Param("fields", description="Comma-separated fields to return")
    cat, idw, idp = r["catalog-v1"], r["identity-web"], r["identity-partner"]
    shop, com, v2 = r["storefront"], r["commerce-v1"], r["commerce-v2"]
    admin, health, internal = r["backoffice"], r["ops-health"], r["ops-internal"]
    legacy, web = r["legacy-v0"], r["web-static"]
    missing = ((404, 0.012), (500, 0.0008))
    return [
        # Public catalogue.
        Endpoint(
            "GET",
            "/v1/products",
            cat,
            "List products",
            (
                Param("category"),
                Param("brand"),
                sort,
                page,
                limit,
                Param("min_price", "number"),
                Param("max_price", "number"),
                Param("in_stock", "boolean"),
                fields,
                Param("tag", array=True),
            ),
            errors=((400, 0.004), (500, 0.0008)),
            size=14_000,
        ),
        Endpoint(
            "GET",
            "/v1/products/{productId}",
            cat,
            "Get a product",
            (fields,),
            errors=missing,
            size=2_600,
        ),
        Endpoint(
            "GET",
            "/v1/products/{productId}/reviews",
            cat,
            "List a product's reviews",
            (page, sort),
            errors=missing,
            size=6_000,
        ),
        Endpoint("GET", "/v1/categories", cat, "List categories", size=3_200),
        Endpoint(
            "GET",
            "/v1/categories/{slug}/products",
            cat,
            "List a category's products",
            (page, limit, sort),
            errors=((404, 0.002),),
            size=12_000,
        ),
        Endpoint(
            "GET",
            "/v1/search",
            cat,
            "Search products",
            (
                Param("q", required=True),
                page,
                sort,
                Param("category"),
                Param("lang", "enum", enum=("en", "de", "fr", "es")),
            ),
            errors=((400, 0.003), (500, 0.001)),
            size=9_000,
            latency_scale=2.5,
        ),
        Endpoint(
            "GET",
            "/v1/stores",
            cat,
            "Find stores near a point",
            (
                Param("lat", "number", True),
                Param("lon", "number", True),
                Param("radius", "integer"),
            ),
            errors=((400, 0.01),),
            size=2_000,
        ),
        # Authentication.
        Endpoint(
            "POST",
            "/login",
            idw,
            "Web login (form post)",
            (Param("next", "uri"),),
            errors=(),
            size=400,
            responses=(200, 401),
        ),
        Endpoint("POST", "/logout", idw, "Web logout", ok=204, errors=(), size=0),
        Endpoint(
            "POST",
            "/oauth/token",
            idw,
            "OAuth 2.0 token endpoint (client credentials)",
            errors=(),
            size=700,
            responses=(200, 400, 401),
        ),
        Endpoint(
            "POST",
            "/v1/auth/password-reset",
            idw,
            "Request a password reset e-mail",
            (Param("email", "email", True),),
            ok=202,
            errors=(),
            size=60,
        ),
        Endpoint(
            "GET",
            "/v1/auth/password-reset/verify",
            idw,
            "Follow a password reset link",
            (Param("token", required=True),),
            errors=((410, 0.05),),
            size=300,
        ),
        Endpoint(
            "POST",
            "/v1/auth/token",
            idp,
            "Log a user in on behalf of a partner app",
            errors=(),
            size=900,
            responses=(200, 401),
        ),
        # Browser storefront (session cookie).
        Endpoint(
            "GET", "/v1/me", shop, "The signed-in user", errors=(), size=900, responses=(200, 401)
        ),
        Endpoint(
            "GET",
            "/v1/me/orders",
            shop,
            "The signed-in user's orders",
            (page,),
            errors=(),
            size=5_000,
        ),
        Endpoint("GET", "/v1/cart", shop, "The cart", errors=(), size=1_800),
        Endpoint(
            "POST",
            "/v1/cart/items",
            shop,
            "Add an item to the cart",
            ok=201,
            errors=((409, 0.02),),
            size=1_900,
        ),
        Endpoint(
            "DELETE",
            "/v1/cart/items/{itemId}",
            shop,
            "Remove an item from the cart",
            ok=204,
            errors=((404, 0.02),),
            size=0,
        ),
        Endpoint(
            "POST",
            "/v1/checkout",
            shop,
            "Check out the cart",
            ok=201,
            errors=((402, 0.04), (409, 0.01), (500, 0.002)),
            size=1_200,
            latency_scale=6.0,
        ),
        # Partner commerce API.
        Endpoint(
            "GET",
            "/v1/orders",
            com,
            "List orders (use /v2/orders)",
            (
                Param("status", "enum", enum=("open", "paid", "shipped", "cancelled")),
                date_from,
                date_to,
                page,
                limit,
            ),
            errors=((400, 0.003), (500, 0.0008)),
            size=18_000,
            deprecated=True,
        ),
        Endpoint(
            "POST",
            "/v1/orders",
            com,
            "Create an order",
            ok=201,
            errors=((400, 0.01), (409, 0.004), (422, 0.006), (500, 0.001)),
            size=1_500,
            latency_scale=2.0,
        ),
        Endpoint("GET", "/v1/orders/{orderId}", com, "Get an order", errors=missing, size=1_600),
        Endpoint(
            "PATCH",
            "/v1/orders/{orderId}",
            com,
            "Update an order",
            errors=((404, 0.01), (409, 0.01)),
            size=1_600,
        ),
        Endpoint(
            "DELETE",
            "/v1/orders/{orderId}",
            com,
            "Cancel an order",
            ok=204,
            errors=((404, 0.02), (409, 0.02)),
            size=0,
        ),
        Endpoint(
            "GET",
            "/v1/accounts/{accountId}",
            com,
            "Get an account",
            errors=((404, 0.003),),
            size=1_100,
            responses=(200, 403, 404),
        ),
        Endpoint(
            "GET",
            "/v1/accounts/{accountId}/invoices",
            com,
            "List an account's invoices",
            (date_from, date_to, page),
            errors=((404, 0.003),),
            size=7_000,
            responses=(200, 403, 404),
        ),
        Endpoint(
            "GET",
            "/v1/customers",
            com,
            "Find customers",
            (Param("email", "email"), Param("updated_since", "date-time"), page, limit),
            errors=((400, 0.004),),
            size=4_000,
        ),
        Endpoint(
            "GET", "/v1/customers/{customerId}", com, "Get a customer", errors=missing, size=1_300
        ),
        Endpoint(
            "GET",
            "/v1/inventory",
            com,
            "Stock levels",
            (Param("sku", array=True), Param("warehouse")),
            size=3_000,
        ),
        Endpoint(
            "PUT",
            "/v1/inventory/{itemId}",
            com,
            "Set a stock level",
            errors=((400, 0.01), (404, 0.005)),
            size=300,
        ),
        Endpoint(
            "GET",
            "/v1/shipments/{shipmentId}/tracking",
            com,
            "Track a shipment",
            errors=missing,
            size=1_400,
        ),
        Endpoint("GET", "/v1/webhooks", com, "List webhook subscriptions", size=800),
        Endpoint(
            "POST",
            "/v1/webhooks",
            com,
            "Subscribe a webhook",
            ok=201,
            errors=((400, 0.05),),
            size=400,
        ),
        Endpoint(
            "GET",
            "/v2/products",
            v2,
            "List products (v2)",
            (Param("cursor"), limit, Param("category"), sort),
            size=16_000,
        ),
        Endpoint(
            "GET", "/v2/products/{productId}", v2, "Get a product (v2)", errors=missing, size=2_900
        ),
        Endpoint(
            "GET",
            "/v2/orders",
            v2,
            "List orders (v2, cursor paging)",
            (
                Param("cursor"),
                limit,
                Param("status", "enum", enum=("open", "paid", "shipped", "cancelled")),
                Param("created_after", "date-time"),
            ),
            size=17_000,
        ),
        Endpoint(
            "POST",
            "/v2/orders",
            v2,
            "Create an order (v2)",
            ok=201,
            errors=((400, 0.008), (422, 0.006)),
            size=1_600,
            latency_scale=2.0,
        ),
        Endpoint(
            "GET", "/v2/orders/{orderId}", v2, "Get an order (v2)", errors=missing, size=1_700
        ),
        # Back office (staff only).
        Endpoint(
            "GET",
            "/v1/admin/reports",
            admin,
            "Sales reports",
            (date_from, date_to, Param("format", "enum", enum=("csv", "json"))),
            size=60_000,
            latency_scale=3.0,
        ),
        Endpoint(
            "GET", "/v1/admin/users", admin, "Search shop users", (page, Param("q")), size=8_000
        ),
        Endpoint("GET", "/health", health, "Liveness", errors=(), size=20),
        Endpoint("GET", "/robots.txt", web, "Robots exclusion file", errors=(), size=180),
        Endpoint("GET", "/favicon.ico", web, "Icon", errors=(), size=4_286),
        Endpoint("GET", "/.well-known/security.txt", web, "Security contact", errors=(), size=240),
        # Shadow endpoints: routed, answering, and absent from the OpenAPI document.
        Endpoint(
            "GET",
            "/internal/metrics",
            internal,
            "Prometheus metrics",
            errors=(),
            size=24_000,
            documented=False,
        ),
        Endpoint(
            "GET",
            "/internal/health/deep",
            internal,
            "Dependency health",
            errors=(),
            size=700,
            documented=False,
            latency_scale=8.0,
        ),
        Endpoint(
            "GET",
            "/internal/config",
            internal,
            "Effective configuration",
            errors=(),
            size=5_200,
            documented=False,
        ),
        Endpoint(
            "GET",
            "/debug/vars",
            internal,
            "Go expvar dump",
            errors=(),
            size=9_000,
            documented=False,
        ),
        Endpoint(
            "GET",
            "/api/v0/users",
            legacy,
            "Legacy user list",
            (page,),
            errors=(),
            size=30_000,
            documented=False,
        ),
        Endpoint(
            "GET",
            "/api/v0/users/{userId}",
            legacy,
            "Legacy user",
            errors=((404, 0.05),),
            size=1_000,
            documented=False,
        ),
        Endpoint(
            "GET",
            "/api/v0/orders",
            legacy,
            "Legacy order export",
            (page,),
            errors=(),
            size=40_000,
            documented=False,
        ),
        Endpoint(
            "GET",
            "/v1/admin/export",
            admin,
            "Bulk customer export",
            errors=(),
            size=250_000,
            documented=False,
            latency_scale=5.0,
        ),
    ]


class Catalogue:
    """Routes and endpoints, with the two lookups the gateway needs: the Kong route of any path
    (longest prefix) and the upstream endpoint of a method and path."""

    def __init__(self) -> None:
        self.routes = _routes()
        self.endpoints = _endpoints(self.routes)
        self.by_key = {e.key: e for e in self.endpoints}
        self._prefixes = sorted(
            ((p, r) for r in self.routes.values() for p in r.paths), key=lambda pr: -len(pr[0])
        )
        self._by_route: dict[str, list[Endpoint]] = {}
        for e in self.endpoints:
            self._by_route.setdefault(e.route.name, []).append(e)
        self._route_cache: dict[str, Route | None] = {}

    def endpoint(self, method: str, template: str) -> Endpoint:
        return self.by_key[(method, template)]

    @property
    def shadow(self) -> list[Endpoint]:
        return [e for e in self.endpoints if not e.documented]

    @property
    def auth_routes(self) -> list[str]:
        return ["/login", "/oauth/token", "/v1/auth/token"]

    def route_for(self, path: str) -> Route | None:
        """Kong's prefix match (`path_handling v0`): the longest route path `path` starts with."""
        cached = self._route_cache.get(path)
        if cached is not None or path in self._route_cache:
            return cached
        found = None
        for prefix, route in self._prefixes:
            if path.startswith(prefix):
                found = route
                break
        if len(self._route_cache) > 50_000:
            self._route_cache.clear()
        self._route_cache[path] = found
        return found

    def match(self, route: Route, method: str, path: str) -> tuple[Endpoint | None, bool]:
        """The endpoint serving `method path` on `route`, and whether the path exists at all
        (for a 405 rather than a 404 when only the method is wrong)."""
        path_known = False
        for e in self._by_route.get(route.name, ()):
            if e.regex.match(path):
                if e.method == method:
                    return e, True
                path_known = True
        return None, path_known


CATALOGUE = Catalogue()
