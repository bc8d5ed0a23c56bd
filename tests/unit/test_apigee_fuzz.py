"""Property tests: whatever a MessageLogging payload holds, ApigeeParser answers with events and
rejects, never an exception; every reject names the field; what it accepts fits an envelope.

Inputs fed here: 2,000 arbitrary JSON documents + 1,000 x 30 mutated records + 4,000 random byte
strings + 2,000 x 5 records through envelopes = 46,000 (with test_syslog_fuzz.py's 86,000: 132,000).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline import envelopes
from pipeline.ingest.apigee import CONTEXT, MAPPED, ApigeeParser
from pipeline.ingest.kong import ParseResult
from pipeline.ingest.redaction import Redactor
from tests.unit.conftest import REDACTION_KEY

PARSER = ApigeeParser(Redactor(REDACTION_KEY))
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "apigee"
RECORDS = [
    json.loads((FIXTURES / name).read_text())
    for name in ("messagelogging-200.json", "messagelogging-401-invalid-key.json")
]
SECRETS = [RECORDS[0]["client_id"], "eyJhbGciOiJIUzI1NiJ9", "jane.doe@example.com"]
REASON = re.compile(r"^[A-Za-z_][\w.\-]*: \S")
MUTATIONS_PER_EXAMPLE = 30


def budget(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# What Apigee's variables look like, and their near misses.
APIGEEISH: list[Any] = [
    "",
    " ",
    "200",
    " 200 ",
    "abc",
    "-1",
    "0",
    "1700000000000",
    "9" * 30,
    "\u00b2",
    "1e3",
    "[Host, Accept]",
    "[]",
    "192.0.2.1",
    "::1",
    "2001:db8::1, 10.0.0.1",
    "GET",
    "M-SEARCH",
    "GET /",
    "/v1/users/1?apikey=x",
    "a=1&apikey=s&email=a%40b.co&%zz",
    "https://x.example/y?token=t",
    "bob@example.com",
    "4111 1111 1111 1111",
    1700000000000,
    200,
    -5,
    2**63,
    2**64 - 1,
    -(2**63),
    0.5,
    1e300,
    True,
    False,
    None,
    [],
    {},
    ["a"],
    {"a": 1},
]
KEYS = [
    *sorted(MAPPED | set(CONTEXT)),
    "request.header.x-api-key",
    "request.header.Authorization",
    "request.header.content-length",
    "custom.thing",
    "",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
JSONISH = st.recursive(
    SCALARS | st.sampled_from(APIGEEISH),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=16,
)


def check(result: ParseResult, expected: int) -> None:
    assert len(result.events) + len(result.rejects) == expected
    for reject in result.rejects:
        assert reject.source == "apigee"
        assert REASON.match(reject.reason), reject.reason
        assert isinstance(reject.raw, bytes)


def entries(doc: Any) -> int:
    return len(doc) if isinstance(doc, list) else 1


@budget(2_000)
@given(JSONISH)
def test_arbitrary_json_never_raises(doc: Any) -> None:
    check(PARSER.parse_payload(orjson.dumps(doc)), entries(doc))


def mutate(rnd: random.Random) -> dict[str, Any]:
    record = dict(rnd.choice(RECORDS))
    for _ in range(rnd.randint(1, 5)):
        key = rnd.choice(KEYS) if rnd.random() < 0.8 else rnd.choice(list(record) or KEYS)
        if rnd.random() < 0.25:
            record.pop(key, None)
        else:
            record[key] = rnd.choice(APIGEEISH)
    return record


@example(0)
@budget(1_000)
@given(st.integers(0, 2**32 - 1))
def test_mutated_records_never_raise(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(MUTATIONS_PER_EXAMPLE):
        record = mutate(rnd)
        result = PARSER.parse_payload(orjson.dumps(record))
        try:
            check(result, 1)
            for event in result.events:
                dumped = event.model_dump_json()
                assert not any(secret in dumped for secret in SECRETS)
            for reject in result.rejects:
                assert not any(secret.encode() in reject.raw for secret in SECRETS)
        except AssertionError as exc:
            raise AssertionError(f"record {record!r}") from exc


@budget(4_000)
@given(st.binary(max_size=512))
def test_random_bytes_never_raise(raw: bytes) -> None:
    result = PARSER.parse_payload(raw)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        check(result, 1)
        assert result.rejects[0].reason.startswith(("payload: malformed JSON", "payload: empty"))
    else:
        check(result, entries(doc))


@budget(2_000)
@given(st.integers(0, 2**32 - 1))
def test_accepted_events_always_fit_an_envelope(seed: int) -> None:
    """What the parser accepts, the receiver must be able to ship (else it would retry forever)."""
    rnd = random.Random(seed)
    events = [e for _ in range(5) for e in PARSER.parse_payload(orjson.dumps(mutate(rnd))).events]
    decoded = envelopes.decode(envelopes.encode(events))
    assert [e.model_dump() for e in decoded] == [e.model_dump() for e in events]
