"""Property tests: whatever a sender posts, KongParser answers with events and rejects, never an
exception, and every reject says why; its fast path (`parse_records`) gives the same answer."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline import envelopes
from pipeline.ingest.kong import KongParser, ParseResult
from pipeline.ingest.redaction import Redactor
from tests.unit.agreement import FIXED_CLOCK, same_answer
from tests.unit.conftest import KONG_FILES, REDACTION_KEY, kong_entry

PARSER = KongParser(Redactor(REDACTION_KEY), clock=lambda: FIXED_CLOCK)
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no example database: every run starts from the pinned examples
    suppress_health_check=[HealthCheck.too_slow],
)

# Values shaped like what Kong sends (numbers as strings, lists of statuses, -1 latencies) and
# their near misses, next to arbitrary JSON.
KONGISH = st.sampled_from(
    [
        "",
        "-1",
        "200",
        "46",
        "500, 200 : 200",
        "--5",
        "\u00b2",
        "1e3",
        " 7 ",
        "9" * 30,
        "REDACTED",
        "/",
        -1,
        0,
        0.5,
        1e30,
        -1e30,
        2**63,
        [],
        {},
        ["a", "b"],
        True,
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
JSONISH = st.recursive(
    SCALARS | KONGISH,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Paths the parser reads, so mutations hit them far more often than Kong's many ignored keys.
READ_PATHS = [
    ("request",),
    ("response",),
    ("latencies",),
    ("client_ip",),
    ("started_at",),
    ("node",),
    ("upstream_status",),
    ("consumer",),
    ("authenticated_entity",),
    ("service",),
    ("request", "method"),
    ("request", "uri"),
    ("request", "url"),
    ("request", "headers"),
    ("request", "querystring"),
    ("request", "size"),
    ("request", "id"),
    ("request", "tls"),
    ("request", "headers", "apikey"),
    ("request", "headers", "authorization"),
    ("request", "headers", "user-agent"),
    ("request", "querystring", "access_token"),
    ("response", "status"),
    ("response", "size"),
    ("response", "headers"),
    ("response", "headers", "x-kong-request-id"),
    ("latencies", "request"),
    ("latencies", "proxy"),
    ("latencies", "kong"),
    ("consumer", "id"),
    ("service", "name"),
]


def paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path inside nested dicts (lists are left whole)."""
    out = []
    if isinstance(value, dict):
        for key, child in value.items():
            out.append((*prefix, key))
            out.extend(paths(child, (*prefix, key)))
    return out


def mutate(entry: dict[str, Any], path: tuple[str, ...], value: Any, *, drop: bool) -> None:
    """Set (or drop) `path`; a no-op when an earlier mutation replaced a parent by a non-object."""
    parent: Any = entry
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(parent, dict):
        return
    if drop:
        parent.pop(path[-1], None)
    else:
        # A copy: sampled values ({} and [] in KONGISH) are shared between examples, and a later
        # mutation inside one would make it contain itself.
        parent[path[-1]] = copy.deepcopy(value)


@st.composite
def mutated_entries(draw: st.DrawFn) -> dict[str, Any]:
    entry = kong_entry(draw(st.sampled_from(sorted(KONG_FILES))))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(READ_PATHS) | st.sampled_from(paths(entry) or READ_PATHS))
        mutate(entry, path, draw(KONGISH | JSONISH), drop=draw(st.booleans()))
    return entry


def with_changes(version: str, *changes: tuple[tuple[str, ...], Any]) -> dict[str, Any]:
    entry = kong_entry(version)
    for path, value in changes:
        mutate(entry, path, value, drop=False)
    return entry


def check(body: bytes, expected: int) -> ParseResult:
    """`expected` results (events + rejects), each reject with a source, a reason and raw bytes,
    and the same answer from the fast path."""
    result = PARSER.parse_body(body)
    same_answer(PARSER, body)
    assert len(result.events) + len(result.rejects) == expected
    for reject in result.rejects:
        assert reject.source == "kong"
        assert isinstance(reject.reason, str) and reject.reason.strip()
        assert isinstance(reject.raw, bytes)
    return result


def expected_results(doc: Any) -> int:
    """One result (event or reject) per entry: an array is a batch, anything else one entry."""
    return len(doc) if isinstance(doc, list) else 1


@FUZZ
@given(JSONISH)
def test_arbitrary_json_never_raises(doc: Any) -> None:
    check(orjson.dumps(doc), expected_results(doc))


# Crashes found by this property (see test_kong_parser.py), pinned so every run tries them.
@example([with_changes("1.2.1", (("response", "headers"), "text/plain"))], True)
@example([with_changes("1.2.1", (("request", "size"), "--5"))], False)
@example([with_changes("3.8", (("upstream_status",), "\u00b2"))], False)
@example([with_changes("3.8", (("latencies", "request"), "9" * 400))], False)
@FUZZ
@given(st.lists(mutated_entries(), min_size=1, max_size=3), st.booleans())
def test_mutated_kong_entries_never_raise(entries: list[dict[str, Any]], as_array: bool) -> None:
    doc: Any = entries if as_array or len(entries) > 1 else entries[0]
    check(orjson.dumps(doc), len(entries))


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_never_raise(raw: bytes) -> None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        result = check(raw, 1)
        assert result.events == []
        assert result.rejects[0].reason.startswith("malformed JSON")
    else:  # the bytes happened to be JSON ("1", "[]", ...): one result per entry
        check(raw, expected_results(doc))


def parse_or_nothing(entry: dict[str, Any]) -> ParseResult:
    """Parse; a crash counts as no events (crashes are the never_raise property's business)."""
    try:
        return PARSER.parse_body(orjson.dumps(entry))
    except Exception:
        return ParseResult()


@example(with_changes("3.8", (("started_at",), 1e30)))
@FUZZ
@given(mutated_entries())
def test_accepted_events_always_fit_an_envelope(entry: dict[str, Any]) -> None:
    """What the parser accepts, the collector must be able to ship: msgpack and back."""
    events = parse_or_nothing(entry).events
    decoded = envelopes.decode(envelopes.encode(events))
    assert [e.model_dump() for e in decoded] == [e.model_dump() for e in events]
    records = PARSER.parse_records(orjson.dumps(entry)).records
    assert [e.model_dump() for e in envelopes.decode(envelopes.encode_records(records))] == [
        e.model_dump() for e in events
    ]


def test_empty_array_is_an_empty_result() -> None:
    """An empty batch is nothing to accept and nothing to reject (the only body giving neither)."""
    result = PARSER.parse_body(b"[]")
    assert (result.events, result.rejects) == ([], [])
