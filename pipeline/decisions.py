"""Decisions in Redis: one hash per subject with a TTL, plus a stream of changes for gateways.

Keys (all under the configured prefix, default `gw:`):
- `gw:d:<subject>` hash: score, action, reasons (JSON list), detector, model_version, mode,
  updated_at, expires_at (epoch ms); expires with the decision.
- `gw:decisions` stream: one entry per change, so a gateway syncs incrementally after a snapshot.
- `gw:stats` hash: counters the worker keeps (events_processed, decisions_written).
- operator overrides that always win over any decision: `pipeline/operator/overrides.py`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from pydantic import BaseModel, Field
from redis.asyncio import Redis

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


class RedisDecisions:
    """Writes a batch of decisions in one round trip; reads one subject's current decision."""

    def __init__(self, redis: Redis, prefix: str = "gw:", stream_maxlen: int = 100_000) -> None:
        self.redis = redis
        self.prefix = prefix
        self.stream_maxlen = stream_maxlen

    def key(self, subject: str) -> str:
        return f"{self.prefix}d:{subject}"

    @property
    def stream(self) -> str:
        return f"{self.prefix}decisions"

    @property
    def stats_key(self) -> str:
        return f"{self.prefix}stats"

    async def write(self, decisions: list[Decision], *, events_processed: int = 0) -> None:
        now_ms = int(time.time() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for d in decisions:
            key = self.key(d.subject)
            pipe.hset(key, mapping=d.to_redis())
            pipe.pexpire(key, max(1, d.expires_at - now_ms))
            pipe.xadd(
                self.stream,
                {
                    "subject": d.subject,
                    "action": d.action,
                    "score": str(d.score),
                    "detector": d.detector,
                    "expires_at": str(d.expires_at),
                    "mode": d.mode,
                },
                maxlen=self.stream_maxlen,
                approximate=True,
            )
        if events_processed:
            pipe.hincrby(self.stats_key, "events_processed", events_processed)
        if decisions:
            pipe.hincrby(self.stats_key, "decisions_written", len(decisions))
        await pipe.execute()

    async def get(self, subject: str) -> Decision | None:
        fields = await self.redis.hgetall(self.key(subject))
        if not fields:
            return None
        return Decision.from_redis({_s(k): _s(v) for k, v in fields.items()})

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.stats_key)
        return {_s(k): int(v) for k, v in raw.items()}


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
