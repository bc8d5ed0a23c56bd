"""The incident builder as a sink: `gatewatch sink incidents` folds the alerts topic into incidents.

It keeps the Sink Protocol (`sinks/base.py`), so the sink runner gives it what every sink gets: a
durable cursor on the alerts topic, batching and retries. Delivery here is a Redis transaction
(`pipeline/incidents/store.py`); a batch whose commit fails (Redis down) is answered "retry all",
so the runner holds its cursor and sends the same batch again; the store skips alerts it has
already consumed, so a batch redelivered after a crash between commit and cursor changes nothing.
"""

from __future__ import annotations

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from pipeline.alerts import Alert
from pipeline.config import Settings
from pipeline.incidents import IncidentBuilder, IncidentStore, RedisIncidentStore
from sinks.base import Delivery

__all__ = ["IncidentSink", "build"]

log = structlog.get_logger(__name__)


class IncidentSink:
    name = "incidents"

    def __init__(
        self, store: IncidentStore, *, quiet_s: float = 900.0, redis: Redis | None = None
    ) -> None:
        self.store = store
        self.builder = IncidentBuilder(store, quiet_s=quiet_s)
        self.redis = redis  # closed with the sink when the sink made it (see `build`)
        self.changed: set[str] = set()

    async def start(self) -> None:
        if self.redis is not None:
            await self.redis.ping()

    async def send(self, alerts: list[Alert]) -> Delivery:
        try:
            changed = await self.builder.add(alerts)
        except (RedisError, OSError) as exc:
            log.warning("sink.retry", sink=self.name, n=len(alerts), error=repr(exc))
            return Delivery(retry=[a.id for a in alerts], retry_reason=repr(exc))
        self.changed.update(changed)
        return Delivery()

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


def build(settings: Settings) -> IncidentSink:
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    store = RedisIncidentStore(
        redis, settings.redis_prefix, retention_s=settings.incident_retention_s
    )
    return IncidentSink(store, quiet_s=settings.incident_quiet_s, redis=redis)
