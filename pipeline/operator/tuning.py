"""Feedback's threshold adjustments in Redis: one hash, `<prefix>tuning`.

Field: the key as JSON `[route prefix or null, detector or null]`; value: JSON `{"value", "at",
"reports", "actor"}`, the adjustment as learned at `at` (epoch ms). Readers decay it to now with
the configured half-life (`detectors/tuning.py` has the rule), so nothing has to rewrite it as it
fades; a new report starts from the decayed value.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from detectors.tuning import Tuning, TuningKey, decayed

__all__ = ["TuningStore"]

# Below this an adjustment no longer changes any threshold's third decimal: forget it.
NEGLIGIBLE = 0.0005


class TuningStore:
    def __init__(self, redis: Redis, *, prefix: str, half_life_s: float) -> None:
        self.redis = redis
        self.key = f"{prefix}tuning"
        self.half_life_s = half_life_s

    @staticmethod
    def field(key: TuningKey) -> bytes:
        return orjson.dumps(list(key))

    async def entries(
        self, now_ms: int | None = None, *, redis: Any = None
    ) -> dict[TuningKey, dict[str, Any]]:
        """Every key with its record and its `value` decayed to now (`redis`: a watching pipeline
        in immediate mode, to read what a transaction is about to change)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        raw = await (redis or self.redis).hgetall(self.key)
        out: dict[TuningKey, dict[str, Any]] = {}
        for field, value in raw.items():
            route, detector = orjson.loads(field)
            record = orjson.loads(value)
            record["value"] = round(
                decayed(float(record["value"]), (now_ms - int(record["at"])) / 1000,
                        self.half_life_s),
                4,
            )  # fmt: skip
            if record["value"] >= NEGLIGIBLE:
                out[(route, detector)] = record
        return out

    async def load(self, now_ms: int | None = None) -> Tuning:
        """The adjustments in force now, as the policy applies them."""
        entries = await self.entries(now_ms)
        return Tuning({key: record["value"] for key, record in entries.items()})

    def stage_set(
        self, pipe: Pipeline, key: TuningKey, value: float, *, at_ms: int, reports: int, actor: str
    ) -> None:
        record = {"value": value, "at": at_ms, "reports": reports, "actor": actor}
        pipe.hset(self.key, self.field(key), orjson.dumps(record))
