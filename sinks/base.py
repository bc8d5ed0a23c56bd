"""The one Protocol every sink keeps, and what a delivery attempt can answer.

A sink takes a batch of alerts and says, per alert, whether it was delivered, must be retried
later (the receiver is busy, down or rate-limiting) or can never be delivered (the receiver refused
it as malformed: it is dead-lettered with the reason and counted, so it never stalls the ones
behind it). The runner (`sinks/runner.py`) owns batching, backoff, the durable cursor and the dead
letters; a sink only formats and sends.

A sink module exposes `build(settings: Settings) -> Sink`, registered by name in
`sinks/registry.py`; its settings are `GATEWATCH_SINK_<NAME>_*` (`pipeline/config.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.alerts import Alert

__all__ = ["Delivery", "Sink", "SinkConfigError"]


class SinkConfigError(ValueError):
    """A sink's settings are missing or wrong: `gatewatch sink` prints the message and stops."""


@dataclass(slots=True)
class Delivery:
    """The outcome of one `send`: ids retried later and ids refused for good (with why)."""

    retry: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    # Why the ids in `retry` are retried (HTTP 503, connection refused): logged by the runner.
    retry_reason: str = ""
    # Seconds the receiver asked to wait before the retry (an HTTP Retry-After), if it did.
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return not self.retry and not self.rejected

    @classmethod
    def retry_all(
        cls, alerts: Iterable[Alert], reason: str, *, after: float | None = None
    ) -> Delivery:
        """Every alert of the batch is to be sent again (the receiver is down or busy)."""
        return cls(retry=[a.id for a in alerts], retry_reason=reason, retry_after=after)


class Sink(Protocol):
    name: str

    async def start(self) -> None: ...

    async def send(self, alerts: list[Alert]) -> Delivery:
        """Deliver `alerts`; every id not in `retry` or `rejected` counts as delivered (an id in
        both is retried). Raise `OSError` (or return every id in `retry`) when the receiver cannot
        be reached. With GATEWATCH_SINK_MAX_IN_FLIGHT above 1 the runner calls `send` for several
        batches at once."""
        ...

    async def close(self) -> None: ...
