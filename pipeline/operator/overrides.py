"""Operator overrides in Redis: who allowed or denied which subject, why, and until when.

Layout (under the configured prefix, default `gw:`), chosen so that gateways that only know the
first two keys keep working and data written before expiries existed stays readable:

- `gw:override:allow`, `gw:override:deny`: sets of subjects, what every gateway reads (a subject
  is in at most one);
- `gw:override:expiry`: sorted set, subject -> expiry (epoch ms), for overrides that expire.
  Readers (workers, the Kong plugin's sync, the Apigee pusher) ignore a member whose expiry has
  passed, and workers remove it (`reap`) within seconds; an override without an entry here lasts
  until cleared (that is what older data means too);
- `gw:override:meta`: hash, subject -> the `Override` record as JSON (who, why, when, expiry, id);
- `gw:overrides`: stream of changes (`set`, `clear`, `expired`) for pushers that cannot read Redis
  sets from where they enforce (the Apigee pusher).

Writes are staged on a caller's MULTI pipeline, so an override, its audit alert and a feedback
threshold change land together or not at all.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from pipeline.alerts import alert_id

__all__ = ["Override", "OverrideKind", "Overrides"]

OverrideKind = Literal["allow", "deny"]
KINDS: tuple[OverrideKind, ...] = ("allow", "deny")
LEGACY_ACTOR = "unknown (set before overrides were audited)"
STREAM_MAXLEN = 10_000

# Expired members out of the sets, the expiry index and the metadata, each announced on the change
# stream, in one step: an override set again in between must not be removed by a stale read.
_REAP = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, subject in ipairs(expired) do
  redis.call('ZREM', KEYS[1], subject)
  redis.call('SREM', KEYS[2], subject)
  redis.call('SREM', KEYS[3], subject)
  redis.call('HDEL', KEYS[4], subject)
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[2], '*', 'subject', subject, 'change', 'expired')
end
return expired
"""


class Override(BaseModel):
    subject: str
    kind: OverrideKind
    actor: str
    reason: str = ""
    created_at: int = Field(description="epoch ms")
    expires_at: int | None = Field(None, description="epoch ms; None = until cleared")
    id: str = ""

    def model_post_init(self, _: object) -> None:
        if not self.id:
            self.id = alert_id("override", self.kind, self.subject, self.actor, self.created_at)

    def active(self, now_ms: int) -> bool:
        return self.expires_at is None or self.expires_at > now_ms


class Overrides:
    """Reads and stages writes of the override keys above."""

    def __init__(self, redis: Redis, prefix: str = "gw:") -> None:
        self.redis = redis
        self.prefix = prefix
        self.expiry_key = f"{prefix}override:expiry"
        self.meta_key = f"{prefix}override:meta"
        self.stream = f"{prefix}overrides"
        self._reap = redis.register_script(_REAP)

    def key(self, kind: str) -> str:
        return f"{self.prefix}override:{kind}"

    def stage_put(self, pipe: Pipeline, override: Override) -> None:
        other = "deny" if override.kind == "allow" else "allow"
        pipe.srem(self.key(other), override.subject)
        pipe.sadd(self.key(override.kind), override.subject)
        if override.expires_at is None:
            pipe.zrem(self.expiry_key, override.subject)
        else:
            pipe.zadd(self.expiry_key, {override.subject: override.expires_at})
        pipe.hset(self.meta_key, override.subject, override.model_dump_json())
        pipe.xadd(
            self.stream,
            {"subject": override.subject, "change": "set", "id": override.id},
            maxlen=STREAM_MAXLEN,
            approximate=True,
        )

    def stage_clear(self, pipe: Pipeline, subject: str) -> None:
        for kind in KINDS:
            pipe.srem(self.key(kind), subject)
        pipe.zrem(self.expiry_key, subject)
        pipe.hdel(self.meta_key, subject)
        pipe.xadd(
            self.stream, {"subject": subject, "change": "clear"},
            maxlen=STREAM_MAXLEN, approximate=True,
        )  # fmt: skip

    async def get(self, subject: str, now_ms: int | None = None) -> Override | None:
        """The subject's override in force, if any."""
        now_ms = _now_ms() if now_ms is None else now_ms
        pipe = self.redis.pipeline(transaction=False)
        for kind in KINDS:
            pipe.sismember(self.key(kind), subject)
        pipe.zscore(self.expiry_key, subject)
        pipe.hget(self.meta_key, subject)
        allow, deny, expiry, meta = await pipe.execute()
        if not (allow or deny):
            return None
        found = self._record(subject, "allow" if allow else "deny", expiry, meta)
        return found if found.active(now_ms) else None

    async def in_force(self, subjects: list[str], now_ms: int | None = None) -> set[str]:
        """Which of `subjects` have an override in force (one round trip)."""
        if not subjects:
            return set()
        now_ms = _now_ms() if now_ms is None else now_ms
        pipe = self.redis.pipeline(transaction=False)
        for subject in subjects:
            pipe.sismember(self.key("allow"), subject)
            pipe.sismember(self.key("deny"), subject)
            pipe.zscore(self.expiry_key, subject)
        replies = await pipe.execute()
        held = set()
        for i, subject in enumerate(subjects):
            allow, deny, expiry = replies[3 * i : 3 * i + 3]
            if (allow or deny) and (expiry is None or expiry > now_ms):
                held.add(subject)
        return held

    async def active(self, now_ms: int | None = None) -> list[Override]:
        """Every override in force, with who/why/expiry (sorted by subject)."""
        now_ms = _now_ms() if now_ms is None else now_ms
        pipe = self.redis.pipeline(transaction=False)
        for kind in KINDS:
            pipe.smembers(self.key(kind))
        pipe.zrange(self.expiry_key, 0, -1, withscores=True)
        pipe.hgetall(self.meta_key)
        allow, deny, expiries, meta = await pipe.execute()
        expiry = {_s(s): score for s, score in expiries}
        records = {_s(k): v for k, v in meta.items()}
        out: dict[str, Override] = {}
        # A subject in both sets (written by hand) is allowed, as gateways treat it.
        for kind, members in (("deny", deny), ("allow", allow)):
            for raw in members:
                subject = _s(raw)
                found = self._record(subject, kind, expiry.get(subject), records.get(subject))
                if found.active(now_ms):
                    out[subject] = found
        return [out[s] for s in sorted(out)]

    async def all(self, now_ms: int | None = None) -> dict[str, list[str]]:
        """The subjects in force per kind (what the worker and `override list --json` need)."""
        current: dict[str, list[str]] = {kind: [] for kind in KINDS}
        for found in await self.active(now_ms):
            current[found.kind].append(found.subject)
        return current

    async def reap(self, now_ms: int | None = None) -> list[str]:
        """Remove expired overrides; returns their subjects."""
        now_ms = _now_ms() if now_ms is None else now_ms
        keys = [self.expiry_key, self.key("allow"), self.key("deny"), self.meta_key, self.stream]
        expired = await self._reap(keys=keys, args=[now_ms, STREAM_MAXLEN])
        return [_s(s) for s in expired]

    def _record(
        self, subject: str, kind: OverrideKind, expiry: float | None, meta: bytes | str | None
    ) -> Override:
        expires_at = int(expiry) if expiry is not None else None
        if meta:
            found = Override.model_validate_json(meta)
            if found.kind == kind:
                return found.model_copy(update={"expires_at": expires_at})
        # Written before overrides carried metadata (or by hand): still in force, author unknown.
        return Override(
            subject=subject, kind=kind, actor=LEGACY_ACTOR, created_at=0, expires_at=expires_at
        )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
