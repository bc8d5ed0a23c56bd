"""Checkpoints of subject states and learned models in Redis, so a restart or a partition moving to
another worker carries on where the state stopped instead of starting cold.

Keys (under the configured prefix, default `gw:`; `<group>` is the worker group's id):

- `gw:ckpt:<group>:<topic>:<partition>`, a hash: subject -> its encoded state
  (`detectors/state_codec.py`), and reserved fields, which no subject (`kind:...`) can collide with:
  `~v` format version, `~id` `<group>/<topic>/<partition>`, `~offset` the Kafka offset of the last
  envelope the states hold, `~gen` the owner generation, `~t` when written (epoch ms), `~owner`
  the writing process. Expires `ttl_s` after its last write.
- `gw:ckpt:<group>:models`, a hash: detector name -> its encoded model, `~v`, `~t`, `~owner`.

A partition's owner claims it on assignment (`~gen` incremented: the claim's number fences off a
previous owner still flushing), then loads it; every write is one Lua script that refuses a stale
generation and applies the deletions, the new states and the offset at once. Whatever cannot be
read (another format version, another partition's key, corrupt bytes) is skipped and counted in
`gatewatch_checkpoint_skipped_total{reason}`; what it held starts cold.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgpack
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from detectors.codec import StateFormatError
from detectors.state_codec import StateCodec
from pipeline.worker.store import StateStore

__all__ = ["FORMAT_VERSION", "CheckpointMetrics", "Checkpoints", "Claim", "Loaded"]

log = structlog.get_logger(__name__)

FORMAT_VERSION = 1
_RESERVED = ("~v", "~id", "~offset", "~gen", "~t", "~owner")
_SCAN_COUNT = 2_000
_PACK_RAW = msgpack.Packer(use_bin_type=False).pack

# KEYS[1] partition hash; ARGV: ttl_ms. Returns {previous generation, claimed generation}.
_CLAIM = """
local prev = tonumber(redis.call('HGET', KEYS[1], '~gen') or '0')
local gen = redis.call('HINCRBY', KEYS[1], '~gen', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {prev, gen}
"""
# KEYS[1]; ARGV: generation, ttl_ms, msgpack [deleted field, ...], msgpack [field, value, ...].
# (Two msgpack arguments rather than thousands: packing each argument costs the worker ~2 us,
# msgpack ~0.1 us.) Returns -1 when another owner has claimed the partition, else the change in
# stored bytes.
_SAVE = """
local key = KEYS[1]
if redis.call('HGET', key, '~gen') ~= ARGV[1] then return -1 end
local delta = 0
local dropped = cmsgpack.unpack(ARGV[3])
for i = 1, #dropped do delta = delta - redis.call('HSTRLEN', key, dropped[i]) end
for i = 1, #dropped, 1000 do
  redis.call('HDEL', key, unpack(dropped, i, math.min(i + 999, #dropped)))
end
local fields = cmsgpack.unpack(ARGV[4])
for i = 1, #fields, 2 do
  delta = delta + string.len(fields[i + 1]) - redis.call('HSTRLEN', key, fields[i])
end
for i = 1, #fields, 2000 do
  redis.call('HSET', key, unpack(fields, i, math.min(i + 1999, #fields)))
end
redis.call('PEXPIRE', key, ARGV[2])
return delta
"""
# KEYS[1]; ARGV: generation, ttl_ms. Empties a checkpoint that cannot be read (its owner only).
_RESET = """
if redis.call('HGET', KEYS[1], '~gen') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '~gen', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


class CheckpointMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.age = Gauge(
            "gatewatch_checkpoint_age_seconds",
            "Seconds since the least recently checkpointed partition of this worker was written",
            registry=registry,
        )
        self.bytes = Gauge(
            "gatewatch_checkpoint_bytes",
            "Bytes of encoded state in this worker's checkpoints (its partitions and models)",
            registry=registry,
        )
        self.flushes = Counter(
            "gatewatch_checkpoint_flushes",
            "Checkpoint writes by outcome (ok, failed: Redis unavailable, fenced: another owner)",
            ["outcome"],
            registry=registry,
        )
        self.skipped = Counter(
            "gatewatch_checkpoint_skipped",
            "Checkpointed states or models not loaded, by reason (version, foreign, corrupt)",
            ["reason"],
            registry=registry,
        )
        self.replays = Counter(
            "gatewatch_checkpoint_replays_skipped",
            "Envelopes not processed again because a loaded checkpoint already holds them",
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class Claim:
    previous: int  # the generation before this claim (0: never claimed)
    generation: int


@dataclass(slots=True)
class Loaded:
    offset: int = -1
    subjects: int = 0
    bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> states left out


class Checkpoints:
    """Reads and writes one worker group's checkpoints (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        codec: StateCodec,
        *,
        prefix: str,
        group: str,
        topic: str,
        ttl_s: float,
        metrics: CheckpointMetrics,
        owner: str | None = None,
    ) -> None:
        self.redis = redis
        self.codec = codec
        self.prefix = prefix
        self.group = group
        self.topic = topic
        self.ttl_ms = max(1_000, int(ttl_s * 1000))
        self.metrics = metrics
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self._claim = redis.register_script(_CLAIM)
        self._save = redis.register_script(_SAVE)
        self._reset = redis.register_script(_RESET)

    def key(self, partition: int) -> str:
        return f"{self.prefix}ckpt:{self.group}:{self.topic}:{partition}"

    @property
    def models_key(self) -> str:
        return f"{self.prefix}ckpt:{self.group}:models"

    def identity(self, partition: int) -> str:
        return f"{self.group}/{self.topic}/{partition}"

    # -- partitions ------------------------------------------------------------------------------
    async def claim(self, partition: int) -> Claim:
        previous, generation = await self._claim(keys=[self.key(partition)], args=[self.ttl_ms])
        return Claim(int(previous), int(generation))

    async def load(self, partition: int, store: StateStore, generation: int) -> Loaded:
        """Fill `store` from the partition's checkpoint, most recently seen subjects last (so a
        full budget keeps those). Unreadable states are left out and queued for deletion."""
        key = self.key(partition)
        header: dict[str, bytes] = {}
        blobs: list[tuple[str, bytes]] = []
        async for name, value in self.redis.hscan_iter(key, count=_SCAN_COUNT):
            field_name = name.decode("utf-8", "replace")
            if field_name.startswith("~"):
                header[field_name] = value
            else:
                blobs.append((field_name, value))
        loaded = Loaded()
        if not blobs and set(header) <= {"~gen"}:
            return loaded  # never written: nothing to load
        problem = self._check_header(partition, header)
        if problem is not None:
            reason, detail = problem
            self._skip(reason, len(blobs) or 1)
            log.warning(
                "checkpoint.skipped", partition=partition, reason=reason, detail=detail,
                subjects=len(blobs),
            )  # fmt: skip
            await self._reset(keys=[key], args=[generation, self.ttl_ms])
            loaded.skipped[reason] = len(blobs) or 1
            return loaded
        loaded.offset = int(header["~offset"])
        decoded = []
        for subject, raw in blobs:
            loaded.bytes += len(subject) + len(raw)
            try:
                state, notes = self.codec.decode(raw)
            except StateFormatError:
                loaded.skipped["corrupt"] = loaded.skipped.get("corrupt", 0) + 1
                if store.dropped is not None:
                    store.dropped.add(subject)  # deleted at the next write
                continue
            for reason, _ in notes:
                loaded.skipped[reason] = loaded.skipped.get(reason, 0) + 1
            decoded.append((state.sustained_ts, subject, state))
        decoded.sort(key=lambda item: item[0])
        for _, subject, state in decoded:
            store.put(subject, state)
        loaded.subjects = len(decoded)
        store.offset = loaded.offset
        for reason, n in loaded.skipped.items():
            self._skip(reason, n)
        if loaded.skipped:
            log.warning("checkpoint.states_skipped", partition=partition, **loaded.skipped)
        return loaded

    def _check_header(self, partition: int, header: dict[str, bytes]) -> tuple[str, str] | None:
        version = header.get("~v")
        if version is None or "~offset" not in header or "~id" not in header:
            return "corrupt", "no format version, offset or identity"
        if version != str(FORMAT_VERSION).encode():
            return "version", f"format {version[:16]!r}, this worker reads {FORMAT_VERSION}"
        if header["~id"] != self.identity(partition).encode():
            return "foreign", f"written for {header['~id'][:200]!r}"
        try:
            offset = int(header["~offset"])
        except ValueError:
            return "corrupt", "offset is not a number"
        if offset < -1:
            return "corrupt", "negative offset"
        return None

    def _skip(self, reason: str, n: int) -> None:
        self.metrics.skipped.labels(reason=reason).inc(n)

    async def save(
        self,
        partition: int,
        generation: int,
        offset: int,
        states: list[str | bytes],
        dropped: Iterable[str],
    ) -> int | None:
        """Write changed states (`[subject, encoded state, ...]`), delete dropped ones and move
        the offset, in one step. Returns the change in stored bytes, or None when another owner
        has claimed the partition."""
        header: list[str | bytes] = [
            "~v", str(FORMAT_VERSION), "~id", self.identity(partition), "~offset", str(offset),
            "~t", str(int(time.time() * 1000)), "~owner", self.owner,
        ]  # fmt: skip
        # Lua's msgpack reads strings, not msgpack's bin type: bytes travel as raw strings.
        args = [
            generation,
            self.ttl_ms,
            _PACK_RAW(list(dropped)),
            _PACK_RAW(header + states if states else header),
        ]
        delta = int(await self._save(keys=[self.key(partition)], args=args))
        if delta == -1:
            return None
        return delta

    # -- models ----------------------------------------------------------------------------------
    async def save_models(self) -> int:
        """Write this worker's learned models (the freshest writer's win, see the README)."""
        models = self.codec.export_models()
        fields: dict[FieldT, EncodableT] = {
            "~v": FORMAT_VERSION,
            "~t": int(time.time() * 1000),
            "~owner": self.owner,
        }
        fields.update(models)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.models_key, mapping=fields)
        pipe.pexpire(self.models_key, self.ttl_ms)
        await pipe.execute()
        return sum(len(raw) for raw in models.values())

    async def load_models(self) -> int:
        """Load the group's models into this worker's detectors; returns how many loaded."""
        raw = await self.redis.hgetall(self.models_key)
        fields = {_text(k): _raw(v) for k, v in raw.items()}
        if not fields:
            return 0
        if fields.get("~v") != str(FORMAT_VERSION).encode():
            self._skip("version", 1)
            log.warning("checkpoint.models_skipped", reason="version", version=fields.get("~v"))
            return 0
        models = {k: v for k, v in fields.items() if not k.startswith("~")}
        skipped = self.codec.load_models(models)
        for name, reason, detail in skipped:
            self._skip(reason, 1)
            log.warning("checkpoint.model_skipped", detector=name, reason=reason, detail=detail)
        return len(models) - len(skipped)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
