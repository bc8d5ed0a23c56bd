"""Decisions in Redis: one hash per subject with a TTL, plus a stream of changes for gateways.

Keys (all under the configured prefix, default `gw:`):
- `gw:d:<subject>` hash: score, action, reasons (JSON list), detector, model_version, mode,
  updated_at, expires_at (epoch ms); expires with the decision.
- `gw:decisions` stream: one entry per change, so a gateway syncs incrementally after a snapshot.
- `gw:stats` hash: counters the worker keeps (events_processed, decisions_written).
- `gw:applied` hash: `<group>/<topic>/<partition>` -> the offset of the last envelope whose
  decisions and counts were written: an envelope processed again (redelivered after a crash, or a
  write redis-py resends after a timeout) changes nothing the second time.
- operator overrides that always win over any decision: `pipeline/operator/overrides.py`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.typing import EncodableT

from pipeline.config import Mode

__all__ = ["Decision", "RedisDecisions"]


class Decision(BaseModel):
    subject: str
    score: float = Field(ge=0.0, le=1.0)
    action: str
    reasons: list[str]
    detector: str
    model_version: str
    mode: Mode
    updated_at: int = Field(description="epoch ms")
    expires_at: int = Field(description="epoch ms")
    rate_limit: int | None = Field(
        None, description="Recommended requests/s for this subject: its baseline p99 x a factor"
    )

    def to_redis(self) -> dict[str, str]:
        fields = {
            k: str(v) for k, v in self.model_dump(exclude={"reasons"}, exclude_none=True).items()
        }
        fields["reasons"] = orjson.dumps(self.reasons).decode()
        return fields

    @classmethod
    def from_redis(cls, fields: dict[str, str]) -> Decision:
        data: dict[str, Any] = dict(fields)
        data["reasons"] = orjson.loads(fields.get("reasons", "[]"))
        return cls.model_validate(data)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump())


# One envelope's effects, at most once per (source, offset), in one atomic step. KEYS: stream,
# stats, applied, then one decision hash per decision. ARGV: source ("" = no deduplication),
# offset, stream maxlen, events processed, JSON [[hash fields], ttl ms, [stream fields]] per
# decision.
_WRITE = """
if ARGV[1] ~= '' then
  local done = redis.call('HGET', KEYS[3], ARGV[1])
  if done and tonumber(ARGV[2]) <= tonumber(done) then return 0 end
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
end
local decisions = cjson.decode(ARGV[5])
for i, d in ipairs(decisions) do
  local key = KEYS[3 + i]
  redis.call('HSET', key, unpack(d[1]))
  redis.call('PEXPIRE', key, d[2])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(d[3]))
end
if tonumber(ARGV[4]) > 0 then redis.call('HINCRBY', KEYS[2], 'events_processed', ARGV[4]) end
if #decisions > 0 then redis.call('HINCRBY', KEYS[2], 'decisions_written', #decisions) end
return 1
"""


class RedisDecisions:
    """Writes a batch of decisions in one round trip; reads one subject's current decision."""

    def __init__(self, redis: Redis, prefix: str = "gw:", stream_maxlen: int = 100_000) -> None:
        self.redis = redis
        self.prefix = prefix
        self.stream_maxlen = stream_maxlen
        self._write = redis.register_script(_WRITE)

    def key(self, subject: str) -> str:
        return f"{self.prefix}d:{subject}"

    @property
    def stream(self) -> str:
        return f"{self.prefix}decisions"

    @property
    def stats_key(self) -> str:
        return f"{self.prefix}stats"

    @property
    def applied_key(self) -> str:
        return f"{self.prefix}applied"

    async def write(
        self,
        decisions: list[Decision],
        *,
        events_processed: int = 0,
        source: tuple[str, int] | None = None,
    ) -> bool:
        """Write the decisions and counts of one envelope, atomically. With `source` (its
        `(partition identity, offset)`), only once: an envelope at or below the offset last
        written for that partition changes nothing and this returns False."""
        if not decisions and not events_processed:
            return True
        now_ms = int(time.time() * 1000)
        rows = [
            [
                [x for kv in d.to_redis().items() for x in kv],
                str(max(1, d.expires_at - now_ms)),
                _stream_entry(d),
            ]
            for d in decisions
        ]
        name, offset = source if source is not None else ("", 0)
        keys = [self.stream, self.stats_key, self.applied_key]
        keys += [self.key(d.subject) for d in decisions]
        args: list[EncodableT] = [
            name, offset, self.stream_maxlen, events_processed, orjson.dumps(rows)
        ]
        return bool(await self._write(keys=keys, args=args))

    async def get(self, subject: str) -> Decision | None:
        fields = await self.redis.hgetall(self.key(subject))
        if not fields:
            return None
        return Decision.from_redis({_s(k): _s(v) for k, v in fields.items()})

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.stats_key)
        return {_s(k): int(v) for k, v in raw.items()}


def _stream_entry(d: Decision) -> list[str]:
    """A decision change as the gateways' sync reads it from the stream."""
    return [
        *("subject", d.subject, "action", d.action, "score", str(d.score)),
        *("detector", d.detector, "expires_at", str(d.expires_at), "mode", d.mode),
    ]


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
