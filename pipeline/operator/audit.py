"""The audit trail: every override and feedback becomes an `operator` alert on `gatewatch.alerts`.

An operator action and its alert must not part ways (an override nobody can account for, or an
alert for a change that never happened), so the alert is queued in Redis in the same MULTI as
the change itself (`stage`), on an outbox stream `<prefix>audit`. `flush` then publishes the queue
to the alerts topic and removes what Kafka acknowledged. Whoever writes the change flushes at
once; while Kafka is unreachable the alerts wait in Redis and every worker retries within
seconds. Delivery is at least once: two flushers may both publish an alert, with the same id.
"""

from __future__ import annotations

import time
from typing import Any, cast

import structlog
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from pipeline.alerts import Alert, AlertReason, OperatorAction, alert_id, scope_of
from pipeline.config import Mode

__all__ = ["AuditTrail", "operator_alert"]

log = structlog.get_logger(__name__)
BATCH = 500
_ACTION = {
    "override_allow": "allow",
    "override_deny": "block",
    "override_clear": "allow",
    "feedback_false_positive": "allow",
}
_TITLE = {
    "override_allow": "allow-listed",
    "override_deny": "deny-listed",
    "override_clear": "override cleared for",
    "feedback_false_positive": "false positive reported on",
    "feedback_confirmed": "detection confirmed on",
}


def operator_alert(
    action: str,
    subject: str,
    *,
    actor: str,
    reason: str,
    at_ms: int,
    expires_at: int | None = None,
    decided: str | None = None,
    mode: Mode = "enforce",
    score: float = 0.0,
    detector: str = "operator",
    route: str | None = None,
    extra: list[AlertReason] | None = None,
) -> Alert:
    """The alert recording one operator action. `decided` is the action of the decision the
    action is about (a confirmed detection keeps it); overrides are enforced as the operator
    asked, feedback enforces nothing by itself."""
    text = reason or "(no reason given)"
    until = f" until {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime(expires_at / 1000))}" if (
        expires_at
    ) else ""
    return Alert(
        id=alert_id("operator", action, subject, actor, at_ms),
        kind="operator",
        event_time=at_ms,
        emit_time=at_ms,
        subject=subject,
        scope=scope_of(subject),
        route=route,
        action=_ACTION.get(action, decided or "allow"),  # type: ignore[arg-type]
        mode=mode,
        enforced=action.startswith("override_"),
        title=f"{actor}: {_TITLE.get(action, action)} {subject}{until}: {text}"[:300],
        severity="medium" if action == "override_deny" else "info",
        score=score,
        detector=detector,
        reasons=[AlertReason(detector="operator", code=action, text=text, score=score)]
        + (extra or []),
        expires_at=expires_at,
        operator=OperatorAction(action=action, actor=actor, reason=reason, expires_at=expires_at),
    )


class AuditTrail:
    def __init__(self, redis: Redis, *, prefix: str, topic: str) -> None:
        self.redis = redis
        self.outbox = f"{prefix}audit"
        self.topic = topic

    def stage(self, pipe: Pipeline, alerts: list[Alert]) -> None:
        """Queue `alerts` on the caller's MULTI, with the change they record."""
        for alert in alerts:
            pipe.xadd(self.outbox, {"subject": alert.subject, "alert": alert.to_json()})

    async def pending(self) -> int:
        return int(await self.redis.xlen(self.outbox))

    async def flush(self, producer: AIOKafkaProducer) -> int:
        """Publish queued alerts (keyed by subject) until the queue is empty; returns how many.
        Kafka errors propagate, leaving what was not acknowledged queued."""
        sent = 0
        while True:
            entries = cast(list[Any], await self.redis.xrange(self.outbox, count=BATCH))
            if not entries:
                return sent
            futures = []
            for _, fields in entries:
                futures.append(
                    await producer.send(self.topic, fields[b"alert"], key=fields[b"subject"])
                )
            for future in futures:
                await future
            await self.redis.xdel(self.outbox, *[entry_id for entry_id, _ in entries])
            sent += len(entries)
            log.info("audit.published", topic=self.topic, alerts=len(entries))
