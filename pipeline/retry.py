"""Retry until done: for writes that must not be skipped (Kafka or Redis briefly away), where
holding the caller back is the backpressure we want."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

__all__ = ["until_done"]

log = structlog.get_logger(__name__)


async def until_done(
    operation: Callable[[], Awaitable[None]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    event: str,
    max_backoff_s: float = 5.0,
    on_retry: Callable[[BaseException], None] | None = None,
) -> None:
    """Await `operation` until it succeeds, backing off exponentially (0.1 s up to
    `max_backoff_s`) after each `retry_on` failure, logged as `event`; anything else propagates.
    """
    delay = min(0.1, max_backoff_s)
    while True:
        try:
            await operation()
            return
        except retry_on as exc:
            if on_retry is not None:
                on_retry(exc)
            log.warning(event, error=str(exc) or type(exc).__name__, retry_in_s=delay)
            await asyncio.sleep(delay)  # backoff pacing, not synchronisation
            delay = min(delay * 2, max_backoff_s)
