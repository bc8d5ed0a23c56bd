"""`POST /v1/feedback` on the decision API: the CLI's `gatewatch feedback`, over HTTP.

Callers authenticate with a bearer token from `GATEWATCH_OPERATOR_TOKENS` (`{name: token}`); the
name is the actor in the audit trail, so each person or tool gets its own token. The decision
API's read token is not enough (403). The audit alerts are published by a background task that
retries while Kafka is unreachable (they wait in Redis meanwhile), so an answer never waits on
Kafka.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal

import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from pipeline.config import Settings
from pipeline.operator.actions import ROUTE_PATTERN, OperatorActions, OperatorError
from pipeline.operator.audit import AuditTrail

__all__ = ["AuditPublisher", "FeedbackRequest", "OperatorApi", "operator_api"]

log = structlog.get_logger(__name__)
MAX_BODY = 16 * 1024
MAX_TTL_S = 365 * 86400
RETRY_S = 5.0


class FeedbackRequest(BaseModel):
    """The body, exactly as `openapi.yaml` has it (strict: a number sent as a string is refused
    rather than read as one)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    subject: str = Field(max_length=300)
    verdict: Literal["false_positive", "confirmed"]
    reason: str = Field(min_length=1, max_length=1000)
    ttl_s: float | None = Field(None, gt=0, le=MAX_TTL_S)
    detector: str | None = Field(None, max_length=64)
    route: str | None = Field(None, pattern=ROUTE_PATTERN)


class AuditPublisher:
    """Publishes queued audit alerts in the background: woken after each action, retried every
    few seconds while anything is left."""

    def __init__(self, audit: AuditTrail, producer_factory: Callable[[], AIOKafkaProducer]):
        self.audit = audit
        self.producer_factory = producer_factory
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None

    def kick(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        self._wake.set()  # alerts left over from before a restart
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), RETRY_S)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if await self.audit.pending() == 0:
                    continue
                if self._producer is None:
                    producer = self.producer_factory()
                    await producer.start()
                    self._producer = producer
                await self.audit.flush(self._producer)
            except Exception as exc:  # Kafka or Redis away: the queue waits, try again later
                log.warning("audit.publish_failed", error=repr(exc))
                await self.close()

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception as exc:
                log.warning("audit.producer_stop_failed", error=repr(exc))


class OperatorApi:
    def __init__(
        self,
        actions: OperatorActions,
        *,
        tokens: Mapping[str, str],
        read_token: str,
        publisher: AuditPublisher | None,
        default_ttl_s: float | None,
    ) -> None:
        self.actions = actions
        self.tokens = [(name, f"Bearer {t}".encode()) for name, t in tokens.items() if t]
        self.read_token = f"Bearer {read_token}".encode() if read_token else b""
        self.publisher = publisher
        self.default_ttl_s = default_ttl_s

    def install(self, app: web.Application) -> None:
        app.router.add_post("/v1/feedback", self.feedback)
        if self.publisher is not None:
            app.cleanup_ctx.append(self._background)

    async def _background(self, _: web.Application) -> AsyncIterator[None]:
        assert self.publisher is not None
        task = asyncio.create_task(self.publisher.run())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self.publisher.close()

    def _actor(self, request: web.Request) -> str | None:
        given = request.headers.get("Authorization", "").encode()
        actor = None
        for name, expected in self.tokens:  # compare with every token: no timing hint
            if hmac.compare_digest(given, expected):
                actor = name
        return actor

    async def feedback(self, request: web.Request) -> web.Response:
        actor = self._actor(request)
        if actor is None:
            given = request.headers.get("Authorization", "").encode()
            if self.read_token and hmac.compare_digest(given, self.read_token):
                return _error(403, "this token may read decisions only; feedback needs an "
                              "operator token (GATEWATCH_OPERATOR_TOKENS)")  # fmt: skip
            return _error(401, "missing or wrong operator bearer token")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _error(413, f"body over {MAX_BODY} bytes")
        try:
            body = await request.content.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                return _error(413, f"body over {MAX_BODY} bytes")
            ask = FeedbackRequest.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return _error(400, f"invalid feedback: {where}: {first['msg']}")
        try:
            result = await self.actions.feedback(
                ask.subject, ask.verdict,
                actor=actor, reason=ask.reason,
                ttl_s=ask.ttl_s if ask.ttl_s is not None else self.default_ttl_s,
                detector=ask.detector, route=ask.route,
            )  # fmt: skip
        except OperatorError as exc:
            return _error(400, str(exc))
        except RedisError as exc:
            log.warning("feedback_api.redis_unavailable", error=str(exc))
            return _error(503, "decision store unavailable: nothing was changed")
        if self.publisher is not None:
            self.publisher.kick()
        log.info("feedback.received", subject=result.subject, verdict=result.verdict, actor=actor)
        return web.json_response(result.as_dict())


def _error(status: int, message: str) -> web.Response:
    data: dict[str, Any] = {"error": message}
    return web.json_response(data, status=status)


def operator_api(actions: OperatorActions, settings: Settings) -> OperatorApi:
    """The feedback endpoint as settings configure it (tokens, default TTL, Kafka for audit)."""
    from pipeline.kafka import make_producer

    return OperatorApi(
        actions,
        tokens={k: v.get_secret_value() for k, v in settings.operator_tokens.items()},
        read_token=settings.decision_api_token.get_secret_value(),
        publisher=AuditPublisher(actions.audit, lambda: make_producer(settings)),
        default_ttl_s=settings.override_ttl_s or None,
    )
