"""Operator overrides → Apigee's cache, through the same decision-ingest proxy as decisions.

Apigee's enforcement flow reads one cache entry per subject, so an override is pushed as that
subject's entry: a deny as `block` in `enforce` mode, an allow as `allow` (which the proxy stores
only for overrides), both with detector `override` (reserved: no detector has that name) and a
TTL to the override's expiry. The enforcement flow lets an `allow` override win over every
decision of the request, as the Kong plugin does; the decision pusher skips subjects whose
override is in force, so a decision never replaces one.

This pusher follows the override change stream (`<prefix>overrides`) from a cursor in Redis. On
its first run (no cursor) it pushes every override in force, then follows the stream; it does so
again every `refresh_s` (a day), because an override without expiry is cached for Apigee's longest
TTL here (9,999,999 s, ~115 days) and must be renewed. When an override is cleared or expires, the
subject's entry becomes its current decision again (or is removed when there is none).
"""

from __future__ import annotations

import time

import aiohttp
import structlog
from redis.asyncio import Redis

from pipeline.decisions import RedisDecisions
from pipeline.operator.overrides import Override, Overrides
from sinks.apigee import ApigeeDecisionPusher

__all__ = ["OVERRIDE_DETECTOR", "ApigeeOverridePusher"]

log = structlog.get_logger(__name__)
OVERRIDE_DETECTOR = "override"
MAX_TTL_S = 9_999_999  # the ingest proxy's ttl_s bound
REFRESH_S = 86_400.0


class ApigeeOverridePusher(ApigeeDecisionPusher):
    def __init__(
        self,
        redis: Redis,
        http: aiohttp.ClientSession,
        *,
        url: str,
        token: str,
        overrides: Overrides,
        decisions: RedisDecisions,
        cursor_key: str,
        refresh_s: float = REFRESH_S,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__(
            redis, http, url=url, token=token, stream=overrides.stream, cursor_key=cursor_key,
            timeout_s=timeout_s,
        )  # fmt: skip
        self.overrides_store = overrides
        self.decision_store = decisions
        self.refresh_s = refresh_s
        self._refreshed_at = 0.0

    async def step(self, block_ms: int = 0) -> int:
        """Push the next batch of override changes (or everything in force, when due); returns
        how many changes or overrides it pushed."""
        cursor = await self.redis.get(self.cursor_key)
        if cursor is None or time.monotonic() - self._refreshed_at >= self.refresh_s:
            return await self._push_all()
        resp = await self.redis.xread(
            {self.stream: cursor.decode()}, count=self.batch, block=block_ms or None
        )
        entries = resp[0][1] if resp else []
        if not entries:
            return 0
        # Latest state per subject, pushed once: a set then a clear in one batch is a clear.
        subjects = list(dict.fromkeys(fields[b"subject"].decode() for _, fields in entries))
        delivered = [await self._push_subject(s) for s in subjects]
        await self.redis.set(self.cursor_key, entries[-1][0])
        self.pushed += sum(delivered)
        self.rejected += len(delivered) - sum(delivered)
        return len(entries)

    async def _push_all(self) -> int:
        tail = await self.redis.xrevrange(self.stream, count=1)
        now_ms = int(time.time() * 1000)
        found = await self.overrides_store.active(now_ms)
        delivered = [await self._deliver(_change(o, now_ms), now_ms) for o in found]
        await self.redis.set(self.cursor_key, tail[0][0] if tail else "0-0")
        self._refreshed_at = time.monotonic()
        self.pushed += sum(delivered)
        self.rejected += len(delivered) - sum(delivered)
        log.info("apigee_sink.overrides_pushed", overrides=len(found))
        return len(found)

    async def _push_subject(self, subject: str) -> bool:
        now_ms = int(time.time() * 1000)
        found = await self.overrides_store.get(subject, now_ms)
        if found is not None:
            return await self._deliver(_change(found, now_ms), now_ms)
        # Cleared or expired: the subject's own decision again, or no entry at all (allow).
        decision = await self.decision_store.get(subject)
        if decision is not None and decision.expires_at > now_ms:
            change = {
                "subject": subject, "action": decision.action, "score": str(decision.score),
                "detector": decision.detector, "mode": decision.mode,
                "expires_at": str(decision.expires_at),
            }  # fmt: skip
        else:
            change = {
                "subject": subject, "action": "allow", "score": "0", "detector": "",
                "mode": "enforce", "expires_at": str(now_ms + 1000),
            }  # fmt: skip
        return await self._deliver(change, now_ms)


def _change(found: Override, now_ms: int) -> dict[str, str]:
    """An override as the decision stream's fields, which `_deliver` turns into the body."""
    longest = now_ms + MAX_TTL_S * 1000
    expires_at = longest if found.expires_at is None else min(found.expires_at, longest)
    return {
        "subject": found.subject,
        "action": "allow" if found.kind == "allow" else "block",
        "score": "0" if found.kind == "allow" else "1",
        "detector": OVERRIDE_DETECTOR,
        "mode": "enforce",
        "expires_at": str(expires_at),
    }
