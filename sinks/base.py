"""The one Protocol every sink keeps, and what a delivery attempt can answer.

A sink takes a batch of alerts and says, per alert, whether it was delivered, must be retried
later (the receiver is busy, down or rate-limiting) or can never be delivered (the receiver refused
it as malformed: it is dead-lettered with the reason and counted, so it never stalls the ones
behind it). The runner (`sinks/runner.py`) owns batching, backoff, the durable cursor and the dead
letters; a sink only formats and sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pipeline.alerts import Alert

__all__ = ["Delivery", "Sink"]


@dataclass(slots=True)
class Delivery:
    """The outcome of one `send`: ids retried later and ids refused for good (with why)."""

    retry: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    # A reason for retrying the whole batch (HTTP 503, connection refused) when no id is named.
    retry_reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.retry and not self.rejected


class Sink(Protocol):
    name: str

    async def start(self) -> None: ...

    async def send(self, alerts: list[Alert]) -> Delivery:
        """Deliver `alerts`; every id not in `retry` or `rejected` counts as delivered.
        Raise `OSError` (or return every id in `retry`) when the receiver cannot be reached."""
        ...

    async def close(self) -> None: ...
