"""A webhook receiver for tests: verifies gatewatch's HMAC signature the way sinks/webhook.py
documents it, and answers like Slack's incoming webhooks (or Teams' Workflows webhooks).

Slack's documented answers: 200 `ok`; 400 `invalid_payload` (not JSON, or neither `text` nor
`blocks`), 400 `invalid_blocks` (over Block Kit's limits: 50 blocks, header 150 characters,
section text 3,000, 10 fields of 2,000, 10 context elements), 403 `action_prohibited`, 404
`channel_not_found`, 410 `channel_is_archived`, 429 `rate_limited` with Retry-After, 500
`rollup_error`. Teams answers 202 to a `message` carrying an Adaptive Card, 400 otherwise.

The signature check (what a real receiver of a templated webhook does): recompute
HMAC-SHA256(secret, X-Gatewatch-Timestamp + "." + body), compare in constant time, refuse a
timestamp more than `max_skew_s` from the receiver's clock; 401 otherwise.

A test can script the next answers (`script`), have messages containing a marker refused as
`invalid_payload` (`poison`), and move the receiver's clock (`clock`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["WebhookServer"]

SLACK_BLOCK_LIMITS = {"header": 150, "section": 3000, "field": 2000, "blocks": 50}


@dataclass
class WebhookServer:
    flavor: str = "slack"  # slack | teams | json (a templated body: any JSON object)
    secret: str = ""  # verify signatures when set
    max_skew_s: float = 300.0
    clock: Callable[[], float] = time.time
    script: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    poison: str | None = None
    messages: list[Any] = field(default_factory=list)  # accepted bodies, parsed
    requests: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, status)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    expect: int = 1  # `arrived` is set once this many messages were accepted

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, text, headers = self._answer(request, body)
        self.requests.append((time.monotonic(), status))
        if status < 300:
            self.messages.append(json.loads(body))
            if len(self.messages) >= self.expect:
                self.arrived.set()
        return web.Response(status=status, text=text, headers=headers)

    def _answer(self, request: web.Request, body: bytes) -> tuple[int, str, dict[str, str]]:
        if self.secret:
            refused = self.verify(request.headers, body)
            if refused:
                return 401, refused, {}
        if self.script:
            return self.script.pop(0)
        if self.poison is not None and self.poison.encode() in body:
            return 400, "invalid_payload", {}
        try:
            message = json.loads(body)
        except ValueError:
            return 400, "invalid_payload", {}
        if self.flavor == "slack":
            problem = slack_problem(message)
            return (400, problem, {}) if problem else (200, "ok", {})
        if self.flavor == "teams":
            return (202, "", {}) if teams_ok(message) else (400, "bad card", {})
        return (200, "ok", {}) if isinstance(message, dict) else (400, "not an object", {})

    def verify(self, headers: Any, body: bytes) -> str | None:
        stamp = headers.get("X-Gatewatch-Timestamp")
        signature = headers.get("X-Gatewatch-Signature")
        if not stamp or not signature or not stamp.isdigit():
            return "unsigned"
        if abs(self.clock() - int(stamp)) > self.max_skew_s:
            return "stale timestamp"
        mac = hmac.new(self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
        if not hmac.compare_digest(signature, "v1=" + mac.hexdigest()):
            return "bad signature"
        return None


def slack_problem(message: Any) -> str | None:
    if not isinstance(message, dict) or not (message.get("text") or message.get("blocks")):
        return "invalid_payload"
    blocks = message.get("blocks", [])
    if len(blocks) > SLACK_BLOCK_LIMITS["blocks"]:
        return "invalid_blocks"
    for block in blocks:
        kind = block.get("type")
        if kind == "header" and len(block["text"]["text"]) > SLACK_BLOCK_LIMITS["header"]:
            return "invalid_blocks"
        if kind == "section":
            fields = block.get("fields", [])
            if len(block["text"]["text"]) > SLACK_BLOCK_LIMITS["section"] or len(fields) > 10:
                return "invalid_blocks"
            if any(len(f["text"]) > SLACK_BLOCK_LIMITS["field"] for f in fields):
                return "invalid_blocks"
        if kind == "context" and len(block["elements"]) > 10:
            return "invalid_blocks"
    return None


def teams_ok(message: Any) -> bool:
    try:
        [attachment] = message["attachments"]
        card = attachment["content"]
        return bool(
            message["type"] == "message"
            and attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
            and card["type"] == "AdaptiveCard"
            and card["body"]
        )
    except (KeyError, TypeError, ValueError):
        return False
