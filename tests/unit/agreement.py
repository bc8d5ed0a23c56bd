"""The Kong fast path (`parse_records`) held against the reference (`parse_body`): for one body,
the same events field for field and type for type, the same rejects, and every fast record a
valid `GatewayEvent` that validation leaves unchanged."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from pipeline.events import GatewayEvent
from pipeline.ingest.kong import KongParser, RecordResult

_EVENTS = TypeAdapter(list[GatewayEvent])
FIXED_CLOCK = 1_700_000_000.5  # entries without started_at get this time in both paths


def typed(value: Any) -> Any:
    """`value` with every scalar paired with its type: 200 and 200.0, 1 and True differ."""
    if isinstance(value, dict):
        return {key: typed(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def same_answer(parser: KongParser, body: bytes) -> RecordResult:
    """Both answers for `body`, asserted equal; returns the fast path's."""
    reference = parser.parse_body(body)
    fast = parser.parse_records(body)
    assert typed(fast.records) == typed([vars(e) for e in reference.events]), body[:300]
    assert [(r.source, r.reason, r.raw) for r in fast.rejects] == [
        (r.source, r.reason, r.raw) for r in reference.rejects
    ], body[:300]
    if fast.fast:
        assert not fast.rejects  # the fast path only answers bodies without a bad entry
        validated = [e.model_dump() for e in _EVENTS.validate_python(fast.records)]
        assert typed(validated) == typed(fast.records)
        for record in fast.records:
            assert list(record) == list(GatewayEvent.model_fields)
    return fast
