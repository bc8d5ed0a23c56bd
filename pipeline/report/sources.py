"""Where the report's data comes from.

- Alerts: the alerts topic itself, read by time. `offsets_for_times` finds, per partition, the
  first record written at or after the window's start (a record's timestamp is when the worker
  wrote it, never before its event), and the read stops at the end offsets taken when it began,
  so a report is a snapshot of a window and never waits for new alerts. No consumer group: a
  report moves no sink's cursor. Records that do not parse are counted and logged, not fatal.
  The same id written twice (a finding window re-sent on closing) keeps its highest count.
- Alerts from a file instead (`--alerts FILE`, JSON lines as `kafka-console-consumer` or a sink
  would dump them): reports on an export without a broker.
- Incidents: the incident store the `incidents` sink keeps in Redis (what `gatewatch incidents`
  lists, including alerts older than the window). When the store has none for the window (no
  incident sink running), they are rebuilt in memory from the window's alerts with the same
  builder: the ids are the same either way.
- Recommended limits: the current decisions' `rate_limit` in Redis, for the subjects the window's
  flood alerts name (a lookup per subject, at most `MAX_LIMIT_LOOKUPS`).
"""

from __future__ import annotations

from pathlib import Path

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError
from redis.asyncio import Redis

from pipeline.alerts import Alert
from pipeline.config import Settings
from pipeline.decisions import RedisDecisions
from pipeline.incidents import IncidentBuilder, MemoryIncidentStore, RedisIncidentStore
from pipeline.incidents.model import Incident, alert_count

__all__ = ["alerts_from_file", "alerts_from_kafka", "incidents_for", "rate_limits", "unique"]

log = structlog.get_logger(__name__)
MAX_LIMIT_LOOKUPS = 50


def unique(alerts: list[Alert], since_ms: int, until_ms: int) -> list[Alert]:
    """One record per id (the highest count), event time inside the window."""
    by_id: dict[str, Alert] = {}
    for a in alerts:
        if since_ms <= a.event_time <= until_ms and (
            a.id not in by_id or alert_count(a) > alert_count(by_id[a.id])
        ):
            by_id[a.id] = a
    return sorted(by_id.values(), key=lambda a: (a.event_time, a.id))


def _parse(raw: bytes | str, where: str) -> Alert | None:
    try:
        return Alert.from_json(raw)
    except (ValidationError, ValueError) as exc:
        log.warning("report.bad_alert", where=where, error=str(exc).splitlines()[0])
        return None


def alerts_from_file(path: Path) -> tuple[list[Alert], int]:
    """Alerts in a JSON-lines file; the second value counts lines that were not alerts."""
    alerts, bad = [], 0
    with path.open("rb") as lines:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            alert = _parse(line, f"{path}:{n}")
            if alert is None:
                bad += 1
            else:
                alerts.append(alert)
    return alerts, bad


async def alerts_from_kafka(settings: Settings, since_ms: int) -> tuple[list[Alert], int]:
    """Every alert written to the alerts topic since `since_ms`, up to the end when called."""
    topic = settings.topics.alerts
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka, enable_auto_commit=False, group_id=None,
        request_timeout_ms=int(settings.kafka_timeout_s * 1000),
    )  # fmt: skip
    await consumer.start()
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return [], 0
        consumer.assign(tps)
        starts = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        ends = await consumer.end_offsets(tps)
        pending: set[TopicPartition] = set()
        for tp in tps:
            start = starts.get(tp)
            if start is not None and start.offset < ends[tp]:
                consumer.seek(tp, start.offset)
                pending.add(tp)
        alerts, bad = [], 0
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    alert = _parse(record.value or b"", f"{tp.partition}@{record.offset}")
                    if alert is None:
                        bad += 1
                    else:
                        alerts.append(alert)
                if records and records[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
        return alerts, bad
    finally:
        await consumer.stop()


async def incidents_for(
    alerts: list[Alert], since_ms: int, *, settings: Settings, redis: Redis | None
) -> tuple[list[Incident], str]:
    """The window's incidents and where they came from (`store` or `rebuilt from alerts`)."""
    if redis is not None:
        store = RedisIncidentStore(
            redis, settings.redis_prefix, retention_s=settings.incident_retention_s
        )
        found = await store.recent(since_ms)
        if found:
            return found, "incident store (Redis)"
    memory = MemoryIncidentStore()
    await IncidentBuilder(memory, quiet_s=settings.incident_quiet_s).add(alerts)
    return await memory.recent(since_ms), "rebuilt from the window's alerts"


async def rate_limits(alerts: list[Alert], settings: Settings, redis: Redis) -> dict[str, int]:
    """The recommended requests/s the current decision of each flooding subject carries."""
    subjects = sorted(
        {a.subject for a in alerts if any(r.feature and "per_s" in r.feature for r in a.reasons)}
    )
    decisions = RedisDecisions(redis, settings.redis_prefix)
    out = {}
    for subject in subjects[:MAX_LIMIT_LOOKUPS]:
        decision = await decisions.get(subject)
        if decision is not None and decision.rate_limit is not None:
            out[subject] = decision.rate_limit
    return out
