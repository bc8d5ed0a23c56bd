"""Decision changes → Apigee's cache, through the gatewatch decision-ingest proxy.

Apigee cannot read Redis, so decisions are pushed: this sink follows the Redis decision stream
(the same one Kong nodes sync from) and POSTs each change to the ingest proxy, which stores it with
PopulateCache (cache `gatewatch-decisions`, prefix `gatewatch`, so Apigee's key is
`gatewatch__<subject>`) for the decision's remaining TTL. The enforcement shared
flow then answers from that cache (LookupCache) without any call out of Apigee.

A subject with an operator override in force is skipped: its Apigee entry is the override
(`sinks/apigee_overrides.py` pushes those), which a decision must not replace.

The stream position is stored in Redis after each delivered batch, so a restarted sink resumes
where it stopped. A change the proxy could not take now (5xx, 401/403/408/429, network) is retried
with backoff; one it rejects as malformed (any other 4xx) is dropped, counted and logged, since
retrying it would stall every later change behind it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import structlog
from redis.asyncio import Redis

from pipeline.operator.overrides import Overrides

__all__ = ["ApigeeDecisionPusher"]

log = structlog.get_logger(__name__)
MAX_BACKOFF_S = 10.0
# Client errors that say "not now" (auth being rotated, rate limits, timeouts) rather than "never".
RETRYABLE_4XX = frozenset({401, 403, 408, 429})


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
        overrides: Overrides | None = None,
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
        self.overrides = overrides
        self.pushed = 0
        self.held = 0
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
        if self.overrides is not None:
            held = await self.overrides.in_force([c["subject"] for c in live], now_ms)
            self.held += sum(c["subject"] in held for c in live)
            live = [c for c in live if c["subject"] not in held]
        delivered = await asyncio.gather(*(self._deliver(c, now_ms) for c in live))
        await self.redis.set(self.cursor_key, entries[-1][0])
        self.pushed += sum(delivered)
        self.rejected += len(delivered) - sum(delivered)
        return len(entries)

    async def _deliver(self, change: dict[str, str], now_ms: int) -> bool:
        """True once the proxy stored the change; False if it rejected it for good."""
        body: dict[str, Any] = {
            "subject": change["subject"],
            "action": change["action"],
            "score": float(change["score"]),
            "detector": change.get("detector", ""),
            "mode": change.get("mode", "shadow"),
            # PopulateCache takes a timeout in seconds; at least 1 so it is not "forever".
            "ttl_s": max(1, (int(change["expires_at"]) - now_ms) // 1000),
        }
        backoff = 0.2
        async with self._slots:
            while True:
                try:
                    async with self.http.post(
                        self.url, json=body, headers=self.headers, timeout=self.timeout
                    ) as resp:
                        if 200 <= resp.status < 300:
                            return True
                        if 400 <= resp.status < 500 and resp.status not in RETRYABLE_4XX:
                            log.error(
                                "apigee_sink.rejected",
                                subject=body["subject"],
                                status=resp.status,
                                answer=(await resp.text())[:200],
                            )
                            return False
                        reason = f"HTTP {resp.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    reason = repr(exc)
                log.warning(
                    "apigee_sink.retry", subject=body["subject"], reason=reason, retry_in_s=backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)


def _change(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in fields.items()}
