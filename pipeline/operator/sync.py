"""What every worker refreshes from Redis every few seconds for the operators' sake: the allow
overrides in force (expired ones reaped), feedback's threshold adjustments, and any audit alert
still queued because Kafka was unreachable when an operator acted."""

from __future__ import annotations

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from pipeline.config import Settings
from pipeline.operator.audit import AuditTrail
from pipeline.operator.overrides import Overrides
from pipeline.operator.tuning import TuningStore
from pipeline.worker.processor import Processor

__all__ = ["OperatorSync"]

log = structlog.get_logger(__name__)


class OperatorSync:
    def __init__(self, overrides: Overrides, tuning: TuningStore, audit: AuditTrail) -> None:
        self.overrides = overrides
        self.tuning = tuning
        self.audit = audit

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> OperatorSync:
        prefix = settings.redis_prefix
        return cls(
            Overrides(redis, prefix),
            TuningStore(redis, prefix=prefix, half_life_s=settings.tuning_half_life_s),
            AuditTrail(redis, prefix=prefix, topic=settings.topics.alerts),
        )

    async def refresh(self, processor: Processor, producer: AIOKafkaProducer | None) -> None:
        try:
            expired = await self.overrides.reap()
            current = await self.overrides.all()
            tuning = await self.tuning.load()
        except (RedisError, OSError) as exc:
            log.warning("worker.overrides_unavailable", error=str(exc))
            return  # keep the last known overrides and adjustments
        if expired:
            log.info("overrides.expired", subjects=expired[:20], n=len(expired))
        processor.allowed = frozenset(current["allow"])
        processor.policy.tuning = tuning
        if producer is None:
            return
        try:
            await self.audit.flush(producer)
        except (KafkaError, RedisError, OSError) as exc:
            log.warning("audit.publish_failed", error=str(exc))
