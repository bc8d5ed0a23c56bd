"""Where incidents live: one small Protocol, an in-memory store (tests, one-shot reports) and Redis.

Redis keys, all under `<prefix>inc:` (the configured prefix, default `gw:`), each expiring
`retention_s` after its last write, so the store is bounded by time as well as by the caps below:

- `i:<id>`      the incident (JSON, `Incident.to_json`)
- `a:<id>`      alias: an incident merged into another (or renamed after an earlier alert arrived)
- `k:<key>`     the intervals of one grouping key (JSON `[[start, end, incident], ...]`)
- `h:<id>`      HyperLogLog of the incident's subjects (the exact-enough distinct count)
- `seen`        sorted set of consumed alert ids, scored by when (to forget them after retention)
- `count`       the same ids scored by their request count: a redelivered alert is skipped, one
                that comes back with a higher count (a finding window closing) only recounts
- `open`        sorted set of incidents that opened (dormant ones are not listed), by last alert
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from redis.asyncio import Redis

from pipeline.incidents.model import Incident

__all__ = ["Commit", "IncidentStore", "MemoryIncidentStore", "RedisIncidentStore"]

MAX_LISTED = 10_000  # incidents the `open` index keeps (the newest)
_ALIAS_DEPTH = 16


@dataclass(slots=True)
class Commit:
    """One batch's effects, written atomically."""

    incidents: list[Incident]
    aliases: dict[str, str]  # removed id -> the id it lives on as
    intervals: dict[str, list[list[int | str]]]
    subjects: dict[str, list[str]]  # incident id -> subjects seen in this batch
    alert_counts: dict[str, int] = field(default_factory=dict)  # consumed alert id -> its count


class IncidentStore(Protocol):
    async def seen_counts(self, alert_ids: list[str]) -> dict[str, int]:
        """The ids among `alert_ids` consumed already, with the request count they had then."""
        ...

    async def intervals(self, keys: list[str]) -> dict[str, list[list[int | str]]]: ...

    async def load(self, ids: list[str]) -> dict[str, Incident]:
        """The incidents `ids` name (aliases followed), keyed by the id asked for."""
        ...

    async def commit(self, commit: Commit) -> None: ...

    async def get(self, incident_id: str) -> Incident | None:
        """One incident, aliases followed, with `subjects_total` filled in."""
        ...

    async def recent(self, since_ms: int = 0, limit: int = 1000) -> list[Incident]:
        """Opened incidents whose last alert is at or after `since_ms`, newest first."""
        ...


class MemoryIncidentStore:
    """The same contract in a process's memory (no expiry: it lives as long as its owner)."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.keys: dict[str, list[list[int | str]]] = {}
        self.incidents: dict[str, bytes] = {}
        self.aliases: dict[str, str] = {}
        self.subjects: dict[str, set[str]] = {}

    async def seen_counts(self, alert_ids: list[str]) -> dict[str, int]:
        return {i: self.seen[i] for i in alert_ids if i in self.seen}

    async def intervals(self, keys: list[str]) -> dict[str, list[list[int | str]]]:
        return {k: [list(iv) for iv in self.keys[k]] for k in keys if k in self.keys}

    def _resolve(self, incident_id: str) -> str:
        for _ in range(_ALIAS_DEPTH):
            if incident_id not in self.aliases:
                break
            incident_id = self.aliases[incident_id]
        return incident_id

    async def load(self, ids: list[str]) -> dict[str, Incident]:
        out = {}
        for asked in ids:
            data = self.incidents.get(self._resolve(asked))
            if data is not None:
                out[asked] = Incident.from_json(data)
        return out

    async def commit(self, commit: Commit) -> None:
        for old, new in commit.aliases.items():
            self.incidents.pop(old, None)
            self.aliases[old] = new
            self.subjects.setdefault(new, set()).update(self.subjects.pop(old, set()))
        for incident in commit.incidents:
            self.incidents[incident.id] = incident.to_json()
        for incident_id, subjects in commit.subjects.items():
            self.subjects.setdefault(self._resolve(incident_id), set()).update(subjects)
        self.keys.update({k: [list(iv) for iv in ivs] for k, ivs in commit.intervals.items()})
        self.seen.update(commit.alert_counts)

    async def get(self, incident_id: str) -> Incident | None:
        resolved = self._resolve(incident_id)
        data = self.incidents.get(resolved)
        if data is None:
            return None
        incident = Incident.from_json(data)
        incident.subjects_total = len(self.subjects.get(resolved, ()))
        return incident

    async def recent(self, since_ms: int = 0, limit: int = 1000) -> list[Incident]:
        found = [inc for i in list(self.incidents) if (inc := await self.get(i)) is not None]
        listed = [i for i in found if i.opened and i.last_ms >= since_ms]
        return sorted(listed, key=lambda i: (-i.last_ms, i.id))[:limit]


class RedisIncidentStore:
    """The store in Redis (layout in the module docstring). One writer at a time."""

    def __init__(
        self, redis: Redis, prefix: str = "gw:", *, retention_s: float = 7 * 86400
    ) -> None:
        self.redis = redis
        self.prefix = f"{prefix}inc:"
        self.retention_ms = int(retention_s * 1000)

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}{kind}:{name}" if name else f"{self.prefix}{kind}"

    async def seen_counts(self, alert_ids: list[str]) -> dict[str, int]:
        if not alert_ids:
            return {}
        scores = await self.redis.zmscore(self._key("count"), alert_ids)
        return {i: int(c) for i, c in zip(alert_ids, scores, strict=True) if c is not None}

    async def intervals(self, keys: list[str]) -> dict[str, list[list[int | str]]]:
        if not keys:
            return {}
        values = await self.redis.mget([self._key("k", k) for k in keys])
        return {k: orjson.loads(v) for k, v in zip(keys, values, strict=True) if v is not None}

    async def _resolve(self, ids: list[str]) -> dict[str, str]:
        resolved = {i: i for i in ids}
        pending = list(ids)
        for _ in range(_ALIAS_DEPTH):
            if not pending:
                break
            targets = await self.redis.mget([self._key("a", resolved[i]) for i in pending])
            moved = []
            for i, target in zip(pending, targets, strict=True):
                if target is not None:
                    resolved[i] = _text(target)
                    moved.append(i)
            pending = moved
        return resolved

    async def load(self, ids: list[str]) -> dict[str, Incident]:
        if not ids:
            return {}
        resolved = await self._resolve(ids)
        values = await self.redis.mget([self._key("i", resolved[i]) for i in ids])
        return {i: Incident.from_json(v) for i, v in zip(ids, values, strict=True) if v is not None}

    async def commit(self, commit: Commit) -> None:
        ttl = self.retention_ms
        now = int(time.time() * 1000)
        # Alert ids consumed longer ago than the retention are forgotten (a few per commit).
        expired = await self.redis.zrangebyscore(
            self._key("seen"), "-inf", now - ttl, start=0, num=10_000
        )
        pipe = self.redis.pipeline(transaction=True)
        for old, new in commit.aliases.items():
            pipe.delete(self._key("i", old))
            pipe.set(self._key("a", old), new, px=ttl)
            pipe.zrem(self._key("open"), old)
            pipe.pfmerge(self._key("h", new), self._key("h", new), self._key("h", old))
            pipe.delete(self._key("h", old))
        for incident in commit.incidents:
            pipe.set(self._key("i", incident.id), incident.to_json(), px=ttl)
            if incident.opened:
                pipe.zadd(self._key("open"), {incident.id: incident.last_ms})
        for incident_id, subjects in commit.subjects.items():
            if subjects:
                pipe.pfadd(self._key("h", incident_id), *subjects)
                pipe.pexpire(self._key("h", incident_id), ttl)
        for k, ivs in commit.intervals.items():
            pipe.set(self._key("k", k), orjson.dumps(ivs), px=ttl)
        if commit.alert_counts:
            pipe.zadd(self._key("seen"), dict.fromkeys(commit.alert_counts, now))
            pipe.zadd(self._key("count"), commit.alert_counts)
        if expired:
            pipe.zrem(self._key("seen"), *expired)
            pipe.zrem(self._key("count"), *expired)
        pipe.zremrangebyrank(self._key("open"), 0, -MAX_LISTED - 1)
        await pipe.execute()

    async def get(self, incident_id: str) -> Incident | None:
        found = (await self.load([incident_id])).get(incident_id)
        if found is not None:
            found.subjects_total = int(await self.redis.pfcount(self._key("h", found.id)))
        return found

    async def recent(self, since_ms: int = 0, limit: int = 1000) -> list[Incident]:
        ids = [
            _text(i)
            for i in await self.redis.zrevrangebyscore(
                self._key("open"), "+inf", since_ms, start=0, num=limit
            )
        ]
        if not ids:
            return []
        values = await self.redis.mget([self._key("i", i) for i in ids])
        gone = [i for i, v in zip(ids, values, strict=True) if v is None]
        if gone:  # expired: the index forgets them too
            await self.redis.zrem(self._key("open"), *gone)
        found = [Incident.from_json(v) for v in values if v is not None]
        pipe = self.redis.pipeline(transaction=False)
        for incident in found:
            pipe.pfcount(self._key("h", incident.id))
        for incident, total in zip(found, await pipe.execute(), strict=True):
            incident.subjects_total = int(total)
        return sorted(found, key=lambda i: (-i.last_ms, i.id))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
