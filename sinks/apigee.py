"""Decision changes → Apigee's cache, through the gatewatch decision-ingest proxy.

Apigee cannot read Redis, so decisions are pushed to the ingest proxy, which stores each with
PopulateCache (cache `gatewatch-decisions`, prefix `gatewatch`, so Apigee's key is
`gatewatch__<subject>`) for the decision's remaining TTL. The enforcement shared flow then answers
from that cache (LookupCache) without any call out of Apigee.

Two ways to feed it, one proxy contract (`post_decision`):
- `gatewatch push-apigee` (`ApigeeDecisionPusher`): follows the Redis decision stream (the one Kong
  nodes sync from); its position is stored in Redis after each delivered batch.
- `gatewatch sink apigee` (`ApigeeSink`, the Sink Protocol): decision alerts from
  `gatewatch.alerts` under the sink runner, with its durable Kafka cursor, backoff and dead letters.
A change the proxy could not take now (5xx, 401/403/408/429, network) is retried with backoff;
one it rejects as malformed (any other 4xx) is dropped (the pusher) or dead-lettered (the sink),
counted and logged, since retrying it would stall every later change behind it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import structlog
from redis.asyncio import Redis

from pipeline.alerts import Alert
from pipeline.config import Settings
from sinks import http as sink_http
from sinks.base import Delivery
from sinks.registry import require

__all__ = ["ApigeeDecisionPusher", "ApigeeSink", "build", "post_decision"]

log = structlog.get_logger(__name__)
MAX_BACKOFF_S = 10.0
# Client errors that say "not now" (auth being rotated, rate limits, timeouts) rather than "never".
RETRYABLE_4XX = frozenset({401, 403, 408, 429})
DEFAULT_TTL_S = 300  # a decision alert without an expiry (none should come) is cached this long


def decision_body(
    *,
    subject: str,
    action: str,
    score: float,
    detector: str,
    mode: str,
    expires_at: int,
    now_ms: int,
) -> dict[str, Any]:
    return {
        "subject": subject,
        "action": action,
        "score": score,
        "detector": detector,
        "mode": mode,
        # PopulateCache takes a timeout in seconds; at least 1 so it is not "forever".
        "ttl_s": max(1, (expires_at - now_ms) // 1000),
    }


async def post_decision(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    limit: aiohttp.ClientTimeout,
    body: dict[str, Any],
) -> tuple[sink_http.Verdict, str]:
    """One attempt: `ok`, `retry` (not now) or `reject` (never), with the reason."""
    try:
        async with session.post(url, json=body, headers=headers, timeout=limit) as resp:
            if 200 <= resp.status < 300:
                return "ok", ""
            reason = f"apigee: HTTP {resp.status}: {(await resp.text())[:200]}"
            if 400 <= resp.status < 500 and resp.status not in RETRYABLE_4XX:
                return "reject", reason
            return "retry", reason
    except (aiohttp.ClientError, TimeoutError) as exc:
        return "retry", f"apigee: {exc!r}"


class ApigeeDecisionPusher:
    def __init__(
        self,
        redis: Redis,
        http: aiohttp.ClientSession,
        *,
        url: str,
        token: str,
        stream: str,
        cursor_key: str,
        concurrency: int = 8,
        batch: int = 200,
        timeout_s: float = 5.0,
    ) -> None:
        self.redis = redis
        self.http = http
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.stream = stream
        self.cursor_key = cursor_key
        self.batch = batch
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._slots = asyncio.Semaphore(concurrency)
        self.pushed = 0
        self.expired = 0
        self.rejected = 0

    async def run(self) -> None:
        """Push changes until cancelled."""
        while True:
            await self.step(block_ms=1000)

    async def step(self, block_ms: int = 0) -> int:
        """Deliver the next batch of changes; returns how many stream entries it consumed."""
        cursor = await self.redis.get(self.cursor_key)
        last_id = cursor.decode() if cursor else "0-0"
        # BLOCK 0 would mean "forever" to Redis: no block argument at all means "don't wait".
        resp = await self.redis.xread(
            {self.stream: last_id}, count=self.batch, block=block_ms or None
        )
        entries = resp[0][1] if resp else []
        if not entries:
            return 0
        changes = [_change(fields) for _, fields in entries]
        now_ms = int(time.time() * 1000)
        live = [c for c in changes if int(c["expires_at"]) > now_ms]
        self.expired += len(changes) - len(live)
        delivered = await asyncio.gather(*(self._deliver(c, now_ms) for c in live))
        await self.redis.set(self.cursor_key, entries[-1][0])
        self.pushed += sum(delivered)
        self.rejected += len(delivered) - sum(delivered)
        return len(entries)

    async def _deliver(self, change: dict[str, str], now_ms: int) -> bool:
        """True once the proxy stored the change; False if it rejected it for good."""
        body = decision_body(
            subject=change["subject"],
            action=change["action"],
            score=float(change["score"]),
            detector=change.get("detector", ""),
            mode=change.get("mode", "shadow"),
            expires_at=int(change["expires_at"]),
            now_ms=now_ms,
        )
        backoff = 0.2
        async with self._slots:
            while True:
                verdict, reason = await post_decision(
                    self.http, self.url, self.headers, self.timeout, body
                )
                if verdict == "ok":
                    return True
                if verdict == "reject":
                    log.error("apigee_sink.rejected", subject=body["subject"], reason=reason)
                    return False
                log.warning(
                    "apigee_sink.retry", subject=body["subject"], reason=reason, retry_in_s=backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)


class ApigeeSink:
    """Decision alerts to the ingest proxy; other alerts (findings, operator actions) carry no
    decision for Apigee to cache and count as delivered, as do decisions already expired."""

    name = "apigee"

    def __init__(
        self, *, url: str, token: str, concurrency: int = 32, timeout_s: float = 5.0
    ) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._slots = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, alerts: list[Alert]) -> Delivery:
        now_ms = int(time.time() * 1000)
        due = [
            a
            for a in alerts
            if a.kind == "decision" and (a.expires_at is None or a.expires_at > now_ms)
        ]
        verdicts = await asyncio.gather(*(self._post(a, now_ms) for a in due))
        delivery = Delivery()
        for alert, (verdict, reason) in zip(due, verdicts, strict=True):
            if verdict == "retry":
                delivery.retry.append(alert.id)
                delivery.retry_reason = reason
            elif verdict == "reject":
                delivery.rejected[alert.id] = reason
        return delivery

    async def _post(self, alert: Alert, now_ms: int) -> tuple[sink_http.Verdict, str]:
        assert self._session is not None, "start() first"
        body = decision_body(
            subject=alert.subject,
            action=alert.action,
            score=alert.score,
            detector=alert.detector,
            mode=alert.mode,
            expires_at=alert.expires_at or now_ms + DEFAULT_TTL_S * 1000,
            now_ms=now_ms,
        )
        async with self._slots:
            return await post_decision(self._session, self.url, self.headers, self.timeout, body)


def _change(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in fields.items()}


def build(settings: Settings) -> ApigeeSink:
    """The same proxy and token as `push-apigee` (GATEWATCH_APIGEE_INGEST_URL / _TOKEN)."""
    return ApigeeSink(
        url=require(settings, "apigee_ingest_url"),
        token=require(settings, "apigee_ingest_token"),
    )
