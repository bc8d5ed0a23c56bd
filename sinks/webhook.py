"""Alerts to a chat or automation webhook (`gatewatch sink webhook`): Slack, Teams or a template.

Each request is one message: up to GATEWATCH_SINK_WEBHOOK_PER_MESSAGE alerts for Slack and Teams,
one alert for a template (sinks/webhook_formats.py has the bodies). Messages of a batch go one
after the other (Slack allows about one message a second per webhook; parallel posts only earn
429s).

Signature, so the receiver knows the body came from gatewatch and is fresh (the same scheme as the
collector's own `X-Gatewatch-Signature`, pipeline/ingest/guards.py):

    X-Gatewatch-Timestamp: <unix seconds when sent>
    X-Gatewatch-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body bytes)>

A receiver recomputes the HMAC over the timestamp header, a `.` and the body exactly as received,
compares in constant time, and refuses a timestamp more than 5 minutes from its clock (a replayed
request keeps its old timestamp, and changing it breaks the signature). Slack and Teams ignore the
headers; their URL is the credential (keep it secret: it is a SecretStr setting).

Answers: 2xx delivered. 429, 408 and 5xx (but 501): this message and every later one of the batch
are retried, after at least the answer's Retry-After (Slack's 429 carries one). Any other 4xx
(Slack's 400 `invalid_payload`, 403 `action_prohibited`, 404 `channel_not_found`, 410
`channel_is_archived`): refused for good, dead-lettered with the status and Slack's error text;
when a message of several alerts is refused, each is sent alone so only the one at fault goes.
No answer (connection refused, timeout): retried.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import structlog

from pipeline.alerts import Alert
from pipeline.config import Settings
from pipeline.ingest.guards import SIGNATURE_HEADER, TIMESTAMP_HEADER, SenderAuth
from sinks import http
from sinks.base import Delivery, SinkConfigError
from sinks.registry import require
from sinks.webhook_formats import Render, slack_message, teams_message, template_renderer

__all__ = ["WebhookSink", "build"]

log = structlog.get_logger(__name__)
LOOPBACK = ("127.0.0.1", "::1", "localhost")
SAMPLE = Alert.model_validate(
    {"id": "gw-sample", "kind": "decision", "event_time": 0, "emit_time": 0,
     "subject": "ip:192.0.2.1", "scope": "ip", "action": "block", "mode": "shadow",
     "enforced": False, "title": 'a "sample" \\ alert', "severity": "high", "score": 0.9,
     "detector": "sample"}
)  # fmt: skip


class WebhookSink:
    name = "webhook"

    def __init__(
        self,
        *,
        url: str,
        render: Render,
        per_message: int,
        secret: str = "",
        ca_file: str | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.render = render
        self.per_message = per_message
        self.secret = secret.encode()
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        self.clock = clock
        self.host = urlsplit(url).hostname or "?"  # for logs: the URL itself is a secret
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        headers = {"User-Agent": f"gatewatch/{version('gatewatch')}"}
        self._session = http.client_session(
            ca_file=self.ca_file, timeout_s=self.timeout_s, headers=headers
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, alerts: list[Alert]) -> Delivery:
        delivery = Delivery()
        step = self.per_message
        queue = deque(alerts[i : i + step] for i in range(0, len(alerts), step))
        while queue:
            chunk = queue.popleft()
            try:
                verdict, reason, after = await self._post(self.render(chunk))
            except ValueError as exc:  # a template whose output is not JSON for this alert
                verdict, reason, after = "reject", f"webhook template: {exc}", None
            if verdict == "retry":
                delivery.retry = [a.id for c in (chunk, *queue) for a in c]
                delivery.retry_reason, delivery.retry_after = reason, after
                break
            if verdict == "reject" and len(chunk) > 1:
                queue.extendleft([a] for a in reversed(chunk))  # find the one at fault
            elif verdict == "reject":
                log.warning("webhook.rejected", host=self.host, alert=chunk[0].id, reason=reason)
                delivery.rejected[chunk[0].id] = reason
        return delivery

    async def _post(self, body: bytes) -> tuple[http.Verdict, str, float | None]:
        assert self._session is not None, "start() first"
        headers = {"Content-Type": "application/json"}
        if self.secret:
            stamp = int(self.clock())
            headers[TIMESTAMP_HEADER] = str(stamp)
            headers[SIGNATURE_HEADER] = SenderAuth.sign(self.secret, body, stamp)
        try:
            async with self._session.post(self.url, data=body, headers=headers) as resp:
                answer = (await resp.text(errors="replace"))[:300]
                verdict = http.classify(resp.status)
                after = http.retry_after(resp.headers) if verdict == "retry" else None
                return verdict, f"HTTP {resp.status}: {answer}".strip(), after
        except http.CONNECTION_ERRORS as exc:
            return "retry", f"webhook {self.host}: {exc!r}", None


def build(settings: Settings) -> WebhookSink:
    url = require(settings, "sink_webhook_url")
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK):
        raise SinkConfigError(
            "GATEWATCH_SINK_WEBHOOK_URL must be https:// (plain http only to a loopback address)"
        )
    secret = settings.sink_webhook_secret.get_secret_value()
    fmt = settings.sink_webhook_format
    render: Render
    per_message = settings.sink_webhook_per_message
    if fmt == "slack":
        render = slack_message
    elif fmt == "teams":
        render = teams_message
    else:
        path = require(settings, "sink_webhook_template")
        if not secret:
            raise SinkConfigError(
                "set GATEWATCH_SINK_WEBHOOK_SECRET: a templated webhook's receiver needs the "
                "HMAC signature to know the sender"
            )
        try:
            render = template_renderer(Path(path).read_text())
            render([SAMPLE])  # the values are escaped: if this is JSON, every alert's is
        except (OSError, ValueError) as exc:
            raise SinkConfigError(f"GATEWATCH_SINK_WEBHOOK_TEMPLATE {path}: {exc}") from None
        per_message = 1
    return WebhookSink(
        url=url,
        render=render,
        per_message=per_message,
        secret=secret,
        ca_file=settings.sink_webhook_ca_file,
        timeout_s=settings.sink_webhook_timeout_s,
    )
