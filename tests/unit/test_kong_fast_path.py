"""The collector's Kong fast path: msgspec-decoded entries built into event field dicts.

What it must hold: for every body, `parse_records` answers exactly what the reference
`parse_body` answers (events field for field, rejects reason for reason), and Kong's ordinary
shapes really take the fast path. `test_parser_fuzz.py` and `test_parser_mutations.py` hold the two
against each other on malformed input; here they meet on what Kong actually sends.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.demo.traffic import TrafficModel
from pipeline.ingest import kong_wire
from pipeline.ingest.kong import KongParser
from pipeline.ingest.normalize import route_template
from pipeline.ingest.redaction import Redactor, _mask_all
from tests.unit.agreement import FIXED_CLOCK, same_answer
from tests.unit.conftest import KONG_FILES, REDACTION_KEY, body, kong_bytes, kong_entry

PARSER = KongParser(Redactor(REDACTION_KEY), clock=lambda: FIXED_CLOCK)
PROPERTY = settings(max_examples=300, deadline=None, database=None)


def fast(raw: bytes) -> list[dict[str, Any]]:
    """The records of a body that must take the fast path (and agree with the reference)."""
    result = same_answer(PARSER, raw)
    assert result.fast, raw[:300]
    return result.records


def reference_only(raw: bytes) -> None:
    """A body the fast path must leave to the reference (which then answers for both)."""
    result = same_answer(PARSER, raw)
    assert not result.fast, raw[:300]


# --- what Kong sends takes the fast path ------------------------------------------------------


@pytest.mark.parametrize("version", sorted(KONG_FILES))
def test_every_fixture_takes_the_fast_path(version: str) -> None:
    [record] = fast(kong_bytes(version))
    assert record["gateway"] == "kong"


def test_a_batch_of_all_fixtures_takes_the_fast_path() -> None:
    records = fast(body(*(kong_entry(v) for v in sorted(KONG_FILES))))
    assert len(records) == len(KONG_FILES)


def test_simulated_traffic_takes_the_fast_path() -> None:
    model = TrafficModel(seed=3, consumers=50, browsers=80, nats=2)
    entries = model.tick(1_700_000_000_000, 2.0)
    assert len(entries) > 100
    records = fast(orjson.dumps(entries))
    assert len(records) == len(entries)
    assert {r["route"] for r in records} >= {"/v1/products/{id}", "/v1/orders/{id}"}


def test_custom_fields_become_attributes_on_the_fast_path() -> None:
    entry = kong_entry("3.8") | {
        "node": "kong-dp-1",
        "credential_id": "cred-42",
        "tenant": "acme",
        "shard": 7,
        "ratio": 0.5,
        "canary": True,
        "nothing": None,
        "nested": {"a": [1, 2], "b": "x"},
        "long": "y" * 400,
    }
    [record] = fast(body(entry))
    assert record["node"] == "kong-dp-1"
    assert record["credential"] == PARSER.redactor.fingerprint("kong-credential:cred-42")
    assert record["attributes"] == {
        "node": "kong-dp-1",
        "credential_id": "cred-42",
        "tenant": "acme",
        "shard": 7,
        "ratio": 0.5,
        "canary": True,
        "nothing": None,
        "nested": '{"a":[1,2],"b":"x"}',
        "long": "y" * 256,
    }


def test_only_node_and_credential_id_need_no_second_pass() -> None:
    [record] = fast(body(kong_entry("3.9") | {"node": None, "credential_id": "c"}))
    assert record["attributes"] == {"node": None, "credential_id": "c"}
    assert record["node"] is None


def test_secrets_and_pii_are_handled_on_the_fast_path() -> None:
    entry = kong_entry("3.8")
    entry["request"]["uri"] = "/users/bob@example.com/cards/4111-1111-1111-1111/ssn/078-05-1120"
    entry["request"]["querystring"] = {
        "access_token": "tok-secret",
        "email": "alice%40example.org",
        "flag": True,
        "tags": ["a", "b"],
    }
    entry["request"]["headers"]["referer"] = "https://shop.example/u/carol@example.net?token=t"
    [record] = fast(body(entry))
    assert record["path"] == "/users/[email]/cards/[card]/ssn/[ssn]"
    assert record["route"] == "/users/[email]/cards/[card]/ssn/[ssn]"
    assert record["pii"] == ["email", "card", "ssn"]
    assert record["query"]["access_token"].startswith("hmac:")
    assert record["query"]["email"] == "[email]"
    assert (record["query"]["flag"], record["query"]["tags"]) == ("", "a")
    assert record["headers"]["referer"] == "https://shop.example/u/[email]"
    assert record["credential"] == PARSER.redactor.fingerprint("tok-secret")
    assert b"tok-secret" not in orjson.dumps(record)


# --- anything unusual is left to the reference ----------------------------------------------


def _with(version: str, path: tuple[str, ...], value: Any) -> dict[str, Any]:
    entry = kong_entry(version)
    parent = entry
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return entry


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("request", "new_kong_field"), "x"),  # an unknown key inside request
        (("response", "status"), 200.0),
        (("response", "status"), None),
        (("request", "size"), 1.5),
        (("request", "method"), ""),
        (("request", "method"), 7),
        (("client_ip",), ""),
        (("started_at",), "1726783839538"),
        (("started_at",), 2**63),
        (("node",), 12),
        (("consumer",), "not an object"),
        (("request", "headers"), []),
        (("request", "headers", "user-agent"), 5),
        (("request", "querystring"), "page=2"),
        (("latencies", "request"), 2**64 - 1),
    ],
)
def test_unusual_shapes_get_the_reference_answer(path: tuple[str, ...], value: Any) -> None:
    reference_only(body(_with("3.8", path, value)))


def test_one_bad_entry_sends_the_whole_batch_to_the_reference() -> None:
    good, bad = kong_entry("3.8"), _with("3.9", ("request", "method"), None)
    result = same_answer(PARSER, body(good, bad, good))
    assert not result.fast
    assert len(result.records) == 2 and len(result.rejects) == 1


def test_more_custom_fields_than_kept_are_left_to_the_reference() -> None:
    entry = kong_entry("3.8") | {f"custom_{i}": i for i in range(40)}
    reference_only(body(entry))


@pytest.mark.parametrize(
    "raw",
    [
        # JSON that orjson refuses in a field nobody reads: the reference rejects the whole body,
        # so the fast path must not accept it either.
        kong_bytes("3.8").replace(b'"route": {', b'"route": {"x": 1e400, ', 1),
        kong_bytes("3.8").replace(b'"route": {', b'"route": {"x": "\\ud800", ', 1),
        kong_bytes("3.8")[:-2] + b', "extra": "\xff\xfe"}',
        kong_bytes("3.8")[:-2] + b', "extra": 1e400}',
        # An integer beyond 64 bits where the parser reads a number: orjson reads it as a float
        # (which the reference refuses), msgspec as an int.
        json.dumps(_with("3.8", ("request", "size"), 2**64 + 5)).encode(),
        json.dumps(_with("3.8", ("consumer",), {"id": 2**64 + 5})).encode(),
        json.dumps(_with("3.8", ("request", "headers", "user-agent"), 2**64 + 5)).encode(),
        b"\xef\xbb\xbf" + kong_bytes("3.8"),  # a byte order mark
        b"[" + kong_bytes("3.8") + b", 1]",
        b"",
        b"null",
        b"[[]]",
    ],
)
def test_bytes_orjson_and_msgspec_read_differently_get_the_reference_answer(raw: bytes) -> None:
    reference_only(raw)


def test_custom_fields_are_read_by_orjson_as_the_reference_reads_them() -> None:
    # 2**64 + 5 is a float to orjson: the same float in both answers.
    [record] = fast(kong_bytes("3.8")[:-2] + b', "extra": 18446744073709551621}')
    assert record["attributes"] == {"extra": 1.8446744073709552e19}


def test_empty_batch_is_empty_on_both_paths() -> None:
    result = same_answer(PARSER, b"[]")
    assert (result.records, result.rejects) == ([], [])


def test_duplicate_keys_keep_the_last_value_on_both_paths() -> None:
    raw = kong_bytes("3.8")[:-2] + b', "client_ip": "192.0.2.99", "client_ip": "192.0.2.77"}'
    [record] = fast(raw)
    assert record["client_ip"] == "192.0.2.77"


def test_the_struct_knows_every_key_the_parser_maps_or_drops() -> None:
    fields = set(kong_wire.KongEntry.__struct_fields__)
    assert fields == kong_wire.KNOWN_KEYS | kong_wire.READ_EXTRAS


# --- Kong-shaped variations: always the fast path, always the reference's answer --------------

TEXT = st.lists(
    st.sampled_from([*"aZ09-_. /@%?&=+", "%40", "\u00e9", "\u0661", "\u00b2", "\n", "bob@ex.io"]),
    max_size=12,
).map("".join)
DIGITS = st.text(alphabet="0123456789- ", min_size=1, max_size=24)
HEADER_VALUE = TEXT | st.lists(TEXT, max_size=3)
QUERY_VALUE = TEXT | DIGITS | st.just(True) | st.lists(TEXT | st.just(True), max_size=3)
SIZE = st.integers(0, 10**9) | st.integers(0, 10**9).map(str)
CUSTOM = st.dictionaries(
    st.sampled_from(["node", "credential_id", "tenant", "zone", "trace"]),
    st.none()
    | TEXT
    | st.integers(-(2**63) + 1, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False),
    max_size=4,
).filter(lambda d: all(isinstance(d.get(k), str | None) for k in ("node", "credential_id")))


@st.composite
def kong_like(draw: st.DrawFn) -> dict[str, Any]:
    entry = kong_entry(draw(st.sampled_from(sorted(KONG_FILES))))
    request, response = entry["request"], entry["response"]
    segments = draw(
        st.lists(TEXT.filter(lambda s: "/" not in s and "?" not in s) | DIGITS, max_size=5)
    )
    uri = "/" + "/".join(segments)
    request["uri"] = draw(st.sampled_from([uri, "https://h.example" + uri, uri + "?x=1"]))
    request["querystring"] = draw(
        st.dictionaries(
            st.sampled_from(["q", "page", "api_key", "token", "email", "id", "flag"]),
            QUERY_VALUE,
            max_size=4,
        )
    )
    for name in (
        "user-agent",
        "referer",
        "accept-language",
        "sec-fetch-mode",
        "apikey",
        "authorization",
        "origin",
    ):
        if draw(st.booleans()):
            request["headers"][name] = draw(HEADER_VALUE)
        else:
            request["headers"].pop(name, None)
    request["size"], response["size"] = draw(SIZE), draw(SIZE)
    response["status"] = draw(st.sampled_from([200, 201, 401, 404, 429, 502, "200"]))
    entry["upstream_status"] = draw(st.sampled_from(["", "200", "502, 200 : 200", None, 200]))
    entry["latencies"]["proxy"] = draw(st.sampled_from([-1, 0, 12, "-1", None]))
    for key in ("route", "service", "consumer", "tries", "started_at", "authenticated_entity"):
        if draw(st.booleans()):
            entry.pop(key, None)
    if draw(st.booleans()):
        request.pop("id", None)
    entry.update(draw(CUSTOM))
    return entry


@PROPERTY
@given(st.lists(kong_like(), min_size=1, max_size=3), st.booleans())
def test_kong_shaped_entries_take_the_fast_path_and_agree(
    entries: list[dict[str, Any]], as_array: bool
) -> None:
    doc: Any = entries if as_array or len(entries) > 1 else entries[0]
    # The stdlib's JSON too: Kong's cjson escapes differently from orjson.
    for raw in (orjson.dumps(doc), json.dumps(doc).encode()):
        assert len(fast(raw)) == len(entries)


# --- the pieces the fast path relies on -----------------------------------------------------

PATHISH = st.text(
    alphabet=st.sampled_from([*"0123456789abcdefABCDEF-/ @.%4x", "\u0661", "\u00b2", "\n"]),
    max_size=60,
)


@PROPERTY
@given(PATHISH | DIGITS)
def test_segment_by_segment_masking_is_whole_path_masking(text: str) -> None:
    parser = KongParser(Redactor(REDACTION_KEY))
    masked, kinds = Redactor.mask_pii(text)
    for _ in range(2):  # the second time from the caches
        assert parser._path(text) == (masked, tuple(kinds), route_template(masked))


@pytest.mark.parametrize(
    "text",
    [
        "/cards/4111111111111111/x",
        "/a/4111 1111 1111 1111",
        "/4111-1111/1111-1111",  # a card split by "/" is no card
        "/ssn/078-05-1120/",
        "/u/bob@example.com/u/al%40ex.org",
        "/\u0661\u0662\u0663/123\n",
        "/9f1b6c1e-3a2b-4c5d-9e6f-0a1b2c3d4e5f/0123456789abcdef",
        "",
        "/",
        "//",
    ],
)
def test_segment_by_segment_masking_examples(text: str) -> None:
    masked, kinds = Redactor.mask_pii(text)
    assert PARSER._path(text) == (masked, tuple(kinds), route_template(masked))


@PROPERTY
@given(PATHISH | DIGITS | st.text(max_size=40))
def test_the_pii_hint_never_skips_pii(text: str) -> None:
    assert Redactor.mask_pii(text) == _mask_all(text)


def test_decode_reports_custom_fields_as_orjson_reads_them() -> None:
    raw = body(kong_entry("3.8") | {"tenant": "acme", "n": 1.5})
    decoded = kong_wire.decode(raw)
    assert decoded is not None
    entries, extras = decoded
    assert isinstance(entries[0], kong_wire.KongEntry)
    assert extras == [{"tenant": "acme", "n": 1.5}]


def test_decode_refuses_what_it_cannot_type() -> None:
    assert kong_wire.decode(b'{"request": {}, "response": {"size": 1.5}}') is None
    assert kong_wire.decode(b'{"request": {}}') is None  # no response
    with pytest.raises(msgspec.ValidationError):  # what decode relies on to find custom fields
        msgspec.json.decode(b'{"request": {}, "response": {}, "x": 1}', type=kong_wire.KongEntry)
