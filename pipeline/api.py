"""The decision API: `GET /v1/decisions/{subject}` for tools and ServiceCallout-style lookups,
and `POST /v1/feedback` for analysts (`pipeline/operator/api.py`).

Gateways do not call this on the request path (they sync from Redis into local memory); it is for
people, scripts and integrations that can afford a network round trip.
"""

from __future__ import annotations

import hmac
import re
from pathlib import Path

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from pipeline.decisions import RedisDecisions
from pipeline.operator.api import OperatorApi

__all__ = ["create_decision_app"]

log = structlog.get_logger(__name__)
OPENAPI = Path(__file__).with_name("openapi.yaml")
# Same rule as the OpenAPI document: a known kind, then up to 256 characters that are not control
# characters (consumer ids are app names: spaces and non-ASCII letters happen).
SUBJECT = re.compile(r"^(consumer|key|ip):[^\x00-\x1f\x7f]{1,256}$")


def create_decision_app(
    decisions: RedisDecisions, *, token: str, operator: OperatorApi | None = None
) -> web.Application:
    if not token:
        log.warning("decision_api.no_token", detail="every request will be refused with 401")
    expected = f"Bearer {token}".encode()

    async def get_decision(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").encode()
        if not token or not hmac.compare_digest(given, expected):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        subject = request.match_info["subject"]
        if not SUBJECT.match(subject):
            return web.json_response(
                {"error": "subject must look like consumer:<id>, key:<hash> or ip:<addr>"},
                status=400,
            )
        try:
            decision = await decisions.get(subject)
        except RedisError as exc:
            log.warning("decision_api.redis_unavailable", error=str(exc))
            return web.json_response({"error": "decision store unavailable"}, status=503)
        if decision is None:
            return web.json_response({"subject": subject, "action": "allow", "decision": None})
        return web.json_response(
            {"subject": subject, "action": decision.action, "decision": decision.model_dump()}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(body=OPENAPI.read_bytes(), content_type="application/yaml")

    app = web.Application()
    # Any character, "/" and newlines included, so that a range subject (ip:10.0.0.0/24) is one
    # parameter and anything malformed gets the documented 400 rather than a routing 404.
    app.router.add_get(r"/v1/decisions/{subject:[\s\S]*}", get_decision)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.yaml", openapi)
    if operator is not None:
        operator.install(app)
    return app
